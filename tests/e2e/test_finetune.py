"""Attribute fine-tuning (and the init comparison) end to end on a real local Ray cluster."""
import json

import pytest
import torch

from patchray import config as configlib
from patchray.models import AttributeNet, build_trunk
from patchray.shards import PARSE27K
from patchray.train.config import FinetuneConfig
from patchray.train.finetune import run_finetune
from patchray.train.identity import RunMismatchError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def labeled_small(tmp_path_factory):
    from patchray.shards.generate import generate_synthetic

    root = tmp_path_factory.mktemp("labeled")
    generate_synthetic(root, num_crops=0, labeled=480, seed=5, workers=2, progress=False)
    return root / "labeled"


@pytest.fixture(scope="module")
def pretext_checkpoint(tmp_path_factory):
    from patchray.models import PretextNet

    folder = tmp_path_factory.mktemp("pretrained")
    (folder / "checkpoints").mkdir()
    torch.manual_seed(0)
    net = PretextNet(build_trunk("tiny"), 18)
    torch.save(net.state_dict(), folder / "checkpoints" / "pretext.pt")
    return folder, net


def _cfg(tmp_path, name, data, **overrides):
    base = {"out": str(tmp_path), "name": name, "data": [str(data)], "epochs": 2, "crops_per_step": 16}
    return configlib.build(FinetuneConfig, base | overrides)


def _split_coordinators() -> int:
    """Ray Data split coordinators (``streaming_split``'s actor) the session's cluster has started, dead or alive."""
    import ray
    from ray.util.state import list_actors

    return len(list_actors(address=ray.get_runtime_context().gcs_address,
                           filters=[("class_name", "=", "SplitCoordinator")], limit=10000,
                           raise_on_missing_output=False))


try:  # the [tensorboard] extra: the tracking checks run where it is installed (CI installs it)
    from tensorboard.backend.event_processing import event_accumulator as EVENTS
except ImportError:
    EVENTS = None


def test_finetune_from_patchtask_writes_metrics_and_resumes(ray_cluster, labeled_small, pretext_checkpoint,
                                                            tmp_path):
    folder, pretext = pretext_checkpoint
    tracked = {"tracking": "tensorboard"} if EVENTS else {}
    coordinators = _split_coordinators()
    summary = run_finetune(_cfg(tmp_path, "ft", labeled_small, init=f"patchtask:{folder}", labels=100, **tracked))
    out = tmp_path / "ft"
    assert summary["labels"] == 100 and summary["epochs"] == 2
    # two workers share the stream through Ray Data's split coordinator (one-worker runs go without: below)
    assert summary["resources"].startswith("2 training worker(s)") and _split_coordinators() == coordinators + 1
    for split in ("val", "test"):
        assert 0.0 <= summary[split]["mA"] <= 1.0 and 0.0 <= summary[split]["mAP"] <= 1.0
    test = json.loads((out / "test_metrics.json").read_text())
    assert set(test["attributes"]) == set(PARSE27K.names)
    assert sum(a["count"] for a in test["attributes"].values()) > 0
    table = (out / "test_metrics.md").read_text()
    assert "| Orientation |" in table and "mA" in table
    assert "copied 16 of 16 trunk tensors, skipped 0" in (out / "transfer.txt").read_text()
    assert (out / "curves.png").stat().st_size > 0
    state = torch.load(out / "checkpoints" / "model.pt", weights_only=True)
    net = AttributeNet(build_trunk("tiny"), [a.num_classes for a in PARSE27K])
    net.load_state_dict(state)
    # the trunk started from the pretext checkpoint (close to it) and training moved it
    key = next(k for k in state if k.startswith("trunk.") and k.endswith("weight"))
    assert not torch.equal(state[key], pretext.state_dict()[key])
    assert torch.allclose(state[key], pretext.state_dict()[key], atol=0.5)
    if EVENTS:  # each epoch's validation as Ray Train's controller received it, read back by TensorBoard
        events = EVENTS.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        scalars = events.Scalars("val_mA")  # float32 in the event file
        assert [e.step for e in scalars] == [h["epoch"] + 1 for h in history]
        assert [e.value for e in scalars] == pytest.approx([h["val_mA"] for h in history], rel=1e-6)
        assert [e.value for e in events.Scalars("summary/test_mA")] == pytest.approx([summary["test"]["mA"]])
        assert "curves" in events.Tags()["images"]
    rows = summary["rows_per_epoch"]
    assert rows["in_stream"] == 100 and rows["trained"] + rows["skipped"] + rows["dropped"] == 100
    # the same command again resumes after its last epoch: no epoch trained twice, the history kept byte for byte
    # (an epoch trained again would have new timings), the same final weights
    before = (out / "metrics.jsonl").read_text()
    lines = []
    again = run_finetune(_cfg(tmp_path, "ft", labeled_small, init=f"patchtask:{folder}", labels=100),
                         log=lines.append)
    assert any(line.startswith("[finetune] resuming after epoch 2 from ") for line in lines), lines
    assert (out / "metrics.jsonl").read_text() == before and again["epochs"] == 2
    resumed = torch.load(out / "checkpoints" / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[k], v) for k, v in state.items())
    # another label budget under the same name is another run: refused, and transfer.txt / config.yaml untouched
    written = {name: (out / name).read_text() for name in ("config.yaml", "transfer.txt")}
    with pytest.raises(RunMismatchError, match=r"labels: 100 -> 120"):
        run_finetune(_cfg(tmp_path, "ft", labeled_small, init="random", labels=120))
    assert {name: (out / name).read_text() for name in written} == written


@pytest.fixture(scope="module")
def orientation_only(labeled_small, tmp_path_factory):
    """labeled_small's crops with their Orientation label alone: no binary attribute (no mAP anywhere)."""
    import pyarrow.parquet as pq

    from patchray.shards import AttributeSet, CropRecord, DatasetMeta, ShardWriter
    from patchray.shards.schema import CROP_ID, IMAGE, SPLIT

    attributes = AttributeSet((PARSE27K["Orientation"],))
    out = tmp_path_factory.mktemp("orientation") / "labeled"
    with ShardWriter(out, DatasetMeta("orientation-only", attributes), "labeled") as writer:
        for path in sorted(labeled_small.glob("*.parquet")):
            rows = pq.read_table(path, columns=[IMAGE, CROP_ID, SPLIT, "attr_Orientation"]).to_pylist()
            for row in rows:
                assert writer.add(CropRecord(image=row[IMAGE], crop_id=row[CROP_ID], split=row[SPLIT],
                                             labels={"Orientation": row["attr_Orientation"]})) is None
    return out


def test_finetune_and_compare_inits_on_an_orientation_only_dataset(ray_cluster, orientation_only,
                                                                     pretext_checkpoint, tmp_path):
    """Fine-tuning used to crash at its first validation here (mAP None formatted as a number). With one
    layer-wise run: the pretrained trunk's first block copied and frozen, the rest re-initialised. Its runs
    decode their crops once (cache_decoded), one worker iterating the cached stream itself."""
    from patchray.experiments.compare_inits import CompareConfig, run_compare

    folder, _ = pretext_checkpoint
    cfg = configlib.build(CompareConfig, {
        "out": str(tmp_path), "name": "cmp", "seeds": [0], "budgets": [60], "imagenet": False,
        "pretrained": str(folder), "layers": [1], "layer_modes": ["frozen"],
        "finetune": {"data": [str(orientation_only)], "epochs": 1, "crops_per_step": 16, "eval_every": 1,
                     "val_limit": 64, "loss": "balanced", "resources": {"num_workers": 1}, "cache_decoded": True}})
    coordinators = _split_coordinators()
    result = run_compare(cfg, log=print)
    # three one-worker fine-tunings iterated their streams themselves: no split coordinator started (a process
    # and about 2 s a run, paid by every Tune trial)
    assert _split_coordinators() == coordinators
    out = tmp_path / "cmp"
    for init in ("random", "patchtask"):
        run = out / "runs" / f"labels60-seed0-{init}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["epochs"] == 1 and summary["loss"] == "balanced" and summary["identity"]["cache_decoded"]
        rows = summary["rows_per_epoch"]  # the budget's 60 crops, all of them streamed from the cache
        assert rows["in_stream"] == 60 and rows["trained"] + rows["skipped"] == 60
        assert len(summary["class_weights"]) == 1 and len(summary["class_weights"][0]) == 4
        test = summary["test"]
        assert test["mAP"] is None and test["parse27k_mAP"] is None
        assert 0.0 <= test["mA"] <= 1.0 and 0.0 <= test["parse27k_mBER"] <= 1.0
        assert 0.0 <= test["orientation_accuracy"] <= 1.0
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [h["val_mA"] is not None for h in history] == [True]
        table = (run / "test_metrics.md").read_text()
        assert "| Orientation |" in table and "**mAP**" not in table
        assert (run / "curves.png").stat().st_size > 0
    row = next(r for r in result["table"] if r["init"] == "patchtask")
    assert row["seeds"] == 1 and row["mAP"]["mean"] is None and row["parse27k_mBER"]["mean"] is not None
    comparison = (out / "comparison.md").read_text()
    assert "mBER (parse27k)" in comparison and "| mAP |" not in comparison
    assert (out / "comparison.png").stat().st_size > 0 and (out / "learning_curves.png").stat().st_size > 0

    layer_run = out / "runs" / "labels60-seed0-patchtask-k1-frozen"
    identity = json.loads((layer_run / "summary.json").read_text())["identity"]
    assert identity["transfer_blocks"] == 1 and identity["freeze_blocks"] == 1
    transfer = (layer_run / "transfer.txt").read_text()
    assert "(transfer_blocks=1: block 1 of 4; 12 tensors of blocks 2-4 left at their fresh init)" in transfer
    (row,) = result["layerwise"]["table"]
    assert (row["mode"], row["blocks"], row["seeds"]) == ("frozen", 1, 1) and 0.0 <= row["mA"]["mean"] <= 1.0
    assert "| 60 | 1 | frozen |" in (out / "layerwise.md").read_text()
    assert (out / "layerwise.png").stat().st_size > 0 and not (out / "low_shot.png").exists()  # one budget
