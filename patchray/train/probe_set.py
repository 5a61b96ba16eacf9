"""The labeled crops an online probe is fitted and scored on: where they come from and which ones.

A pretraining run probes its trunk on a small fixed set of labeled crops: ``train_crops`` of the train split and
``val_crops`` of the val split, each drawn by crop id (a hash of the run's seed and the id, as fine-tuning draws
its label budget), so the set does not depend on how the shards are ordered or cut, and every probe of a run,
resumed or not, sees the same crops. They are decoded once, on the driver, as fine-tuning decodes them.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchray.shards.attributes import AttributeSet

# Seeds of the two draws, apart from the patch sampler's epochs (>= -1) and fine-tuning's draws (-2, -3).
PROBE_TRAIN_EPOCH = -4
PROBE_VAL_EPOCH = -5
SIBLING = "labeled"  # the synthetic default and make_shards put labeled shards in OUT/labeled beside OUT/unlabeled


@dataclass
class ProbeSet:
    """Decoded labeled crops (uint8 [N, H, W, 3]) with their stored labels ([N, A], 0 = N/A)."""
    train_pixels: np.ndarray
    train_labels: np.ndarray
    val_pixels: np.ndarray
    val_labels: np.ndarray
    attributes: AttributeSet
    folders: list[str]
    skipped: dict = field(default_factory=dict)  # bad rows met among the drawn crops, by reason

    def describe(self) -> str:
        skipped = f", {sum(self.skipped.values())} bad row(s) skipped" if self.skipped else ""
        return (f"{len(self.train_labels)} train + {len(self.val_labels)} val labeled crops from "
                f"{', '.join(self.folders)}{skipped}")


def _has_split(folder: Path, split: str) -> bool:
    return bool(glob.glob(str(folder / f"*-{split}-*.parquet")))


def labeled_sibling(pretrain_data: list[str]) -> list[str]:
    """The folder named ``labeled`` beside the pretraining data (its first local folder or glob that has one),
    when it holds train and val shards; [] otherwise (URIs are not looked beside)."""
    for spec in pretrain_data:
        if "://" in spec:
            continue
        path = Path(spec).expanduser()
        folder = path if path.is_dir() else path.parent
        sibling = folder.parent / SIBLING
        if sibling.resolve() != folder.resolve() and _has_split(sibling, "train") and _has_split(sibling, "val"):
            return [str(sibling)]
    return []


def probe_folders(cfg, pretrain_data: list[str]) -> list[str]:
    """Where a run's probe crops come from (``cfg`` a ``ProbeConfig``): ``cfg.data``, else the labeled sibling;
    [] when the probe is off or there is nothing to probe on."""
    if not cfg.enabled:
        return []
    return list(cfg.data) or labeled_sibling(pretrain_data)


def read_probe_set(folders: list[str], cfg, width: int, height: int, crop_fit: str, seed: int) -> ProbeSet:
    """``cfg.train_crops`` and ``cfg.val_crops`` crops of the folders' train and val splits (fewer if a split
    is smaller), drawn by crop id with ``seed``, decoded at the pretraining's crop size. Train and val must
    label the same attributes."""
    from patchray.shards.reader import open_shards
    from patchray.train.finetune import first_in_hash_order, read_labeled, split_crop_ids

    splits = {}
    for split, count, epoch in (("train", cfg.train_crops, PROBE_TRAIN_EPOCH),
                                ("val", cfg.val_crops, PROBE_VAL_EPOCH)):
        shards = open_shards([os.path.join(folder, f"*-{split}-*.parquet") for folder in folders])
        chosen = first_in_hash_order(split_crop_ids(shards), count, seed, epoch)
        splits[split] = shards, read_labeled(shards, width, height, f"probe {split}", crop_fit, chosen)
    (train_shards, (train_pixels, train_labels, train_skipped)), (val_shards, (val_pixels, val_labels, val_skipped)) \
        = splits["train"], splits["val"]
    if train_shards.attributes.columns != val_shards.attributes.columns:
        raise ValueError(f"probe data {folders}: the train split labels {list(train_shards.attributes.names)} but "
                         f"the val split {list(val_shards.attributes.names)}")
    skipped = {k: train_skipped.get(k, 0) + val_skipped.get(k, 0) for k in {*train_skipped, *val_skipped}}
    return ProbeSet(train_pixels, train_labels, val_pixels, val_labels, train_shards.attributes, list(folders),
                    skipped)


def probe_pretraining(folder: str | Path, cfg, labeled_folders: list[str], seed: int) -> dict:
    """The online probe's scores (``patchray.probe.probe_scores``) for a finished pretraining's trunk, here on
    the CPU: its ``checkpoints/trunk.pt`` fed as the run fed it (its crop size and recorded normalisation),
    embedded ``cfg.pool``-ed, probed on ``cfg``'s crop counts of ``labeled_folders`` drawn with ``seed``. With
    ``"probe_s"``, the seconds it took. What ``objective: probe`` scores a search trial by."""
    import time

    import torch

    from patchray import config as configlib
    from patchray.accel import channels_last_for, to_memory_format
    from patchray.models import build_trunk
    from patchray.models.init import parse_init, recorded_normalization
    from patchray.probe import crop_normalizer, embed, probe_scores
    from patchray.train.config import PretrainConfig

    started = time.perf_counter()
    folder = Path(folder)
    pretrain = configlib.load(PretrainConfig, folder / "config.yaml")
    trunk = build_trunk(pretrain.model)
    trunk.load_state_dict(torch.load(folder / "checkpoints" / "trunk.pt", map_location="cpu", weights_only=True))
    # Channels-last as the run trained it (on by default): the frozen trunk embeds ~1.7x faster on the CPU.
    trunk = to_memory_format(trunk, channels_last_for(pretrain.channels_last, torch.device("cpu"))).eval()
    normalize = crop_normalizer(recorded_normalization(parse_init(f"patchtask:{folder}")))
    task = pretrain.task
    probe = read_probe_set(labeled_folders, cfg, task.crop_width, task.crop_height, pretrain.input.crop_fit, seed)
    train, val = (embed(trunk, pixels, normalize, "cpu", pool=cfg.pool) for pixels in (probe.train_pixels,
                                                                                        probe.val_pixels))
    scores = probe_scores(train, probe.train_labels, val, probe.val_labels, probe.attributes, k=cfg.k, l2=cfg.l2)
    return scores | {"probe_s": time.perf_counter() - started, "probe_crops": probe.describe()}
