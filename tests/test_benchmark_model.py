import json

import pytest

from benchmarks.cost_table import (
    CRT_TOKEN,
    SIDE_MODELS,
    flop_breakdown,
    side_by_side,
    table1_flops,
)
from benchmarks.model import DEFAULTS, PLOT, SMOKE, run
from crt_video.models import build_model
from crt_video.utils.flops import count_flops

pytestmark = pytest.mark.slow


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

    # The side-by-side table follows the first one, with a row per model and S.
    side_markdown = markdown[markdown.index("## Cost side by side") :]
    assert markdown.index("## Cost side by side") > markdown.index(f"]({PLOT})")
    for label in SIDE_MODELS:
        assert f"| {label} |" in side_markdown
    rows = figures["side_by_side"]["rows"]
    assert {row["model"] for row in rows} == set(SIDE_MODELS)
    assert [row["S"] for row in rows if row["model"] == "crt"] == list(SMOKE["side_segment_lens"])
    assert len(rows) == 5 * len(SMOKE["side_segment_lens"]) + 1  # full: one row (n = T)
    for row in rows:
        assert len(row["flops"]) == len(SMOKE["side_lengths"]) and min(row["flops"]) > 0
        streams = row["model"] in ("crt", CRT_TOKEN, "xl", "gru")
        assert (row["step_seconds"] is not None and row["step_seconds"] > 0) == streams
    assert "not in table 1: 12 d² per frame" in side_markdown
    assert "(CRT's; the variant has none)" in side_markdown
    # Wherever crt is not below xl (depth 1 here), the notes say why, from the counts.
    notes = " ".join(figures["side_by_side"]["notes"])
    assert "crt against xl" in notes
    for S in SMOKE["side_segment_lens"]:
        crt, xl = ([r for r in rows if r["model"] == m and r["S"] == S][0] for m in ("crt", "xl"))
        if crt["flops"][-1] >= xl["flops"][-1]:
            assert f"at S={S} crt counts" in notes


def test_table1_formulas_match_hand_computed_values():
    T, n, d, L = 8, 4, 3, 2  # two segments of four frames
    # Transformer: L(20 n d^2 + 6 n^2 d) = 2 (720 + 288) per segment.
    assert table1_flops("transformer", T, n, d, L) == 2 * 2016
    assert table1_flops("segment", T, n, d, L) == 2 * 2016
    # full: one segment of T = 8: 2 (20*8*9 + 6*64*3), whatever n says.
    assert table1_flops("full", T, n, d, L) == 5184
    # Transformer-XL: L(28 n d^2 + 12 n^2 d + 6 n^2) = 2 (1008 + 576 + 96) per segment.
    assert table1_flops("xl", T, n, d, L) == 2 * 3360
    # CRT with GRU: n d^2 (12 L + 12) + 8 L n^2 d = 36 * 36 + 768 per segment.
    assert table1_flops("crt", T, n, d, L) == 2 * 2064
    # GRU, not in table 1: 12 d^2 per frame and layer.
    assert table1_flops("gru", T, n, d, L) == 12 * 9 * 8 * L
    with pytest.raises(ValueError, match="no table-1 formula"):
        table1_flops("meanpool", T, n, d, L)


def test_flop_breakdown_total_is_count_flops():
    cfg = {"type": "crt", "d_model": 16, "depth": 2, "heads": 2, "segment_len": 4}
    model = build_model({**cfg, "dropout": 0.0}, 8, 3, frame_rate=4.0)
    total, per_module = flop_breakdown(model, 12, 8)
    assert total == count_flops(model, 12, 8)
    # A GRU cell: 6 d^2 multiply-adds per step, two RNNs (positions, memory) per frame.
    for name in ("positions", "cell"):
        assert per_module[name]["linear"] == 12 * 16 * 16 * 12


def test_side_by_side_state_and_flops_of_crt_against_xl():
    # Three layers: XL's per-layer extra then outweighs CRT's two per-frame RNNs (with one or
    # two layers and short segments it need not; the smoke test checks the notes say so).
    d, L, segment_lens = 16, 3, (8, 16)
    settings = {
        **DEFAULTS,
        **SMOKE,
        "depth": L,
        "side_lengths": (32,),
        "side_segment_lens": segment_lens,
        "step_repeats": 1,
    }
    result = side_by_side(settings)
    rows = result["figures"]["rows"]
    for S in segment_lens:
        crt, xl = ([r for r in rows if r["model"] == m and r["S"] == S][0] for m in ("crt", "xl"))
        # CRT: the one d-vector memory, all its memory head reads.
        assert crt["state_numbers"] == d
        # XL: L x S x d cached layer inputs plus its mask, output sum and frame count.
        assert xl["state_numbers"] == L * S * d + (S + d + 1)
        assert 10 * crt["state_numbers"] < xl["state_numbers"]
        assert crt["flops"][-1] < xl["flops"][-1]
    notes = " ".join(result["figures"]["notes"])
    assert f"fewer FLOPs at S = {', '.join(map(str, segment_lens))}." in notes
