"""Job submission as a user does it: a real head on loopback (free ports, stopped alone, never `ray stop`),
`ray job submit --working-dir .` of jobs/pretrain.py, SUCCEEDED, logs read through the job API, and the job
API refusing a request without the cluster's token. The head and its clients use a token of the test's own,
never the user's ~/.ray/auth_token."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray_heads

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with ray_heads.loopback_head(tmp_path_factory.mktemp("head") / "head.log", "--num-cpus=2") as (_, url, env):
        yield url, env, ray_heads.token_of(env)


def submit(url: str, env: dict, entrypoint: str) -> str:
    """`ray job submit --working-dir .` as a user types it; returns the job id."""
    done = subprocess.run([ray_heads.RAY, "job", "submit", "--address", url, "--working-dir", ".", "--no-wait", "--",
                           *entrypoint.split()], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return next(word.strip("'") for line in done.stdout.splitlines() for word in line.split()
                if word.strip("'").startswith("raysubmit_"))


def job_client(url: str, token: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})


def wait_until_finished(client, job_id: str, timeout: float = 420):
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED}:
        assert time.time() < deadline, f"job {job_id} did not finish in {timeout:g} s"
        time.sleep(2)
    return status


def pretrain_command(data, out, name, epochs):
    return (f"{sys.executable} jobs/pretrain.py --data {data} --out {out} --name {name} epochs={epochs} "
            "max_crops=300 holdout_crops=30")


def test_submitted_pretraining_succeeds_and_its_logs_come_back_through_the_job_api(
        head, synthetic_small, tmp_path):
    from ray.job_submission import JobStatus

    url, env, token = head
    out = tmp_path / "runs"
    job_id = submit(url, env, pretrain_command(synthetic_small / "unlabeled", out, "submitted", 1))
    client = job_client(url, token)
    status = wait_until_finished(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "[pretrain] done in" in logs and "checkpoint (PretextNet state_dict)" in logs
    # quiet by default (patchray.console): no Ray Train report dumps; rank 0's epoch line reaches the driver once
    assert "TrainingReport(" not in logs and logs.count("[pretrain] epoch 1/1:") == 1, logs[-3000:]
    summary = json.loads((out / "submitted" / "summary.json").read_text())
    assert summary["epochs"] == 1

    # token authentication is on: the job API answers 401 without the token, 200 with it
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/api/jobs/", timeout=10)
    assert refused.value.code == 401
    with urllib.request.urlopen(urllib.request.Request(f"{url}/api/jobs/",
                                                       headers={"Authorization": f"Bearer {token}"})) as ok:
        assert ok.status == 200 and job_id in ok.read().decode()


def test_a_killed_driver_s_job_submitted_again_resumes_where_it_stopped(head, synthetic_small, tmp_path):
    from ray.job_submission import JobStatus

    url, env, token = head
    out = tmp_path / "runs"
    command = pretrain_command(synthetic_small / "unlabeled", out, "killed", 3)
    client = job_client(url, token)
    first = submit(url, env, command)
    # Ray Train's record of its checkpoints: once one is registered there, it is what a restart resumes from
    registered = out / "killed" / "ray" / "pretrain" / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 300
    while not (registered.exists() and "checkpoint_" in registered.read_text()):
        assert time.time() < deadline and client.get_job_status(first) in (JobStatus.PENDING, JobStatus.RUNNING), \
            client.get_job_logs(first)[-3000:]
        time.sleep(0.5)
    os.kill(int(client.get_job_info(first).driver_info.pid), signal.SIGKILL)  # the driver, for real
    assert wait_until_finished(client, first, 120) == JobStatus.FAILED
    assert not (out / "killed" / "summary.json").exists()

    second = submit(url, env, command)  # the same command again
    assert wait_until_finished(client, second) == JobStatus.SUCCEEDED, client.get_job_logs(second)[-3000:]
    logs = client.get_job_logs(second)
    (tmp_path / "second.log").write_text(logs)
    # it went on from the killed run's last checkpoint (after epoch 1 or 2) and trained exactly the epochs after it
    resumed = re.findall(r"\[pretrain\] resuming after epoch (\d+) from ", logs)
    assert len(resumed) == 1 and int(resumed[0]) in (1, 2), logs[-3000:]
    trained = {int(e) for e in re.findall(r"\[pretrain\] epoch (\d+)/3:", logs)}  # each epoch's closing line
    assert trained == set(range(int(resumed[0]) + 1, 4)), logs[-3000:]
    epochs = [json.loads(line)["epoch"] for line in (out / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


def test_the_tests_use_tokens_of_their_own_and_leave_the_user_s_alone(head, ray_session, session_token):
    """Last in this file: after jobs were submitted. The head (and its clients) and the session's ray.init
    cluster each run on a random token of the tests; the user's ~/.ray/auth_token is neither read nor written."""
    url, env, token = head
    assert ray_heads.TOKEN_ENV not in env and env[ray_heads.TOKEN_PATH_ENV] != str(ray_heads.USER_TOKEN)
    assert len(token) == 64 and token != session_token.token
    user_token = ray_heads.USER_TOKEN.read_text().strip() if ray_heads.USER_TOKEN.exists() else None
    assert user_token not in (token, session_token.token)

    def status(base: str, bearer: str | None) -> int:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{base}/api/jobs/", headers=headers),
                                        timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    # each cluster takes its own token only (no token: 401, a wrong one: 403)
    session_url = ray_session.dashboard_url
    session_url = session_url if session_url.startswith("http") else f"http://{session_url}"
    assert status(url, token) == 200 and status(url, session_token.token) == 403
    assert status(session_url, session_token.token) == 200 and status(session_url, token) == 403
    assert status(session_url, None) == 401
    if user_token:
        assert status(url, user_token) == 403 and status(session_url, user_token) == 403
    # the user's token file is as it was when the session started (absent stays absent)
    assert ray_heads.file_state(ray_heads.USER_TOKEN) == session_token.user_token_before
