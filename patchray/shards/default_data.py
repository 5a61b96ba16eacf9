"""The embedded default data: a synthetic pedestrian dataset rendered on first use and cached, shared by
pretraining, fine-tuning, Tune and the benchmarks."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from patchray.locks import hold
from patchray.shards.report import SUMMARY_JSON


@dataclass
class SyntheticDataConfig:
    """The embedded default data, rendered once and cached under ``dir``."""
    dir: str = os.path.join("~", ".cache", "patchray", "synthetic")
    # Sized so that the default run (render + pretrain) ends within 5 minutes on 2 CPU cores.
    num_crops: int = 6000
    labeled: int = 6000
    seed: int = 0

    def path(self) -> str:
        name = f"seed{self.seed}-n{self.num_crops}-l{self.labeled}"
        return os.path.join(os.path.expanduser(self.dir), name)


# First-run rendering of the default data takes about a minute; a second job waits that long, and more on a
# loaded machine, before it is told why it waits no longer.
SYNTHETIC_LOCK_TIMEOUT_S = 1800.0


def ensure_synthetic(cfg: SyntheticDataConfig, log=print, tag: str = "patchray") -> str:
    """The synthetic default shards, rendered on first use and cached; ``tag`` names the job in its messages.

    Jobs started together (two first runs, Tune trials, a test session) render it once: under a lock beside
    the folder, into a temporary folder renamed into place when whole, so that nobody ever reads, or
    deletes, a half-rendered dataset.
    """
    from patchray.shards.generate import generate_synthetic  # the renderer loads only when there is something to render

    root = Path(cfg.path())
    if (root / SUMMARY_JSON).exists():
        return str(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with hold(root.parent / f".{root.name}.lock", f"the synthetic dataset {root} (rendered by another job)",
              timeout_s=SYNTHETIC_LOCK_TIMEOUT_S, log=log, tag=tag):
        if (root / SUMMARY_JSON).exists():  # rendered by whoever held the lock before us
            return str(root)
        log(f"[{tag}] rendering the synthetic default dataset into {root} (once; cached afterwards)")
        for dead in root.parent.glob(f".{root.name}.rendering-*"):  # we hold the lock: no renderer is alive
            shutil.rmtree(dead, ignore_errors=True)
        scratch = root.parent / f".{root.name}.rendering-{os.getpid()}"
        report = generate_synthetic(scratch, cfg.num_crops, cfg.labeled, cfg.seed, overwrite=True)
        if root.exists():  # a folder without its summary: an interrupted render of an older version; ours
            shutil.rmtree(root)
        os.rename(scratch, root)
        report.out_dir = str(root)  # the summary names where the data is, not where it was rendered
        report.save()
    log(f"[{tag}] rendered {report.written} crops in {len(report.files)} shard(s) -> {root}")
    return str(root)
