"""patchray.ray_compat against a running Ray cluster (the session's): the adapter functions that read a cluster's
state. A Ray upgrade that moves what one of them reads fails here, by name."""
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from patchray import ray_compat

pytestmark = pytest.mark.slow


def test_object_store_used_mib_follows_what_this_driver_puts(ray_cluster):
    def settled(predicate, timeout=30):
        deadline = time.time() + timeout
        while not predicate(value := ray_compat.object_store_used_mib()):
            assert time.time() < deadline, f"object store at {value} MiB"
            time.sleep(0.5)
        return value

    before = ray_compat.object_store_used_mib()
    held = ray_cluster.put(np.ones(64 * 2**20, dtype=np.uint8))  # 64 MiB, far above the inline-object limit
    settled(lambda used: used >= before + 60)
    del held  # freed with its last reference
    settled(lambda used: used < before + 60)


def test_local_cluster_config_reaches_the_cluster(ray_cluster):
    """The session's cluster was started with local_cluster_config(metrics_interval_ms=1000)
    (tests/e2e/conftest.py), as init_ray starts a job's local cluster (without the metrics interval)."""
    assert ray_compat.local_cluster_config() == {"_system_config": {"free_objects_period_milliseconds": 100}}
    assert ray_cluster._config.metrics_report_interval_ms() == 1000  # Ray's default is 10 s
    # the config the cluster was started with, as the node that started it holds it (Ray's default: 1,000 ms)
    assert ray_cluster._private.worker._global_node._config["free_objects_period_milliseconds"] == 100


def test_placement_groups_of_other_jobs_are_named_by_their_job_and_this_job_s_are_not(ray_cluster):
    from ray.util.placement_group import placement_group, remove_placement_group

    own = placement_group([{"CPU": 0.25}])
    ray_cluster.get(own.ready())
    assert ray_compat.placement_groups_of_other_jobs() == []
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, ray
        from ray.util.placement_group import placement_group
        ray.init(address={ray_cluster.get_runtime_context().gcs_address!r}, log_to_driver=False)
        group = placement_group([{{"CPU": 0.5}}, {{"CPU": 0.25, "memory": 2**20}}])
        ray.get(group.ready())
        print(ray.get_runtime_context().get_job_id(), flush=True)
        sys.stdin.read()  # until the test closes our stdin
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        other_job = holder.stdout.readline().strip()
        assert other_job and other_job != ray_cluster.get_runtime_context().get_job_id()
        assert ray_compat.placement_groups_of_other_jobs() == [(other_job, {"CPU": 0.75, "memory": 2.0**20})]
    finally:
        holder.stdin.close()
        holder.wait(60)
        remove_placement_group(own)
    deadline = time.time() + 30
    while ray_compat.placement_groups_of_other_jobs():  # the other job's group goes with its driver
        assert time.time() < deadline
        time.sleep(1)


def test_job_runtime_env_in_a_submitted_job_s_driver(ray_session, session_token, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    assert ray_compat.job_runtime_env() is None  # this test process is not a job's driver
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.py").write_text("import json\nfrom patchray.ray_compat import job_runtime_env\n"
                                   "print('RUNTIME_ENV', json.dumps(job_runtime_env()))\n")
    url = ray_session.dashboard_url
    client = JobSubmissionClient(url if url.startswith("http") else f"http://{url}",
                                 headers={"Authorization": f"Bearer {session_token.token}"})
    deadline = time.time() + 120
    while True:  # a new cluster's job agent takes a while to answer ("No available agent to submit job")
        try:
            job = client.submit_job(entrypoint=f"{sys.executable} probe.py",
                                    runtime_env={"working_dir": str(work), "env_vars": {"PATCHRAY_PROBE": "1"}})
            break
        except RuntimeError as e:
            assert "No available agent" in str(e) and time.time() < deadline, e
            time.sleep(2)
    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, client.get_job_logs(job)[-2000:]
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-2000:]
    line = next(line for line in logs.splitlines() if line.startswith("RUNTIME_ENV "))
    runtime_env = json.loads(line.removeprefix("RUNTIME_ENV "))
    assert runtime_env["working_dir"].startswith("gcs://_ray_pkg_")  # the uploaded copy of ``work``
    assert runtime_env["env_vars"]["PATCHRAY_PROBE"] == "1"


def test_trial_statuses_name_tune_s_state_of_each_trial(ray_cluster, tmp_path):
    from ray import tune

    def trainable(config):
        tune.report({"x": config["x"]})
        if config["x"] == 1:
            raise ValueError("this trial fails")

    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 0.5}), param_space={"x": tune.grid_search([0, 1])},
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="compat", verbose=0))
    grid = tuner.fit()
    by_x = {r.config["x"]: r.metrics["trial_id"] for r in grid}
    assert ray_compat.trial_statuses(grid) == {by_x[0]: "TERMINATED", by_x[1]: "ERROR"}
    # and on the grid of the same experiment restored from disk, as a resumed search reads it
    restored = tune.Tuner.restore(str(tmp_path / "compat"), trainable).get_results()
    assert ray_compat.trial_statuses(restored) == {by_x[0]: "TERMINATED", by_x[1]: "ERROR"}


class _RecordProgress(ray_compat.execution_callback_base()):
    """An execution callback (registered by class, as Ray Data wants) keeping every step's executor_progress."""
    steps: list = []

    def on_execution_step(self, executor):
        _RecordProgress.steps.append(ray_compat.executor_progress(executor))


def test_executor_progress_moves_with_the_stream_and_stands_still_without_it(ray_cluster):
    import ray.data
    from ray.data import DataContext

    context = DataContext.get_current()
    context.custom_execution_callback_classes.append(_RecordProgress)
    try:
        _RecordProgress.steps = []
        ds = ray.data.range(40, override_num_blocks=4).map_batches(lambda b: b, batch_size=None)
        assert sum(len(b["id"]) for b in ds.iter_batches(batch_size=10)) == 40
    finally:
        context.custom_execution_callback_classes.remove(_RecordProgress)
    steps = _RecordProgress.steps
    assert len(steps) >= 2 and len(steps[-1]) == 2  # one entry per operator: the input and the map
    first, last = steps[0], steps[-1]
    # the map received its 4 blocks, ran and finished tasks, generated and handed on outputs
    received, submitted, finished, generated, taken, _ = last[1]
    assert received == 4 and submitted >= 1 and finished == submitted and generated >= 1 and taken == generated
    assert first != last
