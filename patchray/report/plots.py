"""PNG figures people would rather see than read: training curves, grid-position confusion."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # jobs run headless, on cluster nodes too
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_pretrain_curves(history: list[dict], path: str | Path) -> Path:
    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Pretext loss")
    ax_acc.plot(epochs, [h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["val_acc"] for h in history], "s-", label="validation")
    ax_acc.axhline(history[-1]["chance"], color="gray", linestyle="--", label="chance")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Pretext accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
