"""The study's RDB storage on a real SQLite file: URLs, reading back, warm starts, and optuna-dashboard over HTTP."""
from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from patchray.tune.study import (
    WARM_START_ATTR,
    open_storage,
    storage_url,
    study_name,
    study_summary,
    warm_start,
)

SPACE = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "patch_size": CategoricalDistribution([16, 24, 32]),
    "jitter": IntDistribution(0, 4),
}


def _add(study, value, state=TrialState.COMPLETE, intermediate=None, user_attrs=None, distributions=None, **params):
    distributions = distributions or SPACE
    study.add_trial(optuna.trial.create_trial(
        state=state, value=value, params=params, distributions={k: distributions[k] for k in params},
        intermediate_values=intermediate or {}, user_attrs=user_attrs or {}))


def _study(url, name, direction="maximize"):
    return optuna.create_study(storage=open_storage(url), study_name=name, direction=direction)


# ---- storage URLs ------------------------------------------------------------------------------------------

def test_storage_url_defaults_to_an_absolute_sqlite_file_in_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_url(None, Path("runs/tune")) == f"sqlite:///{tmp_path}/runs/tune/optuna.db"
    assert storage_url("", tmp_path) == f"sqlite:///{tmp_path}/optuna.db"


@pytest.mark.parametrize("url", ["sqlite:///runs/x.db", "sqlite:////abs/x.db", "postgresql://u:p@db:5432/tune",
                                 "postgresql+psycopg2://u@db/tune", "mysql://u:p@db/tune",
                                 "mysql+pymysql://u@db/tune"])
def test_storage_url_keeps_an_explicit_database_url(tmp_path, url):
    assert storage_url(url, tmp_path) == url


@pytest.mark.parametrize("value, message", [
    ("runs/tune/optuna.db", "for a SQLite file write sqlite:///"),
    ("redis://localhost:6379", "accepted forms"),
    ("journal.log", "'journal.log' is not a database URL"),
])
def test_storage_url_refuses_anything_else(tmp_path, value, message):
    with pytest.raises(ValueError, match="accepted forms") as excinfo:
        storage_url(value, tmp_path)
    assert message in str(excinfo.value)


def test_open_storage_creates_the_folder_of_a_sqlite_file(tmp_path):
    url = storage_url(None, tmp_path / "deep" / "er")
    _study(url, "s")
    assert (tmp_path / "deep" / "er" / "optuna.db").is_file()


def test_open_storage_names_the_missing_driver(tmp_path):
    if importlib.util.find_spec("mysql") is not None:
        pytest.skip("mysql-connector-python is installed here")
    # No server is contacted: SQLAlchemy imports the driver when it makes the engine.
    with pytest.raises(ImportError, match=r"'mysql\+mysqlconnector'.*pip install mysql-connector-python"):
        open_storage("mysql+mysqlconnector://u:p@127.0.0.1:1/tune")


def test_study_name_is_prefixed():
    assert study_name("reid-small") == "patchray-reid-small"


# ---- reading back ----------------------------------------------------------------------------------------

def test_a_second_reader_sees_the_same_trials(tmp_path):
    url = storage_url(None, tmp_path)
    writer = _study(url, study_name("a"))
    for i, value in enumerate([0.5, 0.7, 0.6]):
        _add(writer, value, lr=10.0 ** -(i + 2), patch_size=[16, 24, 32][i], jitter=i)

    reader = optuna.load_study(study_name=study_name("a"), storage=url)  # a storage object of its own
    assert [(t.params, t.value) for t in reader.trials] == [(t.params, t.value) for t in writer.trials]
    assert reader.best_value == 0.7
    assert study_summary(url, study_name("a")) == {
        "study": "patchray-a", "trials": 3, "states": {"COMPLETE": 3}, "best_value": 0.7, "best_trial": 1}


# ---- warm start ------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Argument ``group`` is an experimental feature")
def test_warm_start_copies_the_finished_trials_that_fit_the_new_space(tmp_path):
    url = storage_url(None, tmp_path)
    # Optuna keeps a categorical's choices fixed within a study, so the old study has its own wider space.
    old_space = {**SPACE, "patch_size": CategoricalDistribution([16, 24, 32, 48]), "jitter": IntDistribution(0, 8)}
    old = _study(url, "old")
    _add(old, 0.6, distributions=old_space, lr=0.01, patch_size=24, jitter=2, user_attrs={"epochs": 3})
    _add(old, None, state=TrialState.PRUNED, intermediate={0: 0.2, 1: 0.3}, distributions=old_space,
         lr=0.05, patch_size=16, jitter=1)
    _add(old, 0.9, distributions=old_space, lr=0.01, patch_size=48, jitter=2)  # 48 left the choices
    _add(old, 0.8, distributions=old_space, lr=0.02, patch_size=32, jitter=7)  # 7 is past the new range
    _add(old, 0.4, distributions=old_space, lr=0.03, patch_size=32)  # a parameter fewer is fine (conditional)
    _add(old, 0.5, distributions={"momentum": FloatDistribution(0, 1)}, momentum=0.9)  # not in the space
    old.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params={}, distributions={}))
    int_lr = {**SPACE, "lr": IntDistribution(1, 10)}  # lr turned from a float range into an int one

    assert warm_start(url, "new", "old", SPACE) == 3
    assert warm_start(url, "other", "old", int_lr) == 0  # every copyable trial has a float "lr"

    storage = open_storage(url)
    new = optuna.create_study(
        storage=storage, study_name="new", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2, multivariate=True, group=True,
                                           constant_liar=True))
    complete = new.get_trials(states=(TrialState.COMPLETE,))
    pruned = new.get_trials(states=(TrialState.PRUNED,))
    assert [(t.params, t.value) for t in complete] == [
        ({"lr": 0.01, "patch_size": 24, "jitter": 2}, 0.6), ({"lr": 0.03, "patch_size": 32}, 0.4)]
    assert [t.intermediate_values for t in pruned] == [{0: 0.2, 1: 0.3}]
    assert complete[0].user_attrs == {"epochs": 3, WARM_START_ATTR: "old#0"}
    assert [t.user_attrs[WARM_START_ATTR] for t in new.trials] == ["old#0", "old#1", "old#4"]
    assert complete[0].distributions == {k: SPACE[k] for k in ("lr", "patch_size", "jitter")}

    # The sampler works from the copied history: past its random start, on the space they define.
    trial = new.ask(SPACE)
    assert set(trial.params) == set(SPACE)
    new.tell(trial, 0.1)
    assert study_summary(storage, "new")["states"] == {"COMPLETE": 3, "PRUNED": 1}

    # A restarted search warm-starting again does not double its history.
    assert warm_start(url, "new", "old", SPACE) == 0
    assert len(optuna.load_study(study_name="new", storage=url).trials) == 4


def test_warm_start_refuses_a_missing_study(tmp_path):
    url = storage_url(None, tmp_path)
    _study(url, "exists")
    with pytest.raises(ValueError, match="from 'nope'.*no study of that name.*it has: exists"):
        warm_start(url, "new", "nope", SPACE)
    assert optuna.study.get_all_study_names(url) == ["exists"]  # nothing created on the way out


def test_warm_start_refuses_the_opposite_direction(tmp_path):
    url = storage_url(None, tmp_path)
    _study(url, "losses", direction="minimize")
    with pytest.raises(ValueError, match="from study 'losses'.*minimize"):
        warm_start(url, "new", "losses", SPACE, direction="maximize")


# ---- optuna-dashboard over HTTP --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dashboard_command() -> list[str]:
    # The console script lives beside the interpreter in a venv; the package has no __main__ for `python -m`.
    script = Path(sys.executable).parent / "optuna-dashboard"
    found = str(script) if script.is_file() else shutil.which("optuna-dashboard")
    if found is None:
        pytest.fail("optuna-dashboard is importable but its console script is not installed")
    return [found]


def _get_json(base: str, route: str):
    with urllib.request.urlopen(base + route, timeout=5) as response:
        assert response.status == 200
        return json.load(response)


def _wait_until_up(process: subprocess.Popen, base: str, log: Path, timeout_s: float = 60.0) -> None:
    # Generous: the dashboard imports scikit-learn (for fANOVA) at start, 2-3 s idle, 10-20 s on a loaded machine.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"optuna-dashboard exited with {process.returncode}:\n{log.read_text()}")
        try:
            _get_json(base, "/api/meta")
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    pytest.fail(f"optuna-dashboard did not answer {base} within {timeout_s} s:\n{log.read_text()}")


def test_optuna_dashboard_reads_the_study_over_http(tmp_path):
    pytest.importorskip("optuna_dashboard")
    url = storage_url(None, tmp_path / "runs" / "tune")
    study = _study(url, study_name("watch"))
    values = [0.31, 0.52, 0.47]
    for i, value in enumerate(values):
        _add(study, value, lr=10.0 ** -(i + 2), patch_size=[16, 24, 32][i], jitter=i)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dashboard.log"
    with log.open("w") as stderr:
        # wsgiref explicitly: with gunicorn installed "auto" would fork workers the test does not need
        process = subprocess.Popen(
            [*_dashboard_command(), url, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"],
            stdout=stderr, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(process, base, log)
        summaries = _get_json(base, "/api/studies")["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in summaries] == [("patchray-watch", ["maximize"])]

        detail = _get_json(base, f"/api/studies/{summaries[0]['study_id']}")
        assert detail["name"] == "patchray-watch"
        assert [(t["number"], t["state"], t["values"]) for t in detail["trials"]] == [
            (i, "Complete", [v]) for i, v in enumerate(values)]
        assert [t["values"] for t in detail["best_trials"]] == [[0.52]]
        assert {p["name"]: p["param_external_value"] for p in detail["trials"][1]["params"]} == {
            "lr": "0.001", "patch_size": "24", "jitter": "1"}

        # A trial the search finishes while the dashboard is up shows once its trial cache (2 s) expires.
        _add(study, 0.9, lr=0.02, patch_size=16, jitter=3)
        deadline = time.monotonic() + 10
        while len(trials := _get_json(base, f"/api/studies/{summaries[0]['study_id']}")["trials"]) < 4:
            assert time.monotonic() < deadline, "the dashboard did not show the new trial within 10 s"
            time.sleep(0.5)
        assert trials[-1]["values"] == [0.9]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
