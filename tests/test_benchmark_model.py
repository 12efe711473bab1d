import json

from crt_video.benchmark.model import PLOT, run


def test_smoke_run_reports_a_table_and_a_plot(tmp_path):
    result = run(tmp_path, smoke=True)
    markdown = result["markdown"]
    assert "| T | model | GFLOPs" in markdown
    assert "| crt S=8 |" in markdown and "| full |" in markdown
    assert f"]({PLOT})" in markdown
    assert sorted(p.name for p in tmp_path.iterdir()) == [PLOT]
    figures = json.loads(json.dumps(result["figures"]))
    crt, full = figures["results"]["crt S=8"], figures["results"]["full"]
    assert all(f > 0 for f in crt["flops"] + full["flops"])
    for mode in ("train", "infer"):
        assert all(s > 0 for s in crt[f"{mode}_seconds"] + full[f"{mode}_seconds"])
