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
    assert cfg.batch_size == PretrainConfig().batch_size  # untouched keys keep their defaults
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


def test_validation_inside_sections_is_reported():
    with pytest.raises(configlib.ConfigError, match="task.*preset 'pt99' unknown"):
        configlib.load(PretrainConfig, None, ["task.preset=pt99"])
    with pytest.raises(configlib.ConfigError, match="multiple of task.patches_per_crop"):
        configlib.load(PretrainConfig, None, ["batch_size=100"])
    with pytest.raises(configlib.ConfigError, match="schedule must be one of"):
        configlib.load(PretrainConfig, None, ["optim.schedule=linear"])


def test_dumped_config_loads_back_identical(tmp_path):
    cfg = configlib.load(PretrainConfig, None, ["task.preset=null", "task.cols=4", "task.rows=8",
                                                "task.patch_size=16", "resources.num_workers=3"])
    path = configlib.dump_yaml(cfg, tmp_path / "resolved.yaml")
    assert configlib.load(PretrainConfig, path) == cfg


def test_shipped_config_file_is_valid():
    from pathlib import Path

    shipped = configlib.load(PretrainConfig, Path(__file__).parents[1] / "configs" / "pretrain.yaml")
    assert shipped.task == PretrainConfig().task and shipped.optim == PretrainConfig().optim


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
