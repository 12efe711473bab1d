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

from crt_video.models import build_model
from crt_video.utils.flops import flop_counter

FULL = "full"
CRT_TOKEN = "crt (token variant)"
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
        return f"d = {d} (+ d + 1 = {d + 1}: output sum, frame count)"
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
        model = build_model(cfg, settings["in_dim"], settings["num_classes"]).eval()
        rows.append(_side_row(label, S, model, settings, counted))
    notes = _side_notes(settings, rows)
    seconds = time.perf_counter() - started
    figures = {
        "lengths": sorted(settings["side_lengths"]),
        "rows": rows,
        "notes": notes,
        "seconds": seconds,
    }
    return {"markdown": _side_markdown(settings, rows, notes, seconds), "figures": figures}


def _find(rows: list[dict], label: str, S: int | None = None) -> dict:
    return next(row for row in rows if row["model"] == label and (S is None or row["S"] == S))


def _core(row: dict) -> int:
    """Counted FLOPs at the largest T without the input projection and head."""
    return row["flops"][-1] - row["parts"]["projection"] - row["parts"]["head"]


def _layers(row: dict) -> int:
    """Counted FLOPs of the Transformer layers at the largest T."""
    return row["parts"]["layers_linear"] + row["parts"]["layers_attention"]


def _side_notes(settings: dict, rows: list[dict]) -> list[str]:
    """Bullets on where counts and formulas differ, each figure measured from the counts."""
    return [
        _note_projection(settings, rows),
        _note_layers(settings, rows),
        _note_full(settings, rows),
        *_notes_crt(settings, rows),
        _note_xl(settings, rows),
        _note_gru(settings, rows),
        _note_crt_vs_xl(settings, rows),
    ]


def _note_projection(settings: dict, rows: list[dict]) -> str:
    T, d, in_dim = max(settings["side_lengths"]), settings["d_model"], settings["in_dim"]
    S0 = min(settings["side_segment_lens"])
    crt, full = _find(rows, "crt", S0), _find(rows, FULL)
    parts = crt["parts"]
    share = (parts["projection"] + parts["head"]) / crt["flops"][-1]
    full_share = (full["parts"]["projection"] + full["parts"]["head"]) / full["flops"][-1]
    return (
        "Input projection and head: table 1 leaves them out (its '+ O(nd)'), the counter "
        f"includes them. The projection counts {parts['projection'] / (T * d * d):.2f} d² per "
        f"frame (2·in_dim·d = {2 * in_dim / d:.2f} d² with in_dim {in_dim}), the head "
        f"{parts['head']} FLOPs per clip: {share:.1%} of crt S={S0}'s count at T={T}, "
        f"{full_share:.1%} of full's. The column 'same without projection, head' takes them out."
    )


def _note_layers(settings: dict, rows: list[dict]) -> str:
    T, d, L = max(settings["side_lengths"]), settings["d_model"], settings["depth"]
    S0 = min(settings["side_segment_lens"])
    seg = _find(rows, "segment", S0)["parts"]
    linear = seg["layers_linear"] / (L * T * d * d)
    attention = seg["layers_attention"] / (L * T * S0 * d)
    ratios = ", ".join(
        f"{_layers(row) / row['table1'][-1]:.3f} at S={row['S']}"
        for row in rows
        if row["model"] == "segment"
    )
    return (
        f"Transformer layer (segment, S={S0}): {linear:.2f} n d² in linear maps against table "
        "1's 20 (q, k, v and out 8 n d², our 4×-wide MLP 16 n d²) and "
        f"{attention:.2f} n² d in attention against 6 (QKᵀ and weighted values 2 n² d each; "
        "softmax and scaling are elementwise, which torch's counter does not count). "
        f"segment's layers alone come to {ratios} × table 1."
    )


def _note_full(settings: dict, rows: list[dict]) -> str:
    lengths, d, L = sorted(settings["side_lengths"]), settings["d_model"], settings["depth"]
    full = _find(rows, FULL)
    T = lengths[-1]
    attention = full["parts"]["layers_attention"]
    ratios = ", ".join(
        f"{flops / formula:.3f} at T={length}"
        for flops, formula, length in zip(full["flops"], full["table1"], lengths, strict=True)
    )
    return (
        f"full (n = T): attention is {attention / full['flops'][-1]:.1%} of its count at T={T}, "
        f"{attention / (L * T * T * d):.2f} T² d per layer against table 1's 6 T² d, so as T "
        f"grows counted / table 1 falls towards 4/6: {ratios}."
    )


def _notes_crt(settings: dict, rows: list[dict]) -> list[str]:
    T, d, L = max(settings["side_lengths"]), settings["d_model"], settings["depth"]
    S0 = min(settings["side_segment_lens"])
    segments = T / S0
    per_token = _find(rows, "segment", S0)["parts"]["layers_linear"] / (L * T * d * d)
    crt, token = _find(rows, "crt", S0), _find(rows, CRT_TOKEN, S0)

    def tokens(row: dict) -> float:  # positions each layer maps per segment, on average
        return row["parts"]["layers_linear"] / (L * segments * per_token * d * d)

    position = crt["parts"]["position_rnn"] / (T * d * d)
    memory = crt["parts"]["memory_rnn"] / (T * d * d)
    return [
        f"Memory token (S={S0}): the token variant's layers map {tokens(token):.2f} positions "
        f"per segment of n = {S0} frames (n + 1), crt's {tokens(crt):.2f} (its last layer "
        "computes out and MLP for the n frames only).",
        f"crt's RNNs: the position RNN counts {position:.2f} d² and the memory RNN "
        f"{memory:.2f} d² per frame, a GRU cell's 12 d² each, {position + memory:.2f} d² "
        "together; table 1's CRT formula has 12 n d² per segment beyond its layers, one RNN's "
        "worth, and 12 n d² per layer where its Transformer has 20, though crt's layers are "
        f"segment's plus the memory token. So crt counts {crt['flops'][-1] / crt['table1'][-1]:.3f}"
        f"× its formula at S={S0} ({_core(crt) / crt['table1'][-1]:.3f}× without projection and "
        "head).",
        "The token variant (no formula of its own, set against CRT's) steps its memory cell "
        f"once per segment ({token['parts']['memory_rnn'] / (segments * d * d):.2f} d² per "
        "segment) and has no position RNN: "
        f"{token['flops'][-1] / token['table1'][-1]:.3f}× the CRT formula at S={S0}.",
    ]


def _note_xl(settings: dict, rows: list[dict]) -> str:
    T, d, L = max(settings["side_lengths"]), settings["d_model"], settings["depth"]
    S0 = min(settings["side_segment_lens"])
    xl = _find(rows, "xl", S0)["parts"]
    key_value = xl["xl_key_value"] / (L * T * d * d)
    offsets = xl["xl_offsets"] / (2 * L * (T / S0) * d * d)
    ratios = ", ".join(
        f"{row['flops'][-1] / row['table1'][-1]:.3f} at S={row['S']}"
        for row in rows
        if row["model"] == "xl"
    )
    return (
        f"xl (S={S0}): keys and values over cache and segment count {key_value:.2f} d² per frame "
        "and layer, a plain layer's 4 doubled by the cache; W_r maps "
        f"{offsets:.0f} relative offsets per segment (3n - 1 = {3 * S0 - 1}: frames attend both "
        "ways; a causal XL needs 2n). Its layers count "
        f"{xl['layers_linear'] / (L * T * d * d):.2f} n d² in linear maps against table 1's 28 "
        f"and {xl['layers_attention'] / (L * T * S0 * d):.2f} n² d in attention against 12 "
        "(content and values 4 each over 2n keys, position scores 2(3n - 1)/n); table 1's 6 n² "
        f"(the relative shift) is an elementwise gather, not counted. Counted / table 1: {ratios}."
    )


def _note_gru(settings: dict, rows: list[dict]) -> str:
    T, d, L = max(settings["side_lengths"]), settings["d_model"], settings["depth"]
    gru = _find(rows, "gru")
    ratio = gru["flops"][-1] / gru["table1"][-1]
    return (
        f"gru (not in table 1): {gru['parts']['gru'] / (L * T * d * d):.2f} d² per frame and "
        f"layer, the standard 12 d²; counted / that count is {ratio:.3f}, "
        f"from projection and head alone ({_core(gru) / gru['table1'][-1]:.3f} without them)."
    )


def _note_crt_vs_xl(settings: dict, rows: list[dict]) -> str:
    T, d = max(settings["side_lengths"]), settings["d_model"]
    below, above = [], []
    for S in settings["side_segment_lens"]:
        crt, xl, seg = (_find(rows, label, S) for label in ("crt", "xl", "segment"))
        if crt["flops"][-1] < xl["flops"][-1]:
            below.append(str(S))
            continue
        rnn = (crt["parts"]["position_rnn"] + crt["parts"]["memory_rnn"]) / (T * d * d)
        above.append(
            f"at S={S} crt counts {(crt['flops'][-1] - seg['flops'][-1]) / (T * d * d):.1f} d² "
            f"per frame more than segment (its RNNs {rnn:.1f}, the rest the memory token), xl "
            f"{(xl['flops'][-1] - seg['flops'][-1]) / (T * d * d):.1f} d² (doubled keys, "
            "3n - 1 offsets, scores over 2n keys, all per layer)"
        )
    text = f"crt against xl at T={T}: fewer FLOPs at S = {', '.join(below) or 'none'}"
    if above:
        text += (
            "; not fewer: " + "; ".join(above) + f". The RNNs are paid once per frame, XL's extra "
            f"once per layer and grows with S: at depth {settings['depth']} and small S the RNNs "
            "weigh more"
        )
    return text + "."


def _cell(value: float | None, scale: float, digits: str) -> str:
    return "n/a" if value is None else format(value * scale, digits)


def _side_markdown(settings: dict, rows: list[dict], notes: list[str], seconds: float) -> str:
    lengths = sorted(settings["side_lengths"])
    T = lengths[-1]
    full = _find(rows, FULL)
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
            f"| {_core(row) / row['table1'][-1]:.3f} "
            f"| {_cell(row['state_numbers'], 1, 'd')} | {row['state_formula']} "
            f"| {_cell(row['step_seconds'], 1e3, '.2f')} |"
        )
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)])
