"""The side-by-side cost table's notes: where the counted FLOPs and the paper's table-1 formulas
differ, and why, each figure measured from the per-module counts."""

from __future__ import annotations

FULL = "full"
CRT_TOKEN = "crt (token variant)"


def find_row(rows: list[dict], label: str, S: int | None = None) -> dict:
    return next(row for row in rows if row["model"] == label and (S is None or row["S"] == S))


def core_flops(row: dict) -> int:
    """Counted FLOPs at the largest T without the input projection and head."""
    return row["flops"][-1] - row["parts"]["projection"] - row["parts"]["head"]


def _layers(row: dict) -> int:
    """Counted FLOPs of the Transformer layers at the largest T."""
    return row["parts"]["layers_linear"] + row["parts"]["layers_attention"]


def side_notes(settings: dict, rows: list[dict]) -> list[str]:
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
    crt, full = find_row(rows, "crt", S0), find_row(rows, FULL)
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
    seg = find_row(rows, "segment", S0)["parts"]
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
    full = find_row(rows, FULL)
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
    per_token = find_row(rows, "segment", S0)["parts"]["layers_linear"] / (L * T * d * d)
    crt, token = find_row(rows, "crt", S0), find_row(rows, CRT_TOKEN, S0)

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
        f"× its formula at S={S0} ({core_flops(crt) / crt['table1'][-1]:.3f}× without projection and "
        "head).",
        "The token variant (no formula of its own, set against CRT's) steps its memory cell "
        f"once per segment ({token['parts']['memory_rnn'] / (segments * d * d):.2f} d² per "
        "segment) and has no position RNN: "
        f"{token['flops'][-1] / token['table1'][-1]:.3f}× the CRT formula at S={S0}.",
    ]


def _note_xl(settings: dict, rows: list[dict]) -> str:
    T, d, L = max(settings["side_lengths"]), settings["d_model"], settings["depth"]
    S0 = min(settings["side_segment_lens"])
    xl = find_row(rows, "xl", S0)["parts"]
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
    gru = find_row(rows, "gru")
    ratio = gru["flops"][-1] / gru["table1"][-1]
    return (
        f"gru (not in table 1): {gru['parts']['gru'] / (L * T * d * d):.2f} d² per frame and "
        f"layer, the standard 12 d²; counted / that count is {ratio:.3f}, "
        f"from projection and head alone ({core_flops(gru) / gru['table1'][-1]:.3f} without them)."
    )


def _note_crt_vs_xl(settings: dict, rows: list[dict]) -> str:
    T, d = max(settings["side_lengths"]), settings["d_model"]
    below, above = [], []
    for S in settings["side_segment_lens"]:
        crt, xl, seg = (find_row(rows, label, S) for label in ("crt", "xl", "segment"))
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
