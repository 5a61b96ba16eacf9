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
    assert space.grid_size() == 3 * 2 * 2 * 2 * 2


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
        SearchSpace.from_dict(space)
