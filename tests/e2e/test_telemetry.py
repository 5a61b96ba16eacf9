"""Dashboard metrics: while a pretraining runs, the node's Prometheus endpoint serves patchray's gauges."""
import re
import threading
import time
import urllib.request

import pytest
from helpers import small_config

from patchray.train.pretrain import run_pretrain
from patchray.train.telemetry import GAUGES

pytestmark = pytest.mark.slow
SAMPLE = re.compile(r'^ray_(patchray_\w+)\{([^}]*)\}\s+([-+0-9.eE]+|NaN)$')


def _scrape(url: str, seen: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            text = ""
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if match:
                tags = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
                seen[(match.group(1), tags.get("worker"), tags.get("split"), tags.get("run"))] = float(match.group(3))
        stop.wait(0.5)


def test_training_gauges_reach_the_prometheus_endpoint_with_sane_values(ray_cluster, synthetic_small, probe_labeled,
                                                                        tmp_path):
    node = next(n for n in ray_cluster.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    seen: dict = {}
    stop = threading.Event()
    scraper = threading.Thread(target=_scrape, args=(url, seen, stop), daemon=True)
    scraper.start()
    summary = run_pretrain(small_config(tmp_path, "watched", [synthetic_small / "unlabeled"], epochs=2,
                                        probe={"data": [str(probe_labeled)], "train_crops": 32, "val_crops": 32}))
    deadline = time.time() + 30  # the last epoch's values need one export interval to arrive
    while time.time() < deadline and seen.get(("patchray_epoch", "all", "train", "watched")) != 2:
        time.sleep(0.5)
    stop.set()
    scraper.join(10)

    run = {(name, worker, split): value for (name, worker, split, r), value in seen.items() if r == "watched"}
    assert {name for name, _, _ in run} == set(GAUGES), sorted(run)
    assert run[("patchray_epoch", "all", "train")] == 2
    assert run[("patchray_patches_per_second", "all", "train")] > 50
    assert 0 <= run[("patchray_data_wait_fraction", "all", "train")] <= 1
    assert 0 < run[("patchray_loss", "all", "train")] < 10
    assert run[("patchray_pretext_accuracy", "all", "val")] == pytest.approx(summary["val_acc"], abs=1e-6)
    assert run[("patchray_rows_skipped", "all", "all")] == 0
    assert run[("patchray_probe_ma", "all", "linear")] == pytest.approx(summary["probe"]["mA"], abs=1e-6)
    assert run[("patchray_probe_ma", "all", "knn")] == pytest.approx(summary["probe"]["knn_mA"], abs=1e-6)
    # each worker's live gauges too (ranks 0 and 1)
    assert {w for name, w, _ in run if name == "patchray_patches_per_second"} >= {"0", "1", "all"}
