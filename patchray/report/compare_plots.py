"""Figures of the init comparison's transfer analyses (``patchray.experiments.compare_inits``): the low-shot curve
(test mA against the label budget) and layer-wise transfer (test mA against the number of pretrained blocks).

Each figure is built by a ``*_figure`` function that returns it, so that tests can read its lines, and saved by
the ``plot_*`` function beside it. Rows are the comparison's table rows: a score key maps to ``{"mean", "std"}``
over seeds (None where no run defines it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from patchray.report.plots import _save, plt

# The reference lines of the layer-wise plot: the comparison's runs with no block re-initialised, and none copied.
REFERENCE_STYLE = {"patchtask": {"color": "tab:green", "label": "patchtask, every block (reference)"},
                   "random": {"color": "tab:gray", "label": "random (reference)"}}

MODE_SHIFT = 0.08  # x distance between the modes' points at one k


def _score(row: dict, key: str) -> tuple[float, float] | None:
    cell = row.get(key) or {}
    return None if cell.get("mean") is None else (cell["mean"], cell["std"] or 0.0)


def low_shot_axes(series: dict[str, list[tuple[float, float, float]]], ticks: dict[float, str], xlabel: str,
                  ylabel: str, title: str):
    """The low-shot figure both evaluations draw: per init, (labeled crops, mean, std over seeds) points as a
    line with error bars, on a log x axis whose ticks are the budgets (``ticks``: x -> label)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for init, points in series.items():
        if points:
            xs, means, stds = zip(*sorted(points))
            ax.errorbar(xs, means, yerr=stds, fmt="o-", capsize=3, label=init)
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)])
    ax.minorticks_off()  # the budgets are the ticks; log minor ticks between them say nothing here
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if ax.containers:
        ax.legend()
    return fig


def low_shot_figure(table: list[dict], key: str = "mA"):
    """Test ``key`` against the label budget (log x), one line per init with error bars = std over seeds; a
    budget where an init has no score is left out of its line."""
    series = {init: [(row["budget"], *_score(row, key)) for row in table
                     if row["init"] == init and _score(row, key) is not None]
              for init in dict.fromkeys(row["init"] for row in table)}
    budgets = sorted({row["budget"] for row in table})
    return low_shot_axes(series, {b: str(b) for b in budgets}, "labeled training crops (log scale)", f"test {key}",
                         f"Low-shot curve: fine-tuned test {key} by init")


def plot_low_shot(table: list[dict], path: str | Path, key: str = "mA") -> Path:
    return _save(low_shot_figure(table, key), path)


def layerwise_figure(layer_table: list[dict], reference_table: list[dict], block_count: int, key: str = "mA"):
    """Test ``key`` against k, the trunk blocks copied from the PatchTask pretraining (the rest re-initialised),
    one panel per label budget and one line per mode (error bars = std over seeds); the same budget's random and
    full-PatchTask runs as horizontal reference lines, shaded ± their std."""
    budgets = list(dict.fromkeys(row["budget"] for row in layer_table))
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for init, style in REFERENCE_STYLE.items():
            score = next((_score(r, key) for r in reference_table
                          if r["budget"] == budget and r["init"] == init and _score(r, key) is not None), None)
            if score is not None:
                mean, std = score
                ax.axhline(mean, linestyle="--", linewidth=1, **style)
                ax.axhspan(mean - std, mean + std, color=style["color"], alpha=0.12)
        modes = list(dict.fromkeys(row["mode"] for row in layer_table))
        for i, mode in enumerate(modes):
            points = sorted((row["blocks"], *_score(row, key)) for row in layer_table
                            if row["budget"] == budget and row["mode"] == mode and _score(row, key) is not None)
            if points:
                blocks, means, stds = zip(*points)
                # Modes side by side at each k, so that error bars of equal points (k=0 is one run) stay apart.
                shift = MODE_SHIFT * (i - (len(modes) - 1) / 2)
                ax.errorbar(np.array(blocks) + shift, means, yerr=stds, fmt="o-", capsize=3, label=mode)
        ax.set_xticks(np.arange(block_count + 1))
        ax.set_xlim(-0.3, block_count + 0.3)
        ax.set(xlabel=f"trunk blocks copied from PatchTask (of {block_count}; the rest re-initialised)",
               ylabel=f"test {key}", title=f"Layer-wise transfer, {budget} labels")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def plot_layerwise(layer_table: list[dict], reference_table: list[dict], block_count: int, path: str | Path,
                   key: str = "mA") -> Path:
    return _save(layerwise_figure(layer_table, reference_table, block_count, key), path)
