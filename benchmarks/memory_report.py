"""The memory benchmark's report: AP of the memory class per gap bin for every row and family,
the worst case where the target applies, the rows ranked by it, and a plot of AP against gap."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from crt_video.utils.io import atomic_write

PLOT_NAME = "memory_vs_gap.png"
# The target where it applies: AP at least this, and this far above segment, in every seed and bin.
TARGET_AP, TARGET_MARGIN = 0.8, 0.2


def report(out_dir: Path, figures: dict) -> str:
    plot_ap_vs_gap(figures, out_dir / PLOT_NAME)
    return markdown(figures)


def bin_labels(edges: list[float]) -> list[str]:
    return [
        f"{_duration(low)}+" if math.isinf(high) else f"{_duration(low)}-{_duration(high)}"
        for low, high in zip(edges[:-1], edges[1:], strict=True)
    ]


def _duration(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


def default_row(figures: dict, family: str) -> str | None:
    """The row that trains the family config's own defaults, if one does."""
    defaults = figures["defaults"][family]
    for name, keys in figures["variants"].items():
        if all(defaults.get(key) == value for key, value in keys.items()):
            return name
    return None


def markdown(figures: dict) -> str:
    edges = figures["gap_edges"]
    labels = bin_labels(edges)
    target = f"{_duration(figures['target_seconds'])}"
    lines = [
        "### How long the memory holds (`memory`)",
        "",
        "`python tools/benchmark.py memory`: dense detection of a class that needs a cue seen "
        "earlier in the video, trained with each family's config (`configs/tsu_cs.py`'s defaults "
        "with only a small encoder, 2 frames/s and 8-frame segments set) for every row and its "
        "training seeds (the seeds column), in batches of 2 videos for 30 epochs where the row "
        "names neither. "
        "AP % of the memory class per "
        "gap from the end of the cue to the start of the event: that bin's frames against every "
        "frame without the class (those of other gaps left out), mean over seeds with a 95% "
        "bootstrap interval over test videos. Worst: the lowest AP of any seed in any bin that "
        f"starts before {target}; margin: the lowest difference to `segment` in the same seed "
        f"and bin. Target: worst at least {TARGET_AP:.0%} and margin at least "
        f"{TARGET_MARGIN * 100:.0f} points. {_timing(figures)}",
    ]
    for family, spec in figures["families"].items():
        table = figures["results"][family]
        default = default_row(figures, family)
        lines += [
            "",
            f"#### `configs/{spec['config']}`: `{spec['memory']}` needs `{spec['cue']}`",
            "",
            f"| model | seeds | {' | '.join(labels)} | worst | margin | frame-mAP |",
            "|---|---|" + "---:|" * (len(labels) + 3),
        ]
        for name, row in table.items():
            cells = [
                _cell(mean, low, high)
                for mean, low, high in zip(row["mean"], *row["interval"], strict=True)
            ]
            label = f"{name} (the config's defaults)" if name == default else name
            lines.append(
                f"| {label} | {','.join(map(str, row['seeds']))} | {' | '.join(cells)} | "
                f"{_percent(row['worst'])} | "
                f"{_points(row['worst_margin'])} | {100 * np.mean(row['frame_map']):.1f} |"
            )
    lines += ["", *ranking(figures), "", f"![memory AP against gap]({PLOT_NAME})"]
    return "\n".join(lines)


def _timing(figures: dict) -> str:
    if not figures["workers"]:
        return "Reported from finished runs, with no training in this call."
    return (
        f"Data {figures['data_seconds']:.0f} s, training {figures['training_seconds']:.0f} s on "
        f"{figures['workers']} worker process(es)."
    )


def ranking(figures: dict) -> list[str]:
    """Rows by their worst case over every family (the lowest worst AP, then the lowest margin)."""
    results = figures["results"]
    families = list(results)
    names = [name for name in results[families[0]] if all(name in results[f] for f in families)]
    worst = {
        name: (
            min(_or_nan(results[f][name]["worst"]) for f in families),
            min(_or_nan(results[f][name]["worst_margin"]) for f in families),
        )
        for name in names
    }
    order = sorted(names, key=lambda name: tuple(-_or_low(v) for v in worst[name]))
    lines = [f"By the worst case over {', '.join(families)}:"]
    for name in order:
        ap, margin = worst[name]
        met = ap >= TARGET_AP and margin >= TARGET_MARGIN
        lines.append(
            f"- {name}: worst {_percent(ap)}, margin {_points(margin)}"
            + (": target met" if met else "")
        )
    return lines


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _or_low(value: float) -> float:
    return -1.0 if math.isnan(value) else value


def _cell(mean: float | None, low: float | None, high: float | None) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _points(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:+.1f}"


def plot_ap_vs_gap(figures: dict, path: Path) -> None:
    edges = figures["gap_edges"]
    families = list(figures["results"])
    figure = Figure(figsize=(6.0 * len(families) + 3.0, 4.4), layout="constrained")
    axes = figure.subplots(1, len(families), squeeze=False)[0]
    ticks = np.arange(len(edges) - 1)
    # One colour per row in every panel, and one legend for all rows: a row may be in one family.
    names = list(dict.fromkeys(name for family in families for name in figures["results"][family]))
    palette = colormaps["tab20"].colors
    # ten distinct hues first, then their lighter shades
    colors = dict(zip(names, itertools.cycle(palette[::2] + palette[1::2])))
    handles = {}
    for ax, family in zip(axes, families, strict=True):
        for name, row in figures["results"][family].items():
            mean = np.array(row["mean"], dtype=float) * 100
            low, high = (np.array(side, dtype=float) * 100 for side in row["interval"])
            handles[name] = ax.plot(ticks, mean, marker="o", color=colors[name], label=name)[0]
            ax.fill_between(ticks, low, high, color=colors[name], alpha=0.12)
        ax.axhline(TARGET_AP * 100, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(ticks, bin_labels(edges), rotation=30)
        ax.set_ylim(0, 101)
        ax.set_xlabel("gap from cue to event")
        ax.set_ylabel("AP % of the memory class")
        ax.set_title(figures["families"][family]["config"])
    figure.legend(list(handles.values()), list(handles), fontsize=7, loc="outside right upper")
    with atomic_write(path, "wb") as file:
        figure.savefig(file, format="png", dpi=110)
