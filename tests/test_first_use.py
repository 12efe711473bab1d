"""A demo config's data: made once where the config points, checked every time."""

from crt_video.data.first_use import generate_on_first_use


def test_data_is_made_once_and_checked_every_time(tmp_path):
    target, calls = tmp_path / "demo", []

    def make():
        calls.append("make")
        target.mkdir()

    for _ in range(2):
        generate_on_first_use(target, make, lambda: calls.append("check"), "the demo")
    assert calls == ["make", "check", "check"]
