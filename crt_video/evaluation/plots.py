"""PNG pictures: confusion matrix, training curves, and an activity timeline of a long video.

Figures are built with ``matplotlib.figure.Figure`` and the Agg renderer (no pyplot, no display
needed) and written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

from crt_video.utils.io import atomic_write

# Up to this many classes the row-normalised value is printed in every cell.
CELL_VALUES_MAX_CLASSES = 20
TRAINING_LOG_COLUMNS = ("epoch", "train_loss", "lr")
SCORE_CURVES = {  # log column: (legend, line style), drawn where the task logs it
    "val_mean_class_accuracy": ("val mean class accuracy", "-"),
    "val_top1": ("val top-1", "-"),
    "val_frame_map": ("val frame-mAP", "-"),
    "val_perframe_map": ("val per-frame mAP", "-"),
    "train_top1": ("train top-1", ":"),
}


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows = ground truth) from a matrix of counts.

    Rows without ground truth are left blank; row labels show each class's support.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = len(class_names)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = matrix / support[:, None]
    side = max(6.0, 0.34 * num_classes + 3.0)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="#eeeeee")  # rows without ground truth
    image = ax.imshow(np.ma.masked_invalid(normalised), cmap=cmap, vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")

    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, list(class_names), rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(
        ticks, [f"{name} ({int(n)})" for name, n in zip(class_names, support, strict=True)]
    )
    ax.tick_params(labelsize=9 if num_classes > CELL_VALUES_MAX_CLASSES else 10)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (clips)")
    if title:
        ax.set_title(title)
    # Every cell when there is room; otherwise only the per-class accuracy on the diagonal.
    many = num_classes > CELL_VALUES_MAX_CLASSES
    for row in np.flatnonzero(support > 0):
        for col in [row] if many else range(num_classes):
            value = normalised[row, col]
            ax.text(
                col,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7 if many else 8,
                color="white" if value > 0.5 else "black",
            )
    return _save(fig, path)


def plot_training_curves(
    log_csv: str | os.PathLike, path: str | os.PathLike, title: str = ""
) -> Path:
    """Loss (with the learning rate) and the task's scores per epoch from a training log CSV.

    The CSV has the columns ``TRAINING_LOG_COLUMNS``; ``val_loss`` and the score columns of
    ``SCORE_CURVES`` are drawn where present; empty validation cells (no validation split) are
    skipped.
    """
    log = pd.read_csv(log_csv)
    missing = [c for c in TRAINING_LOG_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"{log_csv} lacks the columns {', '.join(missing)}")
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, score_ax = fig.subplots(1, 2)
    _loss_panel(loss_ax, log)
    _score_panel(score_ax, log)
    for ax in (loss_ax, score_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _numeric(log: pd.DataFrame, column: str) -> pd.Series:
    """The column's numbers, without the empty cells."""
    values = (
        pd.to_numeric(log[column], errors="coerce") if column in log.columns else log["epoch"][:0]
    )
    return values.dropna()


def _loss_panel(ax, log: pd.DataFrame) -> None:
    ax.plot(log["epoch"], log["train_loss"], marker="o", color="tab:blue", label="train loss")
    val_loss = _numeric(log, "val_loss")
    if len(val_loss):
        ax.plot(log["epoch"][val_loss.index], val_loss, marker="o", color="tab:orange",
                label="val loss")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    lr_ax = ax.twinx()
    lr_ax.plot(log["epoch"], log["lr"], color="tab:gray", linestyle="--", label="learning rate")
    lr_ax.set_ylabel("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    lines = ax.get_lines() + lr_ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    ax.set_title("training")


def _score_panel(ax, log: pd.DataFrame) -> None:
    for column, (label, style) in SCORE_CURVES.items():
        values = _numeric(log, column)
        if len(values):
            ax.plot(log["epoch"][values.index], values, style, marker="o", label=label)
    if ax.get_lines():
        ax.legend(loc="lower right")
    if not any(len(_numeric(log, c)) for c in SCORE_CURVES if c.startswith("val_")):
        ax.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("score")
    ax.set_title("validation and training scores")


def plot_timeline(
    windows: Sequence[tuple[float, float, str, float]],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Predicted activities of a long video: one bar per (start s, end s, label, score) window.

    Each label gets its own row and colour; a bar's opacity grows with its score.
    """
    if not windows:
        raise ValueError("no windows to plot")
    labels = sorted({label for _, _, label, _ in windows})
    row = {label: i for i, label in enumerate(labels)}
    # Strong colours first; the paler ones only when more than ten activities appear.
    tab20 = colormaps["tab20"].colors
    palette = list(tab20[0::2]) + list(tab20[1::2]) + list(colormaps["tab20b"].colors)
    colour = {label: palette[i % len(palette)] for i, label in enumerate(labels)}

    fig = Figure(figsize=(12, 1.6 + 0.4 * len(labels)), layout="constrained")
    ax = fig.add_subplot()
    for start, end, label, score in windows:
        alpha = 0.3 + 0.7 * float(np.clip(score, 0.0, 1.0))
        ax.broken_barh(
            [(start, end - start)],
            (row[label] - 0.4, 0.8),
            color=colour[label],
            alpha=alpha,
            linewidth=0,
        )
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    start, end = min(w[0] for w in windows), max(w[1] for w in windows)
    end = max(end, start + 1.0)  # a zero-length video still gets a visible axis
    ax.set_xlim(start, end)
    ax.xaxis.set_major_locator(MultipleLocator(_tick_interval(end - start)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda seconds, _: _clock(seconds)))
    ax.set_xlabel("time (h:mm:ss)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[Patch(color=colour[label], label=label) for label in labels],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=9,
        title="activity (opacity = score)",
    )
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _tick_interval(span_s: float, max_ticks: int = 12) -> float:
    """A round clock interval (seconds) giving at most ``max_ticks`` ticks over ``span_s``."""
    for interval in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if span_s / interval <= max_ticks:
            return interval
    return 3600 * math.ceil(span_s / 3600 / max_ticks)


def _clock(seconds: float) -> str:
    total = max(0, math.floor(seconds + 0.5))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
    return Path(path)
