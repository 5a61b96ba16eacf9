"""First-run rendering of the synthetic default data: once, whole, whoever asks at the same time."""
import json
import os
import signal
import subprocess
import sys
import textwrap

from patchray.shards.default_data import SyntheticDataConfig

SCRIPT = textwrap.dedent("""
    import sys
    from patchray.shards.default_data import SyntheticDataConfig
    from patchray.shards.default_data import ensure_synthetic
    cfg = SyntheticDataConfig(dir=sys.argv[1], num_crops=24, labeled=24, seed=7)
    print("RESULT", ensure_synthetic(cfg), flush=True)
""")


def _start(folder):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_first_runs_render_the_default_data_once_and_both_get_it_whole(tmp_path):
    first, second = _start(tmp_path), _start(tmp_path)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    root = SyntheticDataConfig(dir=str(tmp_path), num_crops=24, labeled=24, seed=7).path()
    assert all(f"RESULT {root}" in out for out in outputs)
    assert sum(out.count("rendering the synthetic default dataset") for out in outputs) == 1, outputs
    summary = json.loads((tmp_path / root / "summary.json").read_text())
    assert summary["out_dir"] == root and summary["crops_written"] == 48
    assert len(list((tmp_path / root).rglob("*.parquet"))) >= 2
    # nothing half-made left beside it: no scratch folder of either process
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [root.rsplit("/", 1)[1]]


def test_a_render_killed_midway_leaves_nothing_that_looks_like_the_dataset(tmp_path):
    cfg = SyntheticDataConfig(dir=str(tmp_path), num_crops=2000, labeled=0, seed=7)
    script = SCRIPT.replace("num_crops=24, labeled=24", "num_crops=2000, labeled=0")
    # its own process group, killed whole below: the render's pool workers die with it, as with a Ctrl-C or a
    # job's kill, instead of living on as orphans after the test
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    import time

    deadline = time.time() + 120
    while not any(p.name.startswith(f".{cfg.path().rsplit('/', 1)[1]}.rendering-") for p in tmp_path.iterdir()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from pathlib import Path

    assert not Path(cfg.path()).exists()  # only the scratch folder, never the dataset's own name
    # the next run renders it (the dead run's lock is no obstacle) and clears the dead run's scratch
    from patchray.shards.default_data import ensure_synthetic

    assert ensure_synthetic(cfg, log=lambda *_: None) == cfg.path()
    assert json.loads((Path(cfg.path()) / "summary.json").read_text())["crops_written"] == 2000
    assert [p.name for p in tmp_path.iterdir() if ".rendering-" in p.name] == []
