import pytest

from patchray import config as configlib
from patchray.train.config import PretrainConfig


def test_defaults_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\ntask:\n  preset: pt8\noptim:\n  lr: 0.05\n")
    cfg = configlib.load(PretrainConfig, path, ["optim.lr=0.02", "task.jitter=2", "data=[a, b]"])
    assert cfg.epochs == 7 and cfg.optim.lr == 0.02 and cfg.task.jitter == 2
    assert cfg.task.preset == "pt8" and cfg.task.num_classes == 8
    assert cfg.data == ["a", "b"]
    assert cfg.patches_per_step == PretrainConfig().patches_per_step  # untouched keys keep their defaults
    assert configlib.load(PretrainConfig, None, ["optim.weight_decay=1"]).optim.weight_decay == 1.0  # int -> float


def test_unknown_keys_and_wrong_types_are_refused(tmp_path):
    with pytest.raises(configlib.ConfigError, match="unknown key 'epoch'"):
        configlib.load(PretrainConfig, None, ["epoch=3"])
    with pytest.raises(configlib.ConfigError, match="unknown key 'task.patchsize'"):
        configlib.load(PretrainConfig, None, ["task.patchsize=3"])
    with pytest.raises(configlib.ConfigError, match="epochs: expected an integer, got 'three'"):
        configlib.load(PretrainConfig, None, ["epochs=three"])
    with pytest.raises(configlib.ConfigError, match="epochs: expected an integer, got 2.5"):
        configlib.load(PretrainConfig, None, ["epochs=2.5"])
    with pytest.raises(configlib.ConfigError, match="amp: expected true or false"):
        configlib.load(PretrainConfig, None, ["amp=1"])
    with pytest.raises(configlib.ConfigError, match="not key=value"):
        configlib.load(PretrainConfig, None, ["epochs"])
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.1\n  moment: 0.9\n")
    with pytest.raises(configlib.ConfigError, match=r"bad.yaml: unknown key\(s\) \['optim.moment'\]"):
        configlib.load(PretrainConfig, path)
    with pytest.raises(configlib.ConfigError, match="does not exist"):
        configlib.load(PretrainConfig, tmp_path / "missing.yaml")
    # YAML 1.1 reads an unquoted `on:` as the key True: named, with why, not a crash
    path.write_text("probe:\n  on: true\n")
    with pytest.raises(configlib.ConfigError, match=r"\['probe.True'\] are not names \(YAML reads an unquoted on"):
        configlib.load(PretrainConfig, path)


def test_validation_inside_sections_is_reported():
    with pytest.raises(configlib.ConfigError, match="task.*preset 'pt99' unknown"):
        configlib.load(PretrainConfig, None, ["task.preset=pt99"])
    with pytest.raises(configlib.ConfigError, match="multiple of task.patches_per_crop"):
        configlib.load(PretrainConfig, None, ["patches_per_step=100"])
    with pytest.raises(configlib.ConfigError, match="optim.schedule: .linear. is not one of"):
        configlib.load(PretrainConfig, None, ["optim.schedule=linear"])


def test_dumped_config_loads_back_identical(tmp_path):
    cfg = configlib.load(PretrainConfig, None, ["task.preset=null", "task.cols=4", "task.rows=8",
                                                "task.patch_size=16", "resources.num_workers=3"])
    path = configlib.dump_yaml(cfg, tmp_path / "resolved.yaml")
    assert configlib.load(PretrainConfig, path) == cfg


def test_shipped_config_file_is_valid():
    from pathlib import Path

    shipped = configlib.load(PretrainConfig, Path(__file__).parents[1] / "configs" / "pretrain.yaml")
    assert shipped == PretrainConfig()   # every value it lists is the default it documents


def test_shipped_finetune_and_compare_files_are_valid():
    from pathlib import Path

    from patchray.experiments.compare_inits import CompareConfig
    from patchray.train.config import FinetuneConfig

    root = Path(__file__).parents[1] / "configs"
    assert configlib.load(FinetuneConfig, root / "finetune.yaml") == FinetuneConfig()
    assert configlib.load(CompareConfig, root / "compare_inits.yaml") == CompareConfig()


def test_non_finite_numbers_are_refused_and_exponents_without_a_dot_are_numbers(tmp_path):
    for text in ("optim.lr=.nan", "optim.lr=.inf", "optim.lr=-.inf", "optim.momentum=.NaN"):
        with pytest.raises(configlib.ConfigError, match="expected a finite number"):
            configlib.load(PretrainConfig, None, [text])
    with pytest.raises(configlib.ConfigError, match="optim.lr: expected a number, got 'nan'"):
        configlib.load(PretrainConfig, None, ["optim.lr=nan"])
    # PyYAML reads 1e-3 as the string "1e-3"; it is the number it looks like, in an override and in a file
    assert configlib.load(PretrainConfig, None, ["optim.lr=1e-3"]).optim.lr == pytest.approx(1e-3)
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 5E-4\n  weight_decay: 1e-3\n")
    cfg = configlib.load(PretrainConfig, path)
    assert cfg.optim.lr == pytest.approx(5e-4) and cfg.optim.weight_decay == pytest.approx(1e-3)
    with pytest.raises(configlib.ConfigError, match="optim.lr: expected a number, got '1e-3x'"):
        configlib.load(PretrainConfig, None, ["optim.lr=1e-3x"])
    with pytest.raises(configlib.ConfigError, match="expected an integer"):
        configlib.load(PretrainConfig, None, ["epochs=1e3"])  # a string exponent is no integer


def test_the_reference_fine_tuning_config_gives_the_authors_input():
    from pathlib import Path

    from patchray.train.config import FinetuneConfig

    cfg = configlib.load(FinetuneConfig, Path(__file__).parents[1] / "configs" / "finetune_reference.yaml")
    assert (cfg.input.crop_width, cfg.input.crop_height, cfg.input.crop_fit, cfg.mirror) == (128, 192, "aspect", True)
    with pytest.raises(configlib.ConfigError, match=r"input.crop_fit: 'squash' is not one of \['aspect', 'stretch'\]"):
        configlib.load(FinetuneConfig, None, ["input.crop_fit=squash"])


def test_the_reference_pretraining_config_loads_with_the_authors_schedule():
    from pathlib import Path

    cfg = configlib.load(PretrainConfig, Path(__file__).parents[1] / "configs" / "pretrain_reference.yaml")
    assert (cfg.epochs, cfg.patches_per_step, cfg.model) == (20, 128, "tiny")
    optim = cfg.optim
    assert (optim.lr, optim.momentum, optim.nesterov, optim.schedule) == (0.01, 0.9, True, "none")
    assert (optim.weight_decay, optim.output_l2) == (0.0, 1e-3)  # L2 on the output layer only
    task = cfg.task
    assert (task.preset, task.patch_size, task.jitter, task.gap, task.normalize) == ("pt18", 32, 4, 0, "dataset")
    assert task.patches_per_crop == 1 and cfg.crops_per_step == 128  # 128 different crops, one patch each
    assert task.channel_drop_fill == "zero" and cfg.stats_patches == 50000 and cfg.holdout_crops == 5000
    # the default job stays short
    assert PretrainConfig().epochs == 3 and PretrainConfig().optim.output_l2 == 0.0


@pytest.mark.parametrize(("overrides", "message"), [
    (["init=random", "input.normalize=dataset"], "init random has none"),
    (["init=imagenet", "input.normalize=patch"], "disagrees with init imagenet"),
    (["init=patchtask:runs/x", "input.normalize=patch", "input.normalize_mean=[0.5, 0.5, 0.5]",
      "input.normalize_std=[1, 1, 1]"], "only with input.normalize=dataset"),
    (["init=patchtask:runs/x", "input.normalize=dataset", "input.normalize_mean=[0.5, 0.5, 0.5]"], "both"),
    (["input.normalize=zca"], r"input.normalize: .zca. is not one of \[.patch., .dataset., .none.\] or null"),
    (["optim.output_l2=0.001"], "pretext net's output layer"),
])
def test_fine_tuning_normalisation_that_cannot_match_its_init_is_refused_at_load_time(overrides, message):
    from patchray.train.config import FinetuneConfig

    with pytest.raises(configlib.ConfigError, match=message):
        configlib.load(FinetuneConfig, None, overrides)
    assert FinetuneConfig().input.normalize is None  # by default: as the init says


@pytest.mark.parametrize(("cls_name", "old", "new"), [
    ("PretrainConfig", "batch_size: 64", "patches_per_step"),
    ("PretrainConfig", "val_crops: 10", "holdout_crops"),
    ("PretrainConfig", "crop_fit: stretch", "input.crop_fit"),
    ("FinetuneConfig", "batch_size: 16", "crops_per_step"),
    ("FinetuneConfig", "val_crops: 100", "val_limit"),
    ("FinetuneConfig", "normalize: patch", "input.normalize"),
])
def test_a_config_file_with_a_key_from_before_the_shared_vocabulary_is_refused_naming_the_new_key(
        tmp_path, cls_name, old, new):
    from patchray.train import config as train_config

    cls = getattr(train_config, cls_name)
    old_file = tmp_path / "old.yaml"
    old_file.write_text(old + "\n")
    key = old.split(":")[0]
    with pytest.raises(configlib.ConfigError, match=rf"old.yaml: {key} is now {new}"):
        configlib.load(cls, old_file)
    value = old.split(": ")[1]
    with pytest.raises(configlib.ConfigError, match=rf"^{key} is now {new}"):  # the same on the command line
        configlib.load(cls, None, [f"{key}={value}"])


def test_the_pretext_task_takes_its_crop_size_and_normalisation_from_input_and_records_them_once():
    cfg = configlib.load(PretrainConfig, None, ["input.crop_width=120", "input.normalize=dataset"])
    assert (cfg.task.crop_width, cfg.task.crop_height, cfg.task.normalize) == (120, 200, "dataset")
    written = configlib.to_dict(cfg)
    assert "crop_width" not in written["task"] and "normalize" not in written["task"]  # once, under input
    assert configlib.build(PretrainConfig, written) == cfg  # what config.yaml records builds the same run
    with pytest.raises(configlib.ConfigError, match="task.crop_width follows input.crop_width"):
        configlib.load(PretrainConfig, None, ["task.crop_width=120"])
    assert PretrainConfig().input.normalize == "patch"  # pretraining's null: patch, recorded as such
