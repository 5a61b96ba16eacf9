import pytest

from patchray import config as configlib
from patchray.train.config import PretrainConfig
from patchray.train.identity import (
    CannotContinueError,
    RunMismatchError,
    check_continuable,
    check_same_run,
    differences,
    run_identity,
)
from patchray.train.rows import epoch_rows, format_rows


def _identity(overrides=(), data="fp-a", workers=2):
    cfg = configlib.load(PretrainConfig, None, list(overrides))
    return run_identity(configlib.to_dict(cfg), {"train": data}, workers)


def test_identity_keeps_what_changes_the_result_and_drops_where_it_runs():
    base = _identity()
    assert base["optim.lr"] == 0.01 and base["epochs"] == 3 and base["patches_per_step"] == 128
    assert base["task.patch_size"] == 32 and base["data.train"] == "fp-a" and base["workers"] == 2
    # places, names, failure budget and resource pinning do not make another run
    same = _identity(["out=/elsewhere", "name=other", "storage=s3://b/x", "max_failures=3",
                      "resources.cpus_per_worker=0.25", "data=[/some/path]", "probe.every=2", "probe.enabled=false"])
    assert differences(base, same) == []
    # what changes the weights does, each named
    for override, key in (("optim.lr=0.02", "optim.lr"), ("epochs=4", "epochs"),
                          ("patches_per_step=64", "patches_per_step"), ("seed=1", "seed"),
                          ("task.preset=pt8", "task.preset"), ("model=resnet18", "model")):
        changed = differences(base, _identity([override]))
        assert any(line.startswith(f"{key}: ") for line in changed), (override, changed)
    assert differences(base, _identity(data="fp-b")) == ["data.train: 'fp-a' -> 'fp-b'"]
    assert differences(base, _identity(workers=4)) == ["workers: 2 -> 4"]


def test_a_stored_identity_holding_a_key_at_a_default_now_left_out_is_the_same_run():
    # Pretraining identities written before channels_last was left out at its default hold it as null: they must
    # still resume, and a run that sets it is another run.
    current = _identity()
    assert "channels_last" not in current
    check_same_run(current | {"channels_last": None}, current, "before")
    assert differences(current | {"channels_last": None}, _identity(["channels_last=false"])) == [
        "channels_last: '<absent>' -> False"]


def test_a_mismatch_is_refused_naming_every_differing_key():
    stored = _identity()
    current = _identity(["optim.lr=0.05", "epochs=5"], data="fp-new", workers=4)
    with pytest.raises(RunMismatchError) as refused:
        check_same_run(stored, current, "s3://bucket/pretrain-x", epoch=1)
    text = str(refused.value)
    assert "s3://bucket/pretrain-x holds a checkpoint (after epoch 2)" in text
    for part in ("data.train: 'fp-a' -> 'fp-new'", "epochs: 3 -> 5", "optim.lr: 0.01 -> 0.05", "workers: 2 -> 4"):
        assert part in text
    check_same_run(stored, _identity(), "here")  # the same run: accepted
    # a checkpoint from before identities were recorded is never taken for this run
    with pytest.raises(RunMismatchError, match="workers: '<absent>' -> 2"):
        check_same_run(None, stored, "old")


def test_every_row_of_an_epoch_is_trained_skipped_or_dropped():
    rows = epoch_rows(in_stream=201, received=200, skipped=5)
    assert rows == {"rows_in_stream": 201, "rows_trained": 195, "rows_skipped": 5, "rows_dropped": 1}
    assert rows["rows_trained"] + rows["rows_skipped"] + rows["rows_dropped"] == rows["rows_in_stream"]
    assert "201 in the stream = 195 trained + 5 skipped (bad) + 1 dropped" in format_rows(
        {k[5:]: v for k, v in rows.items()})
    with pytest.raises(AssertionError, match="received 7 rows of a stream of 5"):
        epoch_rows(in_stream=5, received=7, skipped=0)


def test_an_evaluation_split_without_a_usable_crop_is_refused_naming_it(tmp_path):
    from patchray.shards import PARSE27K, CropRecord, DatasetMeta, ShardWriter, open_shards
    from patchray.train.finetune import read_labeled
    from patchray.train.pretrain import DatasetTooSmallError

    with ShardWriter(tmp_path / "bad", DatasetMeta("d", PARSE27K), "labeled") as writer:
        for i in range(3):
            writer.add(CropRecord(image=b"not an image %d" % i, crop_id=f"c{i}", split="val"))
    with pytest.raises(DatasetTooSmallError, match=r"the val split has no usable crop \(all 3 skipped: "
                                                   r"\{'unreadable_image': 3\}\): 3 row\(s\) in"):
        read_labeled(open_shards(str(tmp_path / "bad")), 100, 200, "val")
    import pyarrow.parquet as pq

    from patchray.shards.schema import arrow_schema

    (tmp_path / "empty").mkdir()  # a split whose file holds no rows
    pq.write_table(arrow_schema(DatasetMeta("d", PARSE27K)).empty_table(), tmp_path / "empty" / "l-test-0.parquet")
    with pytest.raises(DatasetTooSmallError, match=r"the test split has no usable crop: 0 row\(s\)"):
        read_labeled(open_shards(str(tmp_path / "empty")), 100, 200, "test")


def test_a_run_continues_only_a_shorter_run_of_the_same_settings():
    shorter = _identity(["epochs=1"])
    longer = _identity(["epochs=3", "start_from=/cache/abc"])
    # start_from is part of the identity when set, and absent when not (identities recorded before it match)
    assert longer["start_from"] == "/cache/abc" and "start_from" not in shorter
    assert differences(_identity(["epochs=3"]), longer) == ["start_from: '<absent>' -> '/cache/abc'"]
    check_continuable(shorter, longer, "/cache/abc", epoch=0)
    check_continuable(_identity(["epochs=2", "start_from=/cache/older"]), longer, "/cache/abc", epoch=1)
    with pytest.raises(CannotContinueError) as refused:
        check_continuable(shorter, _identity(["epochs=3", "optim.lr=0.02"]), "/cache/abc", epoch=0)
    assert "start_from: /cache/abc is a run with other settings" in str(refused.value)
    assert "optim.lr: 0.01 -> 0.02" in str(refused.value) and "epochs:" not in str(refused.value)  # may differ
    with pytest.raises(CannotContinueError, match=r"/cache/abc already trained 3 epoch\(s\), and this run asks for "
                                                  r"epochs=3: nothing is left"):
        check_continuable(_identity(["epochs=3"]), longer, "/cache/abc", epoch=2)
    assert issubclass(CannotContinueError, RunMismatchError)


def test_start_from_names_a_finished_run_with_its_last_checkpoint(tmp_path):
    import torch

    from patchray.train.checkpoint import final_state, save_checkpoint
    from patchray.train.pretrain import starting_point

    cfg = configlib.load(PretrainConfig, None, ["epochs=3", f"start_from={tmp_path / 'short'}"])
    identity = _identity(["epochs=3", f"start_from={tmp_path / 'short'}"])
    with pytest.raises(CannotContinueError, match=rf"{tmp_path / 'short'} holds no finished pretraining .*"
                                                  rf"{final_state(tmp_path / 'short') / 'run.json'} is missing"):
        starting_point(cfg, identity, load=True)
    model = {"w": torch.ones(2)}
    save_checkpoint(final_state(tmp_path / "short"), model=model, optimizer={"state": {}, "param_groups": []},
                    epoch=0, config={}, history=[{"epoch": 0}], identity=_identity(["epochs=1"]))
    start = starting_point(cfg, identity, load=True)
    assert start.folder == str(tmp_path / "short") and start.epochs == 1
    (state, history) = start.loaded
    assert torch.equal(state["model"]["w"], model["w"]) and state["epoch"] == 0 and history == [{"epoch": 0}]
    assert starting_point(cfg, identity, load=False).loaded is None  # resuming its own checkpoint: no weights read


def test_keys_added_later_are_left_out_at_their_old_behaviour_so_older_runs_still_resume():
    from patchray.train.config import FinetuneConfig

    def finetune_identity(**keys):
        return run_identity(configlib.to_dict(configlib.build(FinetuneConfig, keys)), {"train": "fp"}, 2)

    fresh = finetune_identity()
    assert not {"label_seed", "transfer_blocks", "evaluate_test", "start_from"} & set(fresh)
    assert not [k for k in fresh if k.startswith("probe")]
    changed = finetune_identity(label_seed=0, init="patchtask:/p", transfer_blocks=2, evaluate_test=False)
    assert (changed["label_seed"], changed["transfer_blocks"], changed["evaluate_test"]) == (0, 2, False)
    # fine-tuning's grad_compression (added after runs were made): left out at none, a key of the run otherwise
    assert "grad_compression" not in fresh
    assert finetune_identity(grad_compression="bf16")["grad_compression"] == "bf16"
    with pytest.raises(configlib.ConfigError, match="grad_compression"):
        configlib.load(FinetuneConfig, None, ["grad_compression=int8"])
