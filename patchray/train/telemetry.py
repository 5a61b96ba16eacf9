"""Live training numbers for the Ray dashboard and Prometheus, through Ray's metrics API.

Each training worker sets its own throughput and data-wait gauges while it
trains (tag ``worker`` = its rank); rank 0 sets the epoch's totals (``worker`` =
"all"), loss, accuracies and the rows skipped so far by reason. Ray exports them
from every node's metrics endpoint with a ``ray_`` prefix, e.g.
``ray_patchray_patches_per_second{run="pretrain",worker="all"}``.
"""
from __future__ import annotations

from collections import Counter

# name -> what it measures (all tagged with the run name)
GAUGES = {
    "patchray_patches_per_second": "training patches per second (worker=<rank>: that worker; worker=all: the run)",
    "patchray_data_wait_fraction": "share of training time spent waiting for the next batch",
    "patchray_loss": "training loss (live on each worker; the epoch's mean for worker=all)",
    "patchray_pretext_accuracy": "pretext accuracy (split=train: training batches; split=val: the validation set)",
    "patchray_epoch": "epochs finished",
    "patchray_probe_ma": "online probe: attribute mA of frozen trunk features (split=linear or knn), when probed",
    "patchray_rows_skipped": "bad rows skipped so far in the run (split=<reason>, or all)",
}


class TrainingMetrics:
    def __init__(self, run: str, rank: int):
        from ray.util.metrics import Gauge

        self.run, self.rank = run, str(rank)
        keys = ("run", "worker", "split")
        self.gauges = {name: Gauge(name, description=text, tag_keys=keys) for name, text in GAUGES.items()}

    def _set(self, name: str, value: float, worker: str, split: str = "train") -> None:
        self.gauges[name].set(float(value), tags={"run": self.run, "worker": worker, "split": split})

    def progress(self, *, patches_per_s: float, data_wait_frac: float, loss: float, acc: float) -> None:
        """This worker, mid-epoch."""
        self._set("patchray_patches_per_second", patches_per_s, self.rank)
        self._set("patchray_data_wait_fraction", data_wait_frac, self.rank)
        self._set("patchray_loss", loss, self.rank)
        self._set("patchray_pretext_accuracy", acc, self.rank)

    def epoch(self, metrics: dict, skipped_so_far: Counter) -> None:
        """The whole run, after an epoch (rank 0 calls this with numbers summed over workers)."""
        self._set("patchray_patches_per_second", metrics["patches_per_s"] * metrics["workers"], "all")
        self._set("patchray_data_wait_fraction", metrics["data_wait_frac"], "all")
        self._set("patchray_loss", metrics["loss"], "all")
        self._set("patchray_pretext_accuracy", metrics["train_acc"], "all")
        self._set("patchray_pretext_accuracy", metrics["val_acc"], "all", split="val")
        self._set("patchray_epoch", metrics["epoch"] + 1, "all")
        for key, split in (("probe_mA", "linear"), ("knn_mA", "knn")):
            if metrics.get(key) is not None:
                self._set("patchray_probe_ma", metrics[key], "all", split=split)
        self._set("patchray_rows_skipped", sum(skipped_so_far.values()), "all", split="all")
        for reason, count in skipped_so_far.items():
            self._set("patchray_rows_skipped", count, "all", split=reason)
