"""A trial's pure planning: how concurrent trials split a cluster's CPUs and GPUs, and how a trial's values are
read back from its config."""
import pytest

from patchray.train.resources import ResourceError, ResourcesConfig, plan_resources
from patchray.tune.trial import CONFIRM, PRETEXT, split_gpus, trial_params, trial_resources
from patchray.tune.tuner import TuneConfig


@pytest.mark.parametrize("gpus, trials, expected", [(0, 4, 0.0), (8, 4, 2.0), (8, 8, 1.0), (4, 8, 0.5), (3, 4, 0.5),
                                                    (1, 3, 1 / 3), (2, 1, 2.0), (0.5, 2, 0.0)])
def test_concurrent_trials_split_the_gpus_evenly(gpus, trials, expected):
    assert split_gpus(gpus, trials) == pytest.approx(expected)
    assert split_gpus(gpus, trials) * trials <= gpus + 1e-9


def test_trial_resources_give_each_trial_its_share_and_plan_within_it():
    # 16 CPUs, 4 GPUs, 8 trials at once: half a GPU and ~2 CPUs each
    overrides = trial_resources(16, 4, 8)
    assert overrides["resources.gpus_per_worker"] == 0.5 and overrides["resources.num_workers"] == 1
    assert overrides["resources.reserved_gpus"] == 3.5
    share = 16 - overrides["resources.reserved_cpus"]
    assert share == pytest.approx((16 - 0.01 * 8) / 8)
    # what one trial's trainer then plans on: its CPU share and its half GPU, one worker taking 0.5 GPU
    requested = ResourcesConfig(**{k.split(".", 1)[1]: v for k, v in overrides.items()})
    plan = plan_resources(16 - requested.reserved_cpus, 4 - requested.reserved_gpus, requested)
    assert plan.use_gpu and plan.num_workers == 1 and plan.resources_per_worker["GPU"] == 0.5
    # 2 trials on 4 GPUs: two data-parallel GPU workers each
    whole = trial_resources(16, 4, 2)
    assert (whole["resources.num_workers"], whole["resources.gpus_per_worker"]) == (2, 1.0)
    # each of 8 trials at once may fill an eighth of the object store with a decoded cache
    assert overrides["resources.object_store_share"] == pytest.approx(1 / 8)
    # CPU-only: nothing about GPUs
    assert set(trial_resources(8, 0, 2)) == {"resources.reserved_cpus", "resources.object_store_share"}
    # one trial at a time: the whole store, and the config left at its default
    assert set(trial_resources(8, 0, 1)) == {"resources.reserved_cpus"}
    with pytest.raises(ResourceError, match="needs 6 GPUs, the cluster has 4"):
        trial_resources(16, 4, 2, gpus_per_trial=3)
    with pytest.raises(ResourceError, match="Ray Data would starve"):
        trial_resources(2, 0, 2)


def test_a_fractional_gpu_worker_is_planned_and_a_bad_fraction_refused():
    plan = plan_resources(4, 0.5, ResourcesConfig(gpus_per_worker=0.5))
    assert plan.use_gpu and plan.num_workers == 1 and plan.resources_per_worker["GPU"] == 0.5
    with pytest.raises(ResourceError, match="2 GPU workers x 0.5 GPU asked for, the cluster has 0.5"):
        plan_resources(4, 0.5, ResourcesConfig(gpus_per_worker=0.5, num_workers=2))
    with pytest.raises(ValueError, match="gpus_per_worker must be a fraction"):
        ResourcesConfig(gpus_per_worker=1.5)


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_an_object_store_share_outside_0_to_1_is_refused(share):
    with pytest.raises(ValueError, match=f"object_store_share must be in \\(0, 1\\], got {share}"):
        ResourcesConfig(object_store_share=share)


def test_a_trial_s_values_are_read_back_however_tune_passed_them():
    space = TuneConfig().search_space()
    values = {"pretrain.task.patch_size": 24, "pretrain.task.grid": "3x6", "finetune.optim.lr": 0.003}
    narrowed = values | {"pretrain.task.grid|2x4,3x6": "3x6"}  # FeasibleSpaceSampler's narrowed name beside
    assert trial_params(narrowed, space) == values
    grid = {PRETEXT: {"pretrain.task.patch_size": 24, "pretrain.task.grid": "3x6"}, "finetune.optim.lr": 0.003}
    assert trial_params(grid, space) == values
    assert trial_params({CONFIRM: {"params": values, "seed": 2, "of": "t1"}}, space) == values
