"""The serve benchmark's checks (each figure, its target and whether it is met) and its report."""

from __future__ import annotations

from benchmarks.serve_phases import LATENCY_SLACK, MAX_SKIPPED, MIN_PACE, RECONNECT_SLACK

OF_BOUND = 0.8  # capacity over the encoder-alone bound
OVER_PEER = 2.0  # service cameras over peer cameras
OVERLOAD_SLACK = 2.0  # overload p95 latency at most a segment + this
SKIP_SPREAD = 1.5  # most over fewest frames skipped per camera under overload
RATE_CHANGE = 0.1  # the other cameras' frames/s while one is away
RSS_GROWTH_MIB = 50.0


def serve_checks(figures: dict) -> dict:
    """name -> {'figure', 'target', 'passed'}: one row of the report's table each."""
    segment = figures["segment_seconds"]
    capacity, peers = figures["capacity"]["cameras"], figures["peer"]["cameras"]
    over, back, soak = figures["overload"], figures["reconnection"], figures["soak"]
    of_bound = capacity / figures["bound"]["cameras"]
    over_peer = capacity / peers if peers else None  # no peer kept up: any capacity is more
    p95 = over["latency_p95_s"]
    spread = over["skipped_max_over_min"]
    rows = {
        "capacity over bound": (of_bound, f">= {OF_BOUND:g}", of_bound >= OF_BOUND),
        "service over peer cameras": (
            over_peer, f">= {OVER_PEER:g}", capacity > 0 and (over_peer or OVER_PEER) >= OVER_PEER
        ),
        "overload p95 latency (s)": (
            p95, f"<= {segment + OVERLOAD_SLACK:g}", p95 is not None and p95 <= segment + OVERLOAD_SLACK
        ),
        "overload memory growth (MiB)": (
            over["rss_growth_mib"], f"< {RSS_GROWTH_MIB:g}", over["rss_growth_mib"] < RSS_GROWTH_MIB
        ),
        "overload skipped frames, most / fewest camera": (
            spread, f"<= {SKIP_SPREAD:g}", spread is not None and spread <= SKIP_SPREAD
        ),
        "reconnection: back online after (s)": (
            back["online_after_s"],
            f"<= {back['backoff_s'] + RECONNECT_SLACK:g} (backoff + {RECONNECT_SLACK:g})",
            back["online_after_s"] <= back["backoff_s"] + RECONNECT_SLACK,
        ),
        "reconnection: others' frames/s change": (
            back["others_rate_change_max"],
            f"<= {RATE_CHANGE:g}",
            back["others_rate_change_max"] <= RATE_CHANGE,
        ),
        "soak memory growth (MiB)": (
            soak["rss_growth_mib"], f"< {RSS_GROWTH_MIB:g}", soak["rss_growth_mib"] < RSS_GROWTH_MIB
        ),
        "soak: closed episodes lost on restart": (
            soak["closed_episodes_lost"], "0", soak["closed_episodes_lost"] == 0
        ),
    }  # fmt: skip
    return {
        name: dict(figure=figure, target=target, passed=bool(passed))
        for name, (figure, target, passed) in rows.items()
    }


def serve_markdown(figures: dict) -> str:
    bound, segment = figures["bound"], figures["segment_seconds"]
    lines = [
        "## Home service (tools/serve.py)",
        "",
        f"{figures['cpu']}, {figures['cores']} cores. Cameras: {figures['clip']} over RTSP on "
        f"127.0.0.1, sampled at {figures['sampling_fps']:g} frames/s; encoder "
        f"{figures['encoder']} ({bound['precision']}, {bound['batch']} frames a batch), random "
        f"weights. Segment: {segment:g} s. Each trial warms up {figures['warmup_seconds']:g} s, "
        f"then is measured over {figures['window_seconds']:g} s.",
        "",
        f"Bound: the encoder alone, {bound['frames_per_s']:.1f} frames/s / "
        f"{figures['sampling_fps']:g} = {bound['cameras']:.2f} cameras; one frame at a time "
        f"{bound['frames_per_s_one_at_a_time']:.1f} frames/s. Its resident memory: "
        f"{bound['rss_mib_before_warm_up']:.0f} MiB, {bound['rss_mib_after_warm_up']:.0f} MiB "
        "once every batch size has run (the service runs them all at start, so its memory does "
        "not grow when a new one comes). A number of cameras is "
        f"kept up with when under {MAX_SKIPPED:.0%} of the frames sampled are skipped, p95 "
        f"capture-to-label latency is at most {segment + LATENCY_SLACK:g} s (a segment + "
        f"{LATENCY_SLACK:g} s) and every camera is sampled at {MIN_PACE:.0%} of its rate or "
        f"more. Service: {_kept_up(figures['capacity'])}; peer (one tools/infer.py per "
        f"camera): {_kept_up(figures['peer'])}.",
        "",
        "| check | figure | target | passed |",
        "|---|---|---|---|",
    ]
    for name, check in figures["checks"].items():
        passed = "yes" if check["passed"] else "**no**"
        lines.append(f"| {name} | {_number(check['figure'])} | {check['target']} | {passed} |")
    lines += ["", *_trials("Service", figures["capacity"]["trials"])]
    lines += ["", *_trials("Peer (tools/infer.py per camera)", figures["peer"]["trials"])]
    lines += ["", *_notes(figures)]
    return "\n".join(lines)


def _kept_up(search: dict) -> str:
    """'N cameras in M MiB': the most cameras kept up with and the memory that trial took."""
    count = search["cameras"]
    if not count:
        return "no number of cameras"
    return f"{count} cameras in {search['trials'][count]['rss_mib']:.0f} MiB of resident memory"


def _trials(title: str, trials: dict) -> list[str]:
    lines = [
        f"{title} trials:",
        "",
        "| cameras | skipped | slowest camera's pace | latency p50 (s) | p95 (s) | resident "
        "memory (MiB) | keeps up |",
        "|---|---|---|---|---|---|---|",
    ]
    for count, trial in trials.items():
        lines.append(
            f"| {count} | {trial['skipped_fraction']:.2%} | {trial['pace_min']:.2f} | "
            f"{_number(trial['latency_p50_s'])} | {_number(trial['latency_p95_s'])} | "
            f"{trial['rss_mib']:.0f} | {'yes' if trial['keeps_up'] else 'no'} |"
        )
    return lines


def _notes(figures: dict) -> list[str]:
    over, back, soak = figures["overload"], figures["reconnection"], figures["soak"]
    return [
        f"Overload: {over['cameras']} cameras for {over['seconds']:.0f} s, "
        f"{over['skipped_fraction']:.1%} of frames skipped; resident memory "
        f"{over['rss_mib'][0]:.0f} MiB after warm-up, {over['rss_mib'][-1]:.0f} MiB at the end.",
        f"Reconnection: {back['cameras']} cameras, below the capacity; 'away' had its own RTSP "
        "server (CPU the capacity's cameras did not take), stopped for "
        f"{back['outage_seconds']:.1f} s; the backoff in progress when it returned was "
        f"{back['backoff_s']:g} s.",
        f"Soak: {soak['cameras']} cameras for {soak['seconds']:.0f} s, resident memory "
        f"{soak['rss_mib'][0]:.0f} -> {soak['rss_mib'][-1]:.0f} MiB; "
        f"{soak['closed_episodes']} closed episodes before the restart, "
        f"{soak['closed_episodes_lost']} lost after it (exit status {soak['exit_code']}).",
        "Service latency: /api/stats' p95 over the service's last minute of labels. Peer "
        "latency: each --jsonl line's arrival minus its media time, less the smallest such "
        "difference of its process (a lower bound); peer frames dropped count the whole run.",
        "Labels agree with tools/infer.py on the same file: tests/test_serve_api.py checks it.",
    ]


def _number(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value}" if isinstance(value, int) else f"{value:.2f}"
