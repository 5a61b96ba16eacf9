"""PNG figures people would rather see than read: training curves, grid-position confusion."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # jobs run headless, on cluster nodes too
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_pretrain_curves(history: list[dict], path: str | Path) -> Path:
    """Pretext loss and accuracy per epoch; with the online probe (``probe_mA`` in the history), a third panel:
    the attribute mA of linear and kNN probes on the frozen trunk, from the untrained trunk (epoch 0) on."""
    epochs = [h["epoch"] + 1 for h in history]
    probed = [h for h in history if h.get("probe_mA") is not None or h.get("knn_mA") is not None]
    fig, axes = plt.subplots(1, 3 if probed else 2, figsize=(15 if probed else 10, 4))
    ax_loss, ax_acc = axes[0], axes[1]
    ax_loss.plot(epochs, [h["loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Pretext loss")
    ax_acc.plot(epochs, [h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["val_acc"] for h in history], "s-", label="validation")
    ax_acc.axhline(history[-1]["chance"], color="gray", linestyle="--", label="chance")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Pretext accuracy", ylim=(0, 1))
    if probed:
        ax_probe = axes[2]
        first = history[0]
        for key, label, marker in (("probe_mA", "linear probe", "o-"), ("knn_mA", "kNN probe", "s-")):
            points = [(0, first[f"init_{key}"])] if first.get(f"init_{key}") is not None else []
            points += [(h["epoch"] + 1, h[key]) for h in probed if h.get(key) is not None]
            if points:
                ax_probe.plot(*zip(*points), marker, label=label)
        ax_probe.axhline(0.5, color="gray", linestyle="--", label="chance (mA)")
        ax_probe.set(xlabel="epoch (0: untrained trunk)", ylabel="val mA",
                     title="Attribute probe of the frozen trunk")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def plot_grid_confusion(confusion: np.ndarray, cols: int, rows: int, path: str | Path) -> Path:
    """Left: the full cell-by-cell confusion. Right: per cell of the grid, how often it is recognised."""
    confusion = np.asarray(confusion, dtype=float)
    per_true = confusion.sum(1, keepdims=True)
    normalised = np.divide(confusion, per_true, out=np.zeros_like(confusion), where=per_true > 0)
    fig, (ax_full, ax_grid) = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [3, 1.4]})
    image = ax_full.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    ax_full.set(xlabel="predicted cell", ylabel="true cell", title="Validation confusion (row-normalised)")
    fig.colorbar(image, ax=ax_full, fraction=0.046)
    recall = np.diag(normalised).reshape(rows, cols)
    image = ax_grid.imshow(recall, cmap="magma", vmin=0, vmax=1)
    for r in range(rows):
        for c in range(cols):
            ax_grid.text(c, r, f"{recall[r, c]:.2f}", ha="center", va="center",
                         color="white" if recall[r, c] < 0.6 else "black", fontsize=8)
    ax_grid.set(title="Recall per grid cell", xticks=range(cols), yticks=range(rows))
    fig.colorbar(image, ax=ax_grid, fraction=0.08)
    return _save(fig, path)


def plot_finetune_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([h["epoch"] + 1 for h in history], [h["loss"] for h in history], "o-")
    ax_loss.set(xlabel="epoch", ylabel="sum of attribute cross-entropies", title="Training loss")
    # Only the scores the attribute set defines: no mAP line without a binary attribute.
    plotted = 0
    for key, label in (("val_mA", "validation mA"), ("val_mAP", "validation mAP"),
                       ("val_parse27k_mAP", "validation mAP (parse27k)")):
        scored = [h for h in history if h.get(key) is not None]
        if scored:
            ax_score.plot([h["epoch"] + 1 for h in scored], [h[key] for h in scored], "s-", label=label)
            plotted += 1
    ax_score.set(xlabel="epoch", ylabel="score", title="Attributes (validation)", ylim=(0, 1))
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if plotted:
        ax_score.legend()
    else:
        ax_score.text(0.5, 0.5, "no validation score", ha="center", va="center", transform=ax_score.transAxes)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_init_bars(table: list[dict], path: str | Path) -> Path:
    """Test mA and mAP per label budget, one bar per init, error bars = std over seeds. A panel only for a
    score some run defines (no mAP panel when the attributes have no binary one); an undefined value draws
    no bar."""
    budgets = sorted({row["budget"] for row in table})
    inits = list(dict.fromkeys(row["init"] for row in table))
    keys = [k for k in ("mA", "mAP") if k == "mA" or any((r.get(k) or {}).get("mean") is not None for r in table)]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    width = 0.8 / len(inits)
    for ax, key in zip(axes[0], keys):
        for i, init in enumerate(inits):
            rows = [next(r for r in table if r["budget"] == b and r["init"] == init) for b in budgets]
            cells = [r.get(key) or {} for r in rows]
            means = [np.nan if c.get("mean") is None else c["mean"] for c in cells]
            stds = [0 if c.get("std") is None else c["std"] for c in cells]
            ax.bar(np.arange(len(budgets)) + (i - (len(inits) - 1) / 2) * width, means, width, yerr=stds,
                   capsize=3, label=init)
        ax.set(xticks=range(len(budgets)), xticklabels=[str(b) for b in budgets], xlabel="labeled training crops",
               ylabel=f"test {key}", title=f"Test {key} by init", ylim=(0, 1))
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_init_curves(runs: list[dict], path: str | Path) -> Path:
    """Validation mA over epochs, mean over seeds, one panel per budget and one line per init."""
    budgets = sorted({r["budget"] for r in runs})
    values = [v for r in runs for _, v in r["curve"] if v is not None]
    # From 0.4 up while every score is above it (binary attributes sit at >= 0.5 by chance), lower for sets
    # such as a 4-way Orientation alone (chance 0.25), so that no curve leaves the panel.
    low = min(0.4, max(0.0, np.floor(10 * min(values)) / 10)) if values else 0.4
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for init in dict.fromkeys(r["init"] for r in runs):
            curves = [{e: v for e, v in r["curve"] if v is not None}
                      for r in runs if r["budget"] == budget and r["init"] == init]
            epochs = sorted(set().union(*curves)) if curves else []
            if epochs:
                ax.plot(epochs, [np.mean([c[e] for c in curves if e in c]) for e in epochs], "o-", label=init)
        ax.set(xlabel="epoch", ylabel="validation mA", title=f"{budget} labels", ylim=(low, 1))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no validation score", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)



def plot_tune_objective(trials: list[dict], metric: str, path: str | Path) -> Path:
    """Each trial's objective in launch order, coloured by status, with the best completed one so far.
    ``trials``: dicts with ``objective``, ``status`` and ``epochs``."""
    fig, ax = plt.subplots(figsize=(8, 4))
    colours = {"completed": "tab:blue", "stopped by ASHA": "tab:orange", "stopped by the time budget": "tab:grey",
               "diverged": "tab:red", "error": "tab:red"}
    for status, colour in colours.items():
        points = [(i + 1, t["objective"], t["epochs"]) for i, t in enumerate(trials)
                  if t["status"] == status and t["objective"] is not None]
        if points:
            xs, ys, eps = zip(*points)
            ax.scatter(xs, ys, s=[20 + 12 * e for e in eps], color=colour, label=status, alpha=0.8)
    best, line = None, []
    for t in trials:
        if t["status"] == "completed" and t["objective"] is not None:
            best = t["objective"] if best is None else max(best, t["objective"])
        line.append(best)
    if any(b is not None for b in line):
        ax.step(range(1, len(trials) + 1), [b if b is not None else np.nan for b in line], where="post",
                color="black", linewidth=1, label="best completed so far")
    ax.set(xlabel="trial (launch order; marker size = epochs run)", ylabel=f"validation {metric}",
           title="Search progress")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_importances(importances: dict[str, float], path: str | Path, basis: str = "") -> Path:
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.7))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="fANOVA importance (Optuna; sums to 1)", xlim=(0, 1),
           title="Which settings mattered" + (f"\n({basis})" if basis else ""))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_heatmap(rows: list, cols: list, matrix: list[list[float]], metric: str, path: str | Path) -> Path:
    """Best objective per (patch size, grid) cell; "no result": never tried, or the patch does not fit."""
    data = np.array(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2.5, 1.0 * len(rows) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set(xlabel="grid (cols x rows)", ylabel="patch size (px)", title=f"Best validation {metric}")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            text = "no result" if np.isnan(data[i, j]) else f"{data[i, j]:.3f}"
            ax.text(j, i, text, ha="center", va="center", color="black",
                    fontsize=9, bbox={"facecolor": "white", "alpha": 0.6, "linewidth": 0})
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_replay(result: dict, path: str | Path) -> Path:
    """The replayed searches: mean (what the goal compares), median and 90th-percentile regret, and the share of
    the grid's epochs spent."""
    names = list(result["strategies"])
    stats = [result["strategies"][n] for n in names]
    labels = [n.replace(" (", "\n(") for n in names]   # "random+asha\n(no repeats)": labels that fit
    fig, (ax_regret, ax_epochs) = plt.subplots(1, 2, figsize=(12, 4.2))
    x = np.arange(len(names))
    for offset, key, label in ((-0.27, "mean_regret", "mean"), (0.0, "median_regret", "median"),
                               (0.27, "p90_regret", "90th percentile")):
        ax_regret.bar(x + offset, [s[key] for s in stats], 0.27, label=label)
    ax_regret.axhline(result["goal"]["median_regret_max"], color="black", linestyle="--", linewidth=1,
                      label="goal (median)")
    ax_regret.set(xticks=x, ylabel="regret (points)", title=f"regret over {result['repeats']} replays")
    ax_regret.set_xticklabels(labels, fontsize=8)
    ax_regret.legend(fontsize=8)
    ax_epochs.bar(x, [100 * s["mean_epochs"] / result["grid_epochs"] for s in stats], color="tab:grey")
    ax_epochs.axhline(100 * result["goal"]["epoch_share_max"], color="black", linestyle="--", linewidth=1)
    ax_epochs.set(xticks=x, ylabel="% of the grid's epochs", title="epochs spent (mean)")
    ax_epochs.set_xticklabels(labels, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_throughput(rates: dict[str, float], path: str | Path, title: str, unit: str = "patches/s") -> Path:
    """Horizontal bars, one per contender, each labelled with its rate."""
    names, values = list(rates), [rates[n] for n in rates]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(names) + 1.6))
    bars = ax.barh(names, values, color=["#bbbbbb"] + ["C0"] * (len(names) - 1))
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3)
    ax.invert_yaxis()
    ax.set(xlabel=unit, title=title, xlim=(0, max(values) * 1.2 if values else 1))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_memory(series: dict[str, list[tuple[float, float]]], path: str | Path, title: str) -> Path:
    """Memory over time (MiB), one line per (run, what) series of (seconds, MiB) samples."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, points in series.items():
        if points:
            seconds, mib = zip(*points)
            ax.plot(seconds, mib, label=label)
    ax.set(xlabel="seconds", ylabel="MiB", title=title)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_probe_agreement(result: dict, metric: str, path: str | Path) -> Path:
    """One point per pretext configuration: its probe score against its fine-tuning objective (best over the
    fine-tuning settings), labelled, with the rank correlations in the title."""
    rows = result["pretext"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    xs, ys = [100 * r["probe"] for r in rows], [100 * r["finetune"] for r in rows]
    ax.scatter(xs, ys, color="C0")
    for x, y, r in zip(xs, ys, rows):
        label = ", ".join(str(v) for v in r["params"].values())
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)

    def number(key: str) -> str:
        return "n/a" if result.get(key) is None else f"{result[key]:.2f}"

    ax.set(xlabel=f"linear probe val {metric} (points)", ylabel=f"fine-tuning val {metric} (points)",
           title=f"probe vs fine-tuning: Spearman {number('spearman')}, Kendall {number('kendall')}")
    ax.grid(alpha=0.3)
    return _save(fig, path)
