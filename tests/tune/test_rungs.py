"""ASHA's rungs as patchray sets them: every rung before every trial's last epoch, matching Ray's own formula."""
import pytest
from ray.tune.schedulers import ASHAScheduler

from patchray.ray_compat import asha_rungs_of
from patchray.tune.rungs import asha_max_t, asha_rungs


@pytest.mark.parametrize("grace, rf, epochs", [(1, 2, 4), (1, 2, 2), (1, 3, 6), (3, 3, 10), (2, 2, 8), (1, 2, 9),
                                               (1, 3, 4), (3, 3, 15), (1, 4, 17)])
def test_no_rung_falls_on_a_trial_s_last_epoch_and_ray_agrees(grace, rf, epochs):
    max_t = asha_max_t(grace, epochs)
    rungs = asha_rungs(grace, rf, max_t)
    assert rungs[0] == grace and max(rungs) < epochs
    scheduler = ASHAScheduler(time_attr="epochs_done", metric="m", mode="max", grace_period=grace,
                              reduction_factor=rf, max_t=max_t, brackets=1, stop_last_trials=False)
    assert sorted(m for m, _ in asha_rungs_of(scheduler)) == rungs


def test_the_old_setting_judged_trials_at_their_last_epoch():
    """What patchray did before: max_t = epochs + 1 put a rung on epoch 4 of a 4-epoch trial."""
    assert 4 in asha_rungs(1, 2, 4 + 1)
    assert 4 not in asha_rungs(1, 2, asha_max_t(1, 4))


def test_a_grace_period_that_leaves_nothing_to_judge_is_refused():
    with pytest.raises(ValueError, match="grace_period 4 must be below the fine-tuning epochs"):
        asha_max_t(4, 4)
