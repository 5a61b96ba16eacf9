"""Time to the first step (patchray.train.pretrain.StartupClock): the driver's laps, then the workers' part."""
from patchray.train.pretrain import StartupClock, large_crops_note, startup_lines


def test_the_phases_add_up_to_the_first_step_of_this_process():
    clock = StartupClock(100.0)
    clock.last = 100.0
    clock.phases = {"shards and Ray": 6.0, "validation crops": 2.0}
    clock.last = 108.0
    # a continued run: the history starts with the earlier run's epoch 0 (its own stamp) and this run's epoch 1
    history = [{"epoch": 0, "first_step_at": 50.0}, {"epoch": 1, "first_step_at": 121.5}, {"epoch": 2}]
    clock.first_step(history, first_epoch=1)
    assert clock.phases["workers to the first step"] == 13.5 and clock.phases["total"] == 21.5
    assert startup_lines(clock.phases) == [
        "  time to the first step: 22 s (shards and Ray 6 s, validation crops 2 s, workers to the first step 14 s)"]


def test_the_workers_part_splits_into_their_start_their_setup_and_the_first_batch():
    clock = StartupClock(100.0)
    clock.lap("shards and Ray")
    clock.last = 105.0
    clock.phases = {"shards and Ray": 5.0}
    history = [{"epoch": 0, "worker_started_at": 117.0, "worker_ready_at": 121.25, "first_step_at": 130.0}]
    clock.first_step(history, first_epoch=0)
    assert clock.phases == {"shards and Ray": 5.0, "Ray Train starting the workers": 12.0,
                            "their setup and the untrained probe": 4.2, "the first batch": 8.8, "total": 30.0}
    assert startup_lines(clock.phases) == [
        "  time to the first step: 30 s (shards and Ray 5 s, Ray Train starting the workers 12 s, their setup and "
        "the untrained probe 4 s, the first batch 9 s)"]


def test_a_resumed_run_reports_no_first_step_it_did_not_take():
    clock = StartupClock(100.0)
    clock.first_step([{"epoch": 0, "first_step_at": 50.0}], first_epoch=None)
    assert "total" not in clock.phases and startup_lines(clock.phases) == []


def test_crops_stored_well_above_the_training_size_get_a_note_unless_cached():
    note = large_crops_note((300, 600), 100, 200, cache_decoded=False)
    assert "300x600" in note and "9.0x the pixels of the 100x200" in note and "--height 200" in note
    assert "cache_decoded=true" in note
    assert large_crops_note((300, 600), 100, 200, cache_decoded=True) is None  # fitted once already
    assert "2.2x" in large_crops_note((150, 300), 100, 200, cache_decoded=False)
    assert large_crops_note((120, 240), 100, 200, cache_decoded=False) is None  # 1.4x: little to gain
    assert large_crops_note((100, 200), 100, 200, cache_decoded=False) is None
    assert large_crops_note(None, 100, 200, cache_decoded=False) is None  # no header gave a size
