"""input.normalize=dataset end to end without Ray: the driver's statistics over training crops, the workers'
normalisation with them, and fine-tuning from a PatchTask init fed what its pretraining was fed."""
import numpy as np
import pytest
import torch
from helpers import jpeg_bytes

from patchray import config as configlib
from patchray.models.init import InitError
from patchray.patches import channel_stats, normalize_images, normalize_patches
from patchray.patches.normalize import DATASET_STD_FLOOR
from patchray.shards import AttributeSet, CropRecord, DatasetMeta, ShardWriter, open_shards
from patchray.train.config import FinetuneConfig, PretrainConfig

HELD_OUT, TRAIN = (250, 250, 250), (40, 120, 200)


@pytest.fixture
def shards(tmp_path):
    """20 light crops first (the validation set takes the first crops), then 40 of another colour."""
    with ShardWriter(tmp_path / "d", DatasetMeta("d", AttributeSet()), rows_per_shard=30) as writer:
        for i in range(60):
            colour = HELD_OUT if i < 20 else TRAIN
            writer.add(CropRecord(image=jpeg_bytes(100, 200, colour), crop_id=f"c{i:02d}"))
    return open_shards(str(tmp_path / "d"))


def _pretrain_config(**overrides) -> PretrainConfig:
    return configlib.build(PretrainConfig, {"holdout_crops": 20, "stats_patches": 100} | overrides)


def test_dataset_statistics_come_from_training_crops_only_and_are_reproducible(shards):
    from patchray.train.pretrain import input_normalization, read_validation_crops

    cfg = _pretrain_config(input={"normalize": "dataset"})
    _, val_ids = read_validation_crops(shards, cfg.holdout_crops, 100, 200)
    record = input_normalization(shards, cfg, val_ids.tolist(), log=lambda *_: None)
    assert record["mode"] == "dataset" and record["crops"] == 6 and record["patches"] == 6 * 18  # ceil(100 / 18)
    mean, std = record["mean"], record["std"]
    assert mean.shape == std.shape == (3, 32, 32) and mean.dtype == torch.float32
    # per pixel, the training crops' colour: none of the held-out light crops went in
    assert torch.allclose(mean, torch.tensor(TRAIN)[:, None, None] / 255, atol=3 / 255)
    assert torch.all(std == DATASET_STD_FLOOR)  # flat crops: the floor, not a division by zero
    again = input_normalization(shards, cfg, val_ids.tolist(), log=lambda *_: None)
    assert torch.equal(again["mean"], mean) and torch.equal(again["std"], std)
    assert input_normalization(shards, _pretrain_config(), val_ids.tolist()) == {"mode": "patch"}


def test_the_workers_normalise_with_the_drivers_record():
    from patchray.train.epoch import InputNormalization

    patches = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    mean, std = torch.rand(3, 32, 32), 0.1 + torch.rand(3, 32, 32)
    normalize = InputNormalization({"mode": "dataset", "mean": mean, "std": std, "patches": 9}, "cpu")
    assert torch.equal(normalize(patches), normalize_patches(patches, "dataset", mean=mean, std=std))
    assert torch.equal(InputNormalization({"mode": "patch"}, "cpu")(patches), normalize_patches(patches, "patch"))


def _run_folder(tmp_path, record=None, config_mode=None):
    folder = tmp_path / "pretraining"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "pretext.pt").write_bytes(b"")  # not read here
    if record is not None:
        torch.save(record, folder / "checkpoints" / "normalization.pt")
    if config_mode is not None:
        (folder / "config.yaml").write_text(f"model: tiny\ntask:\n  normalize: {config_mode}\n")
    return folder


def _resolved(folder, **overrides) -> FinetuneConfig:
    from patchray.train.finetune_loop import resolve_normalization

    cfg = configlib.build(FinetuneConfig, {"init": f"patchtask:{folder}"} | overrides)
    resolve_normalization(cfg)
    return cfg


def test_fine_tuning_follows_a_dataset_pretraining_with_its_statistics_pooled_per_channel(tmp_path):
    from patchray.train.finetune_loop import CropNormalization

    mean = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    std = 0.1 + torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    folder = _run_folder(tmp_path, {"mode": "dataset", "mean": mean, "std": std})
    expected_mean, expected_std = channel_stats(mean, std)
    for init in (folder, folder / "checkpoints" / "pretext.pt"):  # a run folder or its checkpoint
        cfg = _resolved(init)
        assert cfg.input.normalize == "dataset"
        assert np.allclose(cfg.input.normalize_mean, expected_mean)
        assert np.allclose(cfg.input.normalize_std, expected_std)
    crops = torch.randint(0, 256, (2, 200, 100, 3), dtype=torch.uint8)
    assert torch.equal(CropNormalization(cfg, crops.device)(crops),
                       normalize_images(crops, "dataset", mean=expected_mean, std=expected_std))
    # the resolved config, as config.yaml records it, loads and resolves to itself
    again = _resolved(folder, **configlib.to_dict(cfg) | {"init": f"patchtask:{folder}"})
    assert ((again.input.normalize_mean, again.input.normalize_std)
            == (cfg.input.normalize_mean, cfg.input.normalize_std))
    assert _resolved(folder, input={"normalize": "dataset"}).input.normalize_mean == cfg.input.normalize_mean
    with pytest.raises(InitError, match=r"input.normalize_mean/normalize_std .* differ from .*pretraining statistics"):
        _resolved(folder, input={"normalize": "dataset", "normalize_mean": [0.5] * 3, "normalize_std": [0.2] * 3})


@pytest.mark.parametrize("asked", ["patch", "none"])
def test_a_fine_tuning_normalisation_other_than_the_pretrainings_is_refused_naming_both(tmp_path, asked):
    folder = _run_folder(tmp_path, {"mode": "dataset", "mean": torch.rand(3, 8, 8), "std": torch.ones(3, 8, 8)})
    with pytest.raises(InitError, match=rf"fine-tuning input.normalize='{asked}', but init .* was pretrained with "
                                        r"input.normalize='dataset'"):
        _resolved(folder, input={"normalize": asked})


def test_patch_and_none_pretrainings_carry_over_and_older_runs_are_read_from_their_config(tmp_path):
    from patchray.train.finetune_loop import CropNormalization

    crops = torch.randint(0, 256, (2, 200, 100, 3), dtype=torch.uint8)
    cfg = _resolved(_run_folder(tmp_path / "a", {"mode": "none"}))
    assert cfg.input.normalize == "none"
    assert torch.equal(CropNormalization(cfg, crops.device)(crops), normalize_images(crops, "none"))
    # a run from before normalization.pt: its config.yaml says how it normalised
    assert _resolved(_run_folder(tmp_path / "b", config_mode="none")).input.normalize == "none"
    with pytest.raises(InitError, match="input.normalize='patch', but init .* input.normalize='none'"):
        _resolved(_run_folder(tmp_path / "c", config_mode="none"), input={"normalize": "patch"})
    with pytest.raises(InitError, match=r"input.normalize=dataset, but its statistics .* are missing"):
        _resolved(_run_folder(tmp_path / "d", config_mode="dataset"))
    # a hand-made checkpoint without any record: the configured normalisation, patch by default
    cfg = _resolved(_run_folder(tmp_path / "e"))
    assert cfg.input.normalize == "patch"
    assert torch.equal(CropNormalization(cfg, crops.device)(crops), normalize_images(crops, "patch"))
    assert _resolved(_run_folder(tmp_path / "f"), input={"normalize": "none"}).input.normalize == "none"


def test_a_random_init_records_the_patch_default_and_imagenet_keeps_imagenets_statistics():
    from patchray.models.init import IMAGENET_MEAN, IMAGENET_STD
    from patchray.train.finetune_loop import CropNormalization, resolve_normalization

    crops = torch.randint(0, 256, (2, 200, 100, 3), dtype=torch.uint8)
    random = configlib.build(FinetuneConfig, {})
    resolve_normalization(random)
    assert random.input.normalize == "patch"  # what config.yaml then says was used
    imagenet = configlib.build(FinetuneConfig, {"init": "imagenet", "model": "resnet18"})
    resolve_normalization(imagenet)
    assert torch.equal(CropNormalization(imagenet, crops.device)(crops),
                       normalize_images(crops, "dataset", mean=IMAGENET_MEAN, std=IMAGENET_STD))
