"""Online probe of a pretraining trunk: how well frozen trunk features predict person attributes.

Every few epochs of PatchTask pretraining, a fixed set of labeled crops is embedded with the current trunk
(:func:`embed`), a linear probe (:func:`linear_probe`) and a kNN probe (:func:`knn_probe`) are fitted on the
train crops and scored on the val crops with the fine-tuning metrics (``attribute_metrics``), so that a
pretraining run shows whether its features are getting more useful for the downstream task, not only whether
its pretext loss falls. Pure torch/numpy, no Ray: the training loop calls it on whatever device it has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchray.metrics import attribute_metrics, to_jsonable
from patchray.shards.attributes import AttributeSet

from .features import POOLS, Normalize, Pool, crop_normalizer, embed, feature_dim, standardise
from .knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_probe
from .linear import DEFAULT_L2, linear_probe

__all__ = [
    "ProbeConfig",
    "probe_scores",
    "embed",
    "feature_dim",
    "crop_normalizer",
    "standardise",
    "linear_probe",
    "knn_probe",
    "Normalize",
    "Pool",
    "DEFAULT_K",
    "DEFAULT_L2",
    "DEFAULT_TEMPERATURE",
]


@dataclass
class ProbeConfig:
    """When and on what the online probe of pretraining runs (``probe:`` in a pretraining config)."""
    enabled: bool = True  # false: no probe
    every: int = 1  # epochs between probes (the last epoch is always probed, and the untrained trunk first)
    # Labeled crops the probes are fitted on and scored on, drawn by crop id from the train and val splits. 200 + 200
    # keep the probe within 10% of the default job on 2 CPU cores (embedding is the cost: ~19 ms a crop there).
    train_crops: int = 200
    val_crops: int = 200
    k: int = DEFAULT_K  # neighbours of the kNN probe
    l2: float = DEFAULT_L2  # penalty of the linear probe (per-example mean loss + l2/2 |W|^2)
    # Folders of labeled shards (*-train-*, *-val-*) to draw the crops from; empty: the pretraining data's labeled
    # sibling (a folder named "labeled" beside it, as the synthetic default and make_shards lay data out), and no
    # probe if there is none.
    data: list[str] = field(default_factory=list)
    pool: Pool = "avgmax"  # how the trunk's map becomes a feature vector (see patchray.probe.features)

    def __post_init__(self):
        for name in ("every", "train_crops", "val_crops", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"probe {name} must be an integer >= 1, got {value!r}")
        if isinstance(self.l2, bool) or not isinstance(self.l2, (int, float)) or not (
                math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"probe l2 must be a finite number >= 0, got {self.l2!r}")
        if not isinstance(self.data, list) or not all(isinstance(path, str) and path for path in self.data):
            raise ValueError(f"probe data must be a list of non-empty paths, got {self.data!r}")
        if self.pool not in POOLS:
            raise ValueError(f"probe pool must be one of {POOLS}, got {self.pool!r}")


def probe_scores(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
                 val_labels: np.ndarray, attributes: AttributeSet, *, k: int = DEFAULT_K, l2: float = DEFAULT_L2,
                 temperature: float = DEFAULT_TEMPERATURE, balanced: bool = True) -> dict[str, Any]:
    """Both probes fitted on the train features [N, D] and stored labels [N, A] (0 = N/A), scored on the val
    ones: ``{"probe_mA", "probe_mAP", "knn_mA", "knn_mAP", "probe_attributes": {name: balanced accuracy}}``,
    the means and balanced accuracies of protocol ``balanced`` of ``attribute_metrics``. A number that is
    undefined is None, as ``attribute_metrics`` has it NaN (mAP without a binary attribute that has a labeled
    positive val crop; an attribute without a labeled val crop, left out of the mA too). Deterministic."""
    linear = attribute_metrics(linear_probe(train_features, train_labels, val_features, attributes,
                                            l2=l2, balanced=balanced), val_labels, attributes)
    knn = attribute_metrics(knn_probe(train_features, train_labels, val_features, attributes,
                                      k=k, temperature=temperature, balanced=balanced), val_labels, attributes)
    return to_jsonable({
        "probe_mA": linear["mA"],
        "probe_mAP": linear["mAP"],
        "knn_mA": knn["mA"],
        "knn_mAP": knn["mAP"],
        "probe_attributes": {name: entry["balanced_accuracy"] for name, entry in linear["attributes"].items()},
    })
