"""The cluster cost model, on numbers worked by hand."""
import pytest

from patchray.bench.cost import cost_table, cpus_per_gpu, epoch_cost


def test_a_gpu_needs_the_cpus_that_deliver_its_busy_share_and_one_for_its_worker():
    need = cpus_per_gpu(50_000, 20_000, busy=0.9, trainer_cpus=1)
    assert need.gpu_patches_per_s == 45_000 and need.data_cpus == pytest.approx(2.25)
    assert need.cpus_per_gpu == pytest.approx(3.25) and need.cores_to_provision == 4
    with pytest.raises(ValueError):
        cpus_per_gpu(50_000, 20_000, busy=1.5)


def test_an_epoch_costs_its_patches_over_the_gpu_rate_and_the_cpus_beside_it():
    cost = epoch_cost(10_000_000, 8, cpus_per_gpu(40_000 / 0.9, 20_000, busy=0.9, trainer_cpus=0))
    assert cost.gpu_hours == pytest.approx(80_000_000 / 40_000 / 3600)  # 0.556 h
    assert cost.cpu_hours == pytest.approx(cost.gpu_hours * 2)  # 2 data CPUs at 20,000 patches per CPU-second


def test_the_table_covers_every_net_and_pipeline_and_decoding_on_the_gpu_is_capped_by_what_it_reached():
    rows = {(r["net"], r["pipeline"]): r for r in cost_table()}
    assert len(rows) == 16
    resnet = rows[("resnet18, batch 1024", "data")]
    assert resnet["gpu_patches_per_s"] == round(0.9 * 66_445) and resnet["cores"] == 3  # 1 + 59,800 / 49,433
    assert rows[("resnet18, batch 1024", "cached")]["cores"] == 2  # 1 + 59,800 / 186,123
    tiny = rows[("tiny, batch 1024", "trainer")]
    assert tiny["gpu_patches_per_s"] == 122_308 and tiny["reaches_busy"] is False
