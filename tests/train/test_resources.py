import pytest

from patchray.train.resources import ResourceError, ResourcesConfig, plan_resources


def test_two_cpus_give_two_workers_and_keep_a_cpu_for_data():
    plan = plan_resources(2, 0, ResourcesConfig())
    assert plan.num_workers == 2 and not plan.use_gpu
    assert plan.cpus_per_worker == 0.5 and plan.data_cpus == 1
    assert plan.resources_per_worker == {"CPU": 0.5}


def test_gpu_cluster_one_worker_per_gpu_data_on_cpus():
    plan = plan_resources(16, 4, ResourcesConfig())
    assert plan.num_workers == 4 and plan.use_gpu
    assert plan.resources_per_worker == {"CPU": 1.0, "GPU": 1}
    assert plan.data_cpus == 12


@pytest.mark.parametrize("cpus", [2, 3, 4, 8, 64])
def test_no_default_can_starve_ray_data(cpus):
    plan = plan_resources(cpus, 0, ResourcesConfig())
    assert plan.data_cpus >= 1 and plan.cpus_per_worker > 0


def test_requests_that_would_hang_are_refused_with_a_reason():
    with pytest.raises(ResourceError, match="hangs"):
        plan_resources(2, 0, ResourcesConfig(num_workers=2, cpus_per_worker=1))
    with pytest.raises(ResourceError, match="at least 2 are needed"):
        plan_resources(1, 0, ResourcesConfig())
    with pytest.raises(ResourceError, match="no GPU"):
        plan_resources(2, 0, ResourcesConfig(use_gpu=True))
    with pytest.raises(ResourceError, match="has 2 GPUs"):
        plan_resources(8, 2, ResourcesConfig(num_workers=3))
    assert plan_resources(8, 0, ResourcesConfig(num_workers=3, cpus_per_worker=2)).data_cpus == 2


def test_flags_and_custom_resources_override():
    plan = plan_resources(8, 2, ResourcesConfig(use_gpu=False, num_workers=3,
                                                trainer_resources={"trainer_node": 0.01}))
    assert not plan.use_gpu and plan.num_workers == 3
    assert plan.resources_per_worker["trainer_node"] == 0.01
    assert plan.data_cpus >= 1


def test_a_sliver_already_held_still_leaves_data_a_whole_cpu():
    # Inside a Tune trial 0.01 CPU is taken: planning on what is free keeps a whole CPU for Ray Data.
    plan = plan_resources(1.99, 0, ResourcesConfig())
    assert plan.num_workers == 2 and plan.data_cpus >= 1 - 1e-9
    assert 1.99 - 2 * plan.cpus_per_worker >= 1 - 1e-9


def test_workers_pinned_to_node_types_not_up_yet_are_planned_for_the_autoscaler():
    # An autoscaling cluster with only its CPU head up: GPU trainer nodes come when the trainer asks.
    pinned = ResourcesConfig(use_gpu=True, num_workers=4, trainer_resources={"trainer_node": 1},
                             data_resources={"data_node": 1})
    plan = plan_resources(8, 0, pinned)
    assert plan.use_gpu and plan.num_workers == 4
    assert plan.resources_per_worker == {"CPU": plan.cpus_per_worker, "GPU": 1, "trainer_node": 1}
    assert plan.data_cpus == 8  # the workers take nothing from the nodes Ray Data runs on
    # without pinning, asking for GPUs the cluster does not have is still refused, saying what to do
    with pytest.raises(ResourceError, match="trainer_resources and data_resources"):
        plan_resources(8, 0, ResourcesConfig(use_gpu=True, num_workers=4))


def test_a_second_job_plans_on_what_the_first_leaves_or_is_refused():
    from patchray.train.resources import plan_around_other_jobs

    # alone on 2 CPUs: the default plan
    assert plan_around_other_jobs(2, 0, [], ResourcesConfig()) == plan_resources(2, 0, ResourcesConfig())
    # another job's trainers hold 1 CPU, and its data needs 1: nothing is left; refused, naming that job
    with pytest.raises(ResourceError, match=r"other jobs are training on this cluster \(job 02000000: 1 CPU for "
                                            r"training, 1 CPU kept for its data\); of 2 CPU\(s\) 0 are left"):
        plan_around_other_jobs(2, 0, [("02000000", {"CPU": 0.5}), ("02000000", {"CPU": 0.5})], ResourcesConfig())
    # on 8 CPUs, the first job's 2 + 1 leave 5: the plan fits in them and still keeps Ray Data a CPU
    plan = plan_around_other_jobs(8, 0, [("02000000", {"CPU": 2.0})], ResourcesConfig())
    assert plan.num_workers * plan.cpus_per_worker + plan.data_cpus == pytest.approx(5)
    assert plan.data_cpus >= 1
    # GPUs held by another job's trainers are not planned twice
    with pytest.raises(ResourceError, match="the cluster has 0 GPUs|no GPU"):
        plan_around_other_jobs(16, 1, [("03000000", {"CPU": 1.0, "GPU": 1.0})], ResourcesConfig(use_gpu=True))
