import pytest

from patchray.tune.space import SearchSpace, SpaceError

SPACE = {
    "pretrain": {"task.patch_size": {"choice": [16, 24, 32]}, "task.grid": {"choice": ["2x4", "3x6"]},
                 "task.jitter": {"randint": [0, 5]}},
    "finetune": {"optim.lr": {"loguniform": [0.001, 0.01]}, "freeze_blocks": {"choice": [0, 1]}},
}


def test_valid_space_splits_samples_into_section_overrides():
    space = SearchSpace.from_dict(SPACE)
    assert [p.name for p in space.pretext_params()] == ["pretrain.task.patch_size", "pretrain.task.grid",
                                                        "pretrain.task.jitter"]
    pre, fine = space.split({"pretrain.task.patch_size": 24, "pretrain.task.grid": "2x4", "pretrain.task.jitter": 2,
                             "finetune.optim.lr": 0.003, "finetune.freeze_blocks": 1})
    assert pre == {"task.patch_size": 24, "task.preset": None, "task.cols": 2, "task.rows": 4, "task.jitter": 2}
    assert fine == {"optim.lr": 0.003, "freeze_blocks": 1}
    # what the configs are checked against: every choice, the ends of a range
    assert [p.candidates() for p in space.params] == [[16, 24, 32], ["2x4", "3x6"], [0, 4], [0.001, 0.01], [0, 1]]


@pytest.mark.parametrize("space, message", [
    ({"pretrain": {"task.patchsize": {"choice": [16]}}}, "unknown key"),
    ({"pretrain": {"task.patch_size": {"choice": [64]}}}, "value 64 is refused"),  # 3x6 of 64 px exceeds 100x200
    ({"pretrain": {"task.grid": {"choice": ["3by6"]}}}, "not COLSxROWS"),
    ({"finetune": {"optim.lr": {"loguniform": [0, 0.1]}}}, "low > 0"),
    ({"finetune": {"optim.lr": {"uniform": [0.1, 0.01]}}}, "below high"),
    ({"finetune": {"optim.lr": {"normal": [0, 1]}}}, "unknown distribution"),
    ({"finetune": {"epochs": {"choice": []}}}, "non-empty list"),
    ({"finetune": {"epochs": {"choice": [0]}}}, "value 0 is refused"),
    ({"finetune": {"labels": {"choice": [10]}}}, "set by the tuner"),
    ({"pretraining": {}}, "unknown section"),
])
def test_bad_spaces_are_refused_naming_the_key(space, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace.from_dict(space).check({})


def test_tune_config_checks_its_space_and_objective():
    from patchray import config as configlib
    from patchray.tune.tuner import TuneConfig

    assert [(p.name, len(p.candidates())) for p in TuneConfig().search_space().params] == [
        ("pretrain.task.patch_size", 2), ("pretrain.task.grid", 2), ("finetune.optim.lr", 2)]
    with pytest.raises(configlib.ConfigError, match="metric: 'accuracy' is not one of"):
        configlib.build(TuneConfig, {"metric": "accuracy"})
    # keys and values are judged by check(), once where the experiment starts, not in every trial's build
    unknown = configlib.build(TuneConfig, {"space": {"finetune": {"optim.rate": {"choice": [0.1]}}}})
    with pytest.raises(configlib.ConfigError, match="unknown key"):
        unknown.check()


def test_grid_search_needs_choices_and_the_metric_is_checked():
    from patchray import config as configlib
    from patchray.tune.tuner import TuneConfig, _tune_param

    with pytest.raises(configlib.ConfigError, match=r"search=grid needs choice lists.*finetune.optim.lr"):
        configlib.build(TuneConfig, {"search": "grid"})
    grid = configlib.build(TuneConfig, {"search": "grid", "space": {"finetune": {"optim.lr": {"choice": [0.01]}}}})
    # what Tune is given: every choice of every parameter, one trial per combination
    assert {p.name: _tune_param(p, grid=True) for p in grid.search_space().params} == {
        "finetune.optim.lr": {"grid_search": [0.01]}}
    with pytest.raises(configlib.ConfigError, match="scheduler: 'hyperband' is not one of"):
        configlib.build(TuneConfig, {"scheduler": "hyperband"})


def test_pretext_combinations_that_do_not_fit_the_crop_are_found_and_an_all_bad_space_refused():
    from patchray import config as configlib
    from patchray.tune.tuner import TuneConfig

    space = SearchSpace.from_dict({"pretrain": {"task.patch_size": {"choice": [24, 48]},
                                                "task.grid": {"choice": ["2x4", "3x6"]}}})
    total, bad = space.infeasible_pretext({})
    # 48 px patches fit a 100 px wide crop in 2 columns only; 24 px patches fit both grids
    assert total == 4 and [b[0] for b in bad] == [{"pretrain.task.patch_size": 48, "pretrain.task.grid": "3x6"}]
    assert "crop_width=100" in bad[0][1]
    # a value that fits in no combination is refused when the experiment starts, naming it and why
    with pytest.raises(configlib.ConfigError, match=r"task.patch_size: value 48 is refused.*crop_width=100"):
        configlib.build(TuneConfig, {"space": {"pretrain": {"task.patch_size": {"choice": [48]},
                                                            "task.grid": {"choice": ["3x6", "4x8"]}}}}).check()


def test_the_shipped_tune_config_loads_with_the_issue_s_search_space():
    from pathlib import Path

    from patchray import config as configlib
    from patchray.tune.tuner import TuneConfig

    cfg = configlib.load(TuneConfig, Path(__file__).parents[2] / "configs" / "tune.yaml")
    cfg.check()
    names = {p.name for p in cfg.search_space().params}
    assert {"pretrain.task.patch_size", "pretrain.task.grid", "pretrain.task.jitter", "pretrain.task.gap",
            "pretrain.task.channel_drop", "pretrain.task.pairwise", "finetune.optim.lr",
            "finetune.optim.weight_decay", "finetune.crops_per_step", "finetune.epochs",
            "finetune.freeze_blocks"} <= names
    total, bad = cfg.search_space().infeasible_pretext(cfg.pretrain)
    assert 0 < len(bad) < total


def test_a_jitter_of_half_the_pitch_is_an_infeasible_combination_and_the_shipped_space_has_none():
    """16 px cells 16 px apart with jitter 8: two cells could cut the same patch. The feasibility check finds
    exactly those combinations (24 px patches take jitter 8), and configs/tune.yaml stays clear of them."""
    from pathlib import Path

    from patchray import config as configlib
    from patchray.tune.tuner import TuneConfig

    space = SearchSpace.from_dict({"pretrain": {"task.patch_size": {"choice": [16, 24]},
                                                "task.jitter": {"choice": [4, 8]}, "task.gap": {"choice": [0, 4]}}})
    total, bad = space.infeasible_pretext({})
    assert total == 8 and [b[0] for b in bad] == [
        {"pretrain.task.patch_size": 16, "pretrain.task.jitter": 8, "pretrain.task.gap": 0}]
    assert "same patch under two labels" in bad[0][1]
    with pytest.raises(configlib.ConfigError, match=r"task.jitter: value 8 is refused.*same patch under two labels"):
        configlib.build(TuneConfig, {"space": {"pretrain": {"task.patch_size": {"choice": [16]},
                                                            "task.jitter": {"choice": [4, 8]}}}}).check()
    cfg = configlib.load(TuneConfig, Path(__file__).parents[2] / "configs" / "tune.yaml")
    _, shipped_bad = cfg.search_space().infeasible_pretext(cfg.pretrain)
    assert not [reason for _, reason in shipped_bad if "jitter" in reason]
