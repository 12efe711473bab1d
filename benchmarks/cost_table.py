"""The model benchmark's second table, cost side by side: counted forward FLOPs of crt (the
paper's mechanism), its token variant, Transformer-XL, a GRU, full and segment beside the paper's
table-1 formulas, with the state each streaming model carries between segments and the time of one
streaming step, and notes, computed from per-module counts, on where counts and formulas differ.
"""

from __future__ import annotations

import re
import statistics
import time

import torch

from benchmarks.cost_notes import CRT_TOKEN, FULL, core_flops, find_row, side_notes
from crt_video.models import build_model
from crt_video.utils.flops import flop_counter

# label -> (model keys beyond width and dropout, table-1 formula, cut into segments of S)
SIDE_MODELS = {
    "crt": ({"type": "crt"}, "crt", True),
    CRT_TOKEN: ({"type": "crt", "memory_read": "token", "positions": "learned"}, "crt", True),
    "xl": ({"type": "xl"}, "xl", True),
    "gru": ({"type": "gru"}, "gru", False),
    "segment": ({"type": "segment"}, "transformer", True),
    FULL: ({"type": FULL}, "transformer", False),
}
TABLE1_TYPES = ("transformer", "segment", "full", "xl", "crt", "gru")
LINEAR_OPS = (torch.ops.aten.mm, torch.ops.aten.addmm)
_LAYER = re.compile(r"(encoder\.)?layers\.\d+")


def table1_flops(model_type: str, T: int, n: int, d: int, L: int) -> float:
    """Forward FLOPs of a clip of T frames by the paper's table 1: the per-segment formula for
    segments of n frames, width d and L layers, times the T / n segments.

    'transformer' (or 'segment'): L(20 n d^2 + 6 n^2 d); 'full': the same with n = T (one
    segment; the n given is ignored); 'xl': L(28 n d^2 + 12 n^2 d + 6 n^2); 'crt':
    n d^2 (12 L + 12) + 8 L n^2 d. 'gru' is not in table 1: the standard count of a GRU layer,
    12 d^2 per frame (6 d^2 multiply-adds), times L layers. Table 1 adds "+ O(nd)" for what it
    leaves out (input projection, head)."""
    if model_type not in TABLE1_TYPES:
        raise ValueError(f"no table-1 formula for {model_type!r}; one of {TABLE1_TYPES}")
    if model_type == "full":
        n = T
    if model_type in ("transformer", "segment", "full"):
        per_segment = L * (20 * n * d**2 + 6 * n**2 * d)
    elif model_type == "xl":
        per_segment = L * (28 * n * d**2 + 12 * n**2 * d + 6 * n**2)
    elif model_type == "crt":
        per_segment = n * d**2 * (12 * L + 12) + 8 * L * n**2 * d
    else:
        per_segment = 12 * L * d**2 * n
    return per_segment * T / n


def flop_breakdown(model: torch.nn.Module, T: int, in_dim: int) -> tuple[int, dict[str, dict]]:
    """``count_flops``'s total (same input, eval mode, no autograd, CPU attention registered)
    and, from the same pass, each module's FLOPs split into 'linear' (mm/addmm: projections,
    MLPs, RNN cells) and 'attention' (the rest: scores and weighted values). One pass gives both,
    so the explanation of the table is read off the very count it explains. Module names drop
    the root (``embed.proj``, ``encoder.layers.0``)."""
    counter = flop_counter(model, T, in_dim)
    per_module = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        linear = sum(count for op, count in ops.items() if op in LINEAR_OPS)
        per_module[name.partition(".")[2]] = {
            "linear": linear,
            "attention": sum(ops.values()) - linear,
        }
    return counter.get_total_flops(), per_module


def _parts(per_module: dict[str, dict]) -> dict[str, int]:
    """The few sums the explanation needs, from :func:`flop_breakdown`'s per-module counts."""

    def total(name: str) -> int:
        return sum(per_module.get(name, {}).values())

    layers = sorted(
        (name for name in per_module if _LAYER.fullmatch(name)),
        key=lambda name: int(name.rsplit(".", 1)[1]),
    )
    return {
        "projection": total("embed.proj") + total("proj"),
        "head": total("head"),
        "layers_linear": sum(per_module[name]["linear"] for name in layers),
        "layers_attention": sum(per_module[name]["attention"] for name in layers),
        "position_rnn": total("positions"),
        "memory_rnn": total("cell"),
        "gru": total("gru"),
        "xl_key_value": sum(total(f"{name}.attn.key_value") for name in layers),
        "xl_offsets": sum(total(f"{name}.attn.position") for name in layers),
    }


def streaming_state_size(model: torch.nn.Module, segment_len: int, in_dim: int) -> int:
    """Numbers a streaming model carries from one segment to the next (batch 1, after one
    step, so a cache that fills on the first step is counted full): what a live stream must
    keep per clip, the quantity table 1's "memory" row compares."""
    with torch.no_grad():
        _, state = model.step(torch.zeros(1, segment_len, in_dim), model.init_state(1))
    return sum(t.numel() for t in state if isinstance(t, torch.Tensor))


def step_seconds(
    model: torch.nn.Module, segment_len: int, in_dim: int, repeats: int, threads: int
) -> float:
    """Median seconds of one ``model.step`` on a segment of ``segment_len`` frames (batch 1, no
    autograd, eval mode, ``threads`` torch threads): the latency a live stream pays per
    segment. The median, as a busy machine's stalls hit a few calls, not the typical one."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    segment = torch.randn(1, segment_len, in_dim, generator=torch.Generator().manual_seed(0))
    times = []
    try:
        with torch.no_grad():
            state = model.init_state(1)
            for _ in range(2):  # lazy kernel and thread setup
                _, state = model.step(segment, state)
            for _ in range(repeats):
                started = time.perf_counter()
                _, state = model.step(segment, state)
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return statistics.median(times)


def _side_configs(settings: dict) -> list[tuple[str, int | None, dict]]:
    """(label, S, model config) of each row: segment-based models once per S, gru once per S
    (S is then only the streamed chunk), full once (S None: one segment of T)."""
    width = dict(d_model=settings["d_model"], depth=settings["depth"], heads=settings["heads"])
    rows = []
    for label, (keys, _, segmented) in SIDE_MODELS.items():
        cfg = {**keys, **width, "dropout": 0.0}
        if label == FULL:
            rows.append((label, None, cfg))
            continue
        for S in settings["side_segment_lens"]:
            rows.append((label, S, {**cfg, "segment_len": S} if segmented else cfg))
    return rows


def _state_formula(label: str, S: int | None, settings: dict, T: int) -> str:
    """Table 1's "memory" row in this toolkit's terms: what the state should hold."""
    d, L, in_dim = settings["d_model"], settings["depth"], settings["in_dim"]
    if label in ("crt", CRT_TOKEN):
        return f"d = {d} (head 'memory+mean': + d + 1 = {d + 1}, output sum and frame count)"
    if label == "xl":
        return f"L·S·d = {L * S * d} (+ S + d + 1 = {S + d + 1}: mask, output sum, count)"
    if label == "gru":
        return f"L·d = {L * d}"
    if label == FULL:
        return f"T·in_dim = {T * in_dim} at T={T}: every frame so far (no streaming)"
    return "n/a (no step)"


def _side_row(label: str, S: int | None, model: torch.nn.Module, settings: dict, counted: dict):
    """One row: counts (reused from ``counted`` for a model whose cost has no S), table 1, and
    for a streaming model its state and step time."""
    lengths, in_dim = sorted(settings["side_lengths"]), settings["in_dim"]
    started = time.perf_counter()
    key = (label, S if SIDE_MODELS[label][2] else None)
    if key not in counted:
        flops, per_module = [], {}
        for T in lengths:
            total, per_module = flop_breakdown(model, T, in_dim)
            flops.append(total)
        counted[key] = (flops, _parts(per_module))  # parts at the largest T
    flops, parts = counted[key]
    d, L = settings["d_model"], settings["depth"]
    formula = SIDE_MODELS[label][1]
    row = {
        "model": label,
        "S": S,
        "flops": flops,
        "table1": [table1_flops(formula, T, S or T, d, L) for T in lengths],
        "parts": parts,
        "count_seconds": time.perf_counter() - started,
        "state_numbers": lengths[-1] * in_dim if label == FULL else None,
        "state_formula": _state_formula(label, S, settings, lengths[-1]),
        "step_seconds": None,
    }
    if hasattr(model, "step"):
        row["state_numbers"] = streaming_state_size(model, S, in_dim)
        row["step_seconds"] = step_seconds(
            model, S, in_dim, settings["step_repeats"], settings["threads"]
        )
    return row


def side_by_side(settings: dict) -> dict:
    """The "cost side by side" table: crt (paper), its token variant, xl, gru, segment and full
    at each side length T and segment length S, counted FLOPs beside table 1's formulas, the
    state carried between segments and one streaming step's time, plus notes, computed from
    per-module counts, on where counts and formulas differ. Returns markdown and figures."""
    started = time.perf_counter()
    torch.manual_seed(0)
    counted, rows = {}, []
    for label, S, cfg in _side_configs(settings):
        model = build_model(
            cfg, settings["in_dim"], settings["num_classes"], settings["frame_rate"]
        ).eval()
        rows.append(_side_row(label, S, model, settings, counted))
    notes = side_notes(settings, rows)
    seconds = time.perf_counter() - started
    figures = {
        "lengths": sorted(settings["side_lengths"]),
        "rows": rows,
        "notes": notes,
        "seconds": seconds,
    }
    return {"markdown": _side_markdown(settings, rows, notes, seconds), "figures": figures}


def _cell(value: float | None, scale: float, digits: str) -> str:
    return "n/a" if value is None else format(value * scale, digits)


def _side_markdown(settings: dict, rows: list[dict], notes: list[str], seconds: float) -> str:
    lengths = sorted(settings["side_lengths"])
    T = lengths[-1]
    full = find_row(rows, FULL)
    lines = [
        "## Cost side by side: CRT, Transformer-XL, a GRU and Transformers against table 1",
        "",
        f"d_model {settings['d_model']}, depth {settings['depth']}, heads {settings['heads']}, "
        f"input features {settings['in_dim']}, dropout 0, batch 1. Counted: forward FLOPs by "
        "torch.utils.flop_counter (input projection and head included). Table 1: the paper's "
        "formulas at d = d_model, n = S (full: n = T), L = depth, times T/n segments: "
        "Transformer L(20nd² + 6n²d) for segment and full, Transformer-XL "
        "L(28nd² + 12n²d + 6n²), CRT with GRU nd²(12L + 12) + 8Ln²d. State: numbers carried "
        "from one segment to the next (numel of the state after one step). Step: median of "
        f"{settings['step_repeats']} `step` calls on one segment of S frames (batch 1, no "
        f"autograd, {settings['threads']} thread(s)); gru's FLOPs do not depend on S, which is "
        f"only its streamed chunk. Computed in {seconds:.0f} s.",
        "",
        "| model | S | "
        + " | ".join(f"GFLOPs T={length}" for length in lengths)
        + f" | vs full at T={T} | table 1 GFLOPs at T={T} | counted / table 1 "
        "| same without projection, head | state carried (numbers) | state formula | step ms |",
        "|---|---:|" + "---:|" * len(lengths) + "---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        formula = f"{row['table1'][-1] / 1e9:.4g}"
        if row["model"] == "gru":
            formula += " (not in table 1: 12 d² per frame and layer)"
        elif row["model"] == CRT_TOKEN:
            formula += " (CRT's; the variant has none)"
        S = "n = T" if row["S"] is None else str(row["S"])
        lines.append(
            f"| {row['model']} | {S} | "
            + " | ".join(f"{flops / 1e9:.4g}" for flops in row["flops"])
            + f" | {row['flops'][-1] / full['flops'][-1]:.3f} | {formula} "
            f"| {row['flops'][-1] / row['table1'][-1]:.3f} "
            f"| {core_flops(row) / row['table1'][-1]:.3f} "
            f"| {_cell(row['state_numbers'], 1, 'd')} | {row['state_formula']} "
            f"| {_cell(row['step_seconds'], 1e3, '.2f')} |"
        )
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)])
