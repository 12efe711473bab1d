"""The accuracy benchmark's report: verdicts against `full` and `xl`, the ablation lines, the
tables by model and by gap, and the two plots.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

from benchmarks.accuracy_variants import ABLATION_REFERENCE, FULL_RECIPE, TRANSFORMER
from crt_video.utils.io import atomic_write

PLOT_NAME = "accuracy_vs_flops.png"
GAP_PLOT_NAME = "accuracy_vs_gap.png"
ABLATION_PLOT_NAME = "ablations_vs_flops.png"
ABLATION_GAP_PLOT_NAME = "ablations_vs_gap.png"
# `full` is the upper reference only where it reaches this test mCA.
REFERENCE_MCA = 0.9


def report(out_dir: Path, figures: dict) -> str:
    """Adds the FLOPs ratios to the results, draws the two plots and returns the section."""
    results = figures["results"]
    if figures["ablations"]:
        add_flops_ratio(results, ABLATION_REFERENCE, "flops_vs_reference")
        plot_accuracy_vs_flops(results, out_dir / ABLATION_PLOT_NAME, "CRT ablations")
        plot_accuracy_vs_gap(results, out_dir / ABLATION_GAP_PLOT_NAME, skip_ablations=False)
    else:
        add_flops_ratio(results, best_full(results), "flops_vs_full")
        plot_accuracy_vs_flops(results, out_dir / PLOT_NAME)
        plot_accuracy_vs_gap(results, out_dir / GAP_PLOT_NAME)
    return markdown(figures)


def best_full(results: dict) -> str | None:
    """The ``full`` row with the highest test mCA, None without one."""
    return max(
        (name for name in results if name.startswith("full")),
        key=lambda name: results[name]["mean_class_accuracy"],
        default=None,
    )


def add_flops_ratio(results: dict, reference: str | None, key: str) -> None:
    """Sets ``key`` of every row to its FLOPs over those of ``reference`` (NaN without one)."""
    base = results[reference]["gflops_per_clip"] if reference in results else float("nan")
    for result in results.values():
        result[key] = result["gflops_per_clip"] / base


def plot_accuracy_vs_flops(
    results: dict, path: Path, title: str = "Order of two distant events"
) -> None:
    figure = Figure(figsize=(6.8, 4.4), layout="constrained")
    axes = figure.add_subplot()
    for name, result in results.items():
        low, high = result["interval"]
        accuracy = result["mean_class_accuracy"]
        axes.errorbar(
            max(result["gflops_per_clip"], 1e-4),
            100 * accuracy,
            yerr=[[100 * (accuracy - low)], [100 * (high - accuracy)]],
            fmt="o" if result["learned"] else "x",
            capsize=4,
            label=name if result["learned"] else f"{name} (did not learn)",
        )
    axes.set_xscale("log")
    axes.set_xlabel("forward GFLOPs per clip")
    axes.set_ylabel("test mean per-class accuracy (%), 95% CI")
    axes.set_title(f"{title}: accuracy vs cost")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    _save(figure, path)


def plot_accuracy_vs_gap(results: dict, path: Path, skip_ablations: bool = True) -> None:
    """Test mCA against the gap between the events, per row (ablation rows only if not
    ``skip_ablations``)."""
    figure = Figure(figsize=(6.8, 4.4), layout="constrained")
    axes = figure.add_subplot()
    shown = [
        name for name, result in results.items() if not (skip_ablations and result["ablation"])
    ]
    for name in shown:
        by_gap = results[name]["by_gap"]
        gaps = [float(gap) for gap in by_gap]
        accuracy = np.array([100 * item["mean_class_accuracy"] for item in by_gap.values()])
        low = np.array([100 * item["interval"][0] for item in by_gap.values()])
        high = np.array([100 * item["interval"][1] for item in by_gap.values()])
        line = axes.plot(gaps, accuracy, marker="o", label=name)[0]
        axes.fill_between(gaps, low, high, color=line.get_color(), alpha=0.12)
    axes.set_xlabel("gap between the two events (segments of T/16 frames)")
    axes.set_ylabel("test mean per-class accuracy (%), 95% CI")
    axes.set_ylim(0, 105)
    axes.set_title("Accuracy against the distance between the events")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)


def _recipe(recipe: dict) -> str:
    return f"{recipe['lr']:g}, {recipe['epochs']}, {recipe['warmup_epochs']:g}"


def _percent(result: dict) -> str:
    low, high = result["interval"]
    return f"{100 * result['mean_class_accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def verdict(results: dict) -> list[str]:
    """Whether CRT is within 1 point of a ``full`` that learned and reaches REFERENCE_MCA, at
    <= 0.5x its FLOPs, and within its interval where the events are 8 or more segments apart."""
    fulls = [name for name in results if name.startswith("full") and results[name]["learned"]]
    if not fulls:
        return ["No `full` learned: no comparison is made."]
    reference = max(fulls, key=lambda name: results[name]["mean_class_accuracy"])
    full = results[reference]
    if full["mean_class_accuracy"] < REFERENCE_MCA:
        return [
            f"The best `full` ({reference}) reaches {100 * full['mean_class_accuracy']:.1f}% test "
            f"mCA (train top-1 {100 * full['train_top1']:.1f}%), below the "
            f"{100 * REFERENCE_MCA:.0f}% an upper reference needs: no parity claim is made."
        ]
    far = [gap for gap in full["by_gap"] if float(gap) >= 8]
    lines = [f"Against `{reference}` ({_percent(full)}):"]
    for name, result in results.items():
        if not name.startswith("crt") or result["ablation"]:
            continue
        gap = 100 * (result["mean_class_accuracy"] - full["mean_class_accuracy"])
        met = gap >= -1.0 and result["flops_vs_full"] <= 0.5
        held = all(
            result["by_gap"][g]["mean_class_accuracy"] >= full["by_gap"][g]["interval"][0]
            for g in far
        )
        lines.append(
            f"- {name}: {gap:+.1f} points at {result['flops_vs_full']:.2f}x its FLOPs: target "
            f"{'met' if met else 'missed'}; at gaps {' and '.join(far)} "
            f"{'within or above' if held else 'below'} its interval."
        )
    return lines


def _overlap(a: dict, b: dict) -> bool:
    return a["interval"][0] <= b["interval"][1] and b["interval"][0] <= a["interval"][1]


def xl_verdict(results: dict) -> list[str]:
    """Each CRT row (not an ablation) against the Transformer-XL row of its segment length:
    the difference in test mCA, the FLOPs ratio, and whether the two intervals overlap."""
    xls = {
        result["model"]["segment_len"]: name
        for name, result in results.items()
        if result["model"]["type"] == "xl"
    }
    lines = []
    for name, result in results.items():
        model = result["model"]
        if model["type"] != "crt" or result["ablation"] or model.get("segment_len") not in xls:
            continue
        xl_name = xls[model["segment_len"]]
        xl = results[xl_name]
        if not (result["learned"] and xl["learned"]):
            failed = " and ".join(n for n, r in ((name, result), (xl_name, xl)) if not r["learned"])
            lines.append(f"- {name}: {failed} did not learn: no comparison.")
            continue
        gap = 100 * (result["mean_class_accuracy"] - xl["mean_class_accuracy"])
        ratio = result["gflops_per_clip"] / xl["gflops_per_clip"]
        lines.append(
            f"- {name}: {gap:+.1f} points vs {xl_name} ({_percent(xl)}) at {ratio:.2f}x its "
            f"FLOPs; the intervals {'overlap' if _overlap(result, xl) else 'do not overlap'}."
        )
    return ["Against Transformer-XL at the same segment length:", *lines] if lines else []


def ablation_verdict(results: dict) -> list[str]:
    """Each ablation row against the paper's CRT (``ABLATION_REFERENCE``): the difference in
    test mCA over all clips and at the smallest gap, where the order is hardest to keep."""
    if ABLATION_REFERENCE not in results:
        return [f"No `{ABLATION_REFERENCE}` row: no ablation is compared."]
    reference = results[ABLATION_REFERENCE]
    close = min(reference["by_gap"], key=float)
    unlearned = "" if reference["learned"] else "; it did not learn"
    lines = [
        f"Against the paper's `{ABLATION_REFERENCE}` ({_percent(reference)}; at gap {close}: "
        f"{_percent(reference['by_gap'][close])}{unlearned}):"
    ]
    for name, result in results.items():
        if name == ABLATION_REFERENCE:
            continue
        overall = 100 * (result["mean_class_accuracy"] - reference["mean_class_accuracy"])
        at_close = 100 * (
            result["by_gap"][close]["mean_class_accuracy"]
            - reference["by_gap"][close]["mean_class_accuracy"]
        )
        notes = [f"the intervals {'overlap' if _overlap(result, reference) else 'do not overlap'}"]
        if result["model"].get("segment_len") != reference["model"]["segment_len"]:
            notes.append("a different segment length too")
        if not result["learned"]:
            notes.append("did not learn")
        lines.append(
            f"- {name}: {overall:+.1f} points overall, {at_close:+.1f} at gap {close} "
            f"({'; '.join(notes)})."
        )
    return lines


def selection_markdown(figures: dict) -> str:
    results = figures["results"]
    best = max(
        results,
        key=lambda name: (results[name]["val_mean_class_accuracy"], -results[name]["val_loss"]),
    )
    lines = [
        "## Recipe of `full` (`accuracy --select-full`)",
        "",
        f"Candidate recipes trained on fold 0 of the {figures['clips']} clips "
        f"({figures['frames_per_clip']} frames each) and scored on its validation clips only; "
        "the test clips are not used. Best epoch by validation mCA (a tie goes to the lower "
        f"validation loss). Training {figures['training_seconds']:.0f} s on "
        f"{figures['workers']} worker process(es).",
        "",
        "| candidate | val mCA % | val loss | best epoch | train top-1 % | recipe (lr, epochs, "
        "warm-up) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {100 * result['val_mean_class_accuracy']:.1f} | "
            f"{result['val_loss']:.3f} | {result['best_epoch']} | "
            f"{100 * result['train_top1']:.1f} | {_recipe(result['recipe'])} |"
        )
    lines += [
        "",
        f"Best on validation: {best}. The main table's `full` uses {FULL_RECIPE}.",
    ]
    return "\n".join(lines)


COMPARED = (
    "Compared at one width and depth ({width}) and one recipe: the paper's CRT (a memory RNN over "
    "each segment's outputs in order, a position RNN inside each segment) with a GRU or NC-GRU "
    "cell at segments of S = T/4, T/8 and T/16 frames; Transformer-XL at the same segment "
    "lengths; a GRU over the frames; segments without memory (`segment`); one Transformer over "
    "all T frames (`full`); and mean pooling."
)
ABLATIONS_COMPARED = (
    "The paper's ablation (its table 8) in video form, at one width and depth ({width}), with "
    "the GRU cell at segments of S = T/4: the paper's CRT (`{reference}`) against CRT without its "
    "position RNN (learned positions: `memory RNN only`), without its memory RNN (one cell step "
    "on the memory token's output: `position RNN only`) and without both (the earlier variant); "
    "plus the paper's CRT with a position RNN of 32 numbers (`position_dim=32`) instead of one as "
    "wide as the model, and with its memory's update gates starting at time scales spread up to "
    "30 min (`memory_horizon=1800`) instead of one bias of 4 (`memory_gate_bias=4`)."
)


def _setup_text(figures: dict) -> str:
    """What was trained on, how it is split and scored, and how long it took."""
    width = ", ".join(f"{key} {TRANSFORMER[key]}" for key in ("d_model", "depth", "heads"))
    compared = ABLATIONS_COMPARED if figures.get("ablations") else COMPARED
    return (
        compared.format(width=width, reference=ABLATION_REFERENCE)
        + f" {figures['clips']} generated H.264 clips of {figures['clip_seconds']:.0f} s whose "
        f"class is the order of two events ({' vs '.join(figures['classes'])}), sampled at "
        f"{figures['sampling_fps']:g} fps = {figures['frames_per_clip']} frames per clip, encoded "
        f"once by {figures['encoder']}. {figures['folds']} folds stratified by class and gap: run k "
        "tests fold k, picks its epoch on fold k+1 and trains on the rest (seed k), so every clip "
        "is tested once per model. mCA pooled over all test clips, with a 95% bootstrap interval; "
        "train top-1 at the selected epoch, mean over folds. Data "
        f"{figures['data_seconds']:.0f} s, training {figures['training_seconds']:.0f} s on "
        f"{figures['workers']} worker process(es)."
    )


def _results_table(results: dict, ratio_key: str, ratio_header: str) -> list[str]:
    lines = [
        "| model | test mCA % [95% CI] | test clips | train top-1 % | GFLOPs / clip "
        f"| {ratio_header} | train s / run | recipe (lr, epochs, warm-up) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        learned = "" if result["learned"] else " (did not learn)"
        lines.append(
            f"| {name}{learned} | {_percent(result)} | {result['test_clips']} | "
            f"{100 * result['train_top1']:.1f} | {result['gflops_per_clip']:.3f} | "
            f"{result[ratio_key]:.2f} | {result['train_seconds']:.0f} | "
            f"{_recipe(result['recipe'])} |"
        )
    return lines


def _gap_table(results: dict, segment_frames: int) -> list[str]:
    gaps = list(next(iter(results.values()))["by_gap"])
    lines = [
        f"Accuracy by gap between the events, in segments of {segment_frames} frames (T/16), "
        "test mCA % [95% CI]:",
        "",
        "| model | " + " | ".join(f"gap {gap}" for gap in gaps) + " |",
        "|---|" + "---:|" * len(gaps),
    ]
    for name, result in results.items():
        cells = [_percent(result["by_gap"][gap]) for gap in gaps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(figures: dict) -> str:
    """The report section of the comparison, or of the ablations (``figures['ablations']``)."""
    results = figures["results"]
    if figures.get("ablations"):
        title = "## Ablations of CRT (`accuracy --ablations`)"
        table = _results_table(results, "flops_vs_reference", f"FLOPs vs {ABLATION_REFERENCE}")
        verdicts = ablation_verdict(results)
        plots = (ABLATION_PLOT_NAME, ABLATION_GAP_PLOT_NAME)
    else:
        title = "## Accuracy vs cost (`accuracy`)"
        table = _results_table(results, "flops_vs_full", "FLOPs vs full")
        against_xl = xl_verdict(results)
        verdicts = [*verdict(results), *([""] + against_xl if against_xl else [])]
        plots = (PLOT_NAME, GAP_PLOT_NAME)
    return "\n".join(
        [
            title,
            "",
            _setup_text(figures),
            "",
            *table,
            "",
            *verdicts,
            "",
            f"![accuracy vs FLOPs]({plots[0]})",
            "",
            *_gap_table(results, figures["gap_segment_frames"]),
            "",
            f"![accuracy vs gap]({plots[1]})",
        ]
    )
