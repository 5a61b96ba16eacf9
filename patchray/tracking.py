"""Experiment tracking: a job's resolved config, per-epoch metrics and summary plots in MLflow or TensorBoard.

``tracking: mlflow`` logs to an MLflow tracking store: by default a SQLite database ``mlflow.db`` with the
artifacts in ``mlruns/``, both in the job's output folder (``tracking_uri`` names a server or another
database). ``tracking: tensorboard`` writes event files to ``tensorboard/`` in the output folder. Both are
optional extras (``pip install -e ".[mlflow]"`` / ``".[tensorboard]"``), imported only when chosen.

Pretraining and fine-tuning log live: the driver opens the run and logs the config, a Ray Train callback on
the controller (which Ray Train places on the driver's node) logs each epoch as the workers report it, and
the driver adds the summary and plots at the end. Tune uses Ray's own logger callbacks
(``tune_callbacks``). What is logged is pure data (``config_params``, ``epoch_metrics``), tested without a
tracker.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Tracking = Literal["none", "mlflow", "tensorboard"]
# What a config says about tracking; none of it changes a weight, so runs and caches ignore it.
TRACKING_KEYS = ("tracking", "tracking_uri")

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlruns"
TENSORBOARD_DIR = "tensorboard"
RUN_RECORD = "tracking.json"  # beside a run's outputs: which tracker run it logs to (a resumed job continues it)
EXPERIMENT_PREFIX = "patchray-"  # one MLflow experiment per job kind: patchray-pretrain, patchray-finetune, ...
MLFLOW_PARAM_BATCH = 100  # MLflow takes at most 100 params per log_batch call


class TrackingError(RuntimeError):
    """The chosen tracker cannot be used (not installed, store unreachable); said before training starts."""


def config_params(config: dict) -> dict[str, str]:
    """A resolved config as flat ``section.key`` -> text: MLflow params, and TensorBoard's config table."""
    from patchray.config import flatten

    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in flatten(config).items()}


def epoch_metrics(row: dict) -> dict[str, float]:
    """The numbers of one epoch's metrics row worth a curve: finite numbers, and numbers in one-level dicts as
    ``key/name`` (rows skipped by reason). Flags, text, epoch counters and timestamps are left out."""
    out = {}
    for key, value in row.items():
        if key in _NOT_CURVES:
            continue
        if isinstance(value, dict):
            out |= {f"{key}/{name}": float(v) for name, v in value.items() if _is_number(v)}
        elif _is_number(value):
            out[key] = float(value)
    return out


_NOT_CURVES = frozenset({"epoch", "first_step_at", "worker_started_at", "worker_ready_at", "workers",
                         "val_confusion", "val", "test"})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrackerSpec:
    """Where one job run logs: enough to reopen it in another process (Ray Train's controller)."""
    kind: Tracking
    target: str          # mlflow: the tracking URI; tensorboard: the event folder
    run_id: str = ""     # mlflow's run id

    def open(self):
        if self.kind == "mlflow":
            return MlflowRun(self)
        return TensorboardRun(self)


def mlflow_uri(out: Path, tracking_uri: str | None) -> str:
    """``tracking_uri``, or a SQLite store in ``out``: MLflow 3 refuses its old file store (``./mlruns``)."""
    return tracking_uri or f"sqlite:///{(Path(out) / MLFLOW_DB).resolve()}"


def mlflow_store(out: Path, tracking_uri: str | None, job: str) -> tuple[str, object, str]:
    """(URI, client, experiment id) of the MLflow store a job of kind ``job`` logs to, its experiment
    ``patchray-<job>`` made if missing. An unreachable server or a store MLflow cannot open is refused here,
    naming the URI, before anything trains."""
    uri = mlflow_uri(out, tracking_uri)
    check_reachable(uri)
    try:
        client = mlflow_client(uri)
        return uri, client, mlflow_experiment(client, EXPERIMENT_PREFIX + job, out, tracking_uri)
    except TrackingError:
        raise
    except Exception as e:  # a database path under a file, a bad URL, a server that errs
        raise _refused(uri, e) from None


def mlflow_experiment(client, name: str, out: Path, tracking_uri: str | None) -> str:
    """The experiment's id, created if missing; with the local default store its artifacts go to
    ``out/mlruns`` (a server keeps its own artifact store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None if tracking_uri else (Path(out) / MLFLOW_ARTIFACTS).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


# MLflow and its database migrations (alembic) log at INFO when a store is first made; a job's output is
# patchray's own unless --verbose (PATCHRAY_VERBOSE=1, read here as patchray.console reads it).
QUIET_LOGGERS = ("mlflow", "alembic")


def mlflow_client(uri: str):
    import logging

    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError("tracking: mlflow needs MLflow: pip install -e \".[mlflow]\"") from None
    if os.environ.get("PATCHRAY_VERBOSE", "").strip().lower() not in ("1", "true", "yes"):
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


class MlflowRun:
    def __init__(self, spec: TrackerSpec):
        self.spec, self.client = spec, mlflow_client(spec.target)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]  # MLflow's limit on a param's value
        existing = self.client.get_run(self.spec.run_id).data.params
        items = [p for p in items if p.key not in existing]  # a resumed run: params are logged once
        for i in range(0, len(items), MLFLOW_PARAM_BATCH):
            self.client.log_batch(self.spec.run_id, params=items[i:i + MLFLOW_PARAM_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.spec.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_files(self, paths: list[str]) -> None:
        for path in paths:
            self.client.log_artifact(self.spec.run_id, path)

    def release(self) -> None:
        """Done logging from this process; the run goes on (another process, or the end, closes it)."""

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.spec.run_id, status=status)


class TensorboardRun:
    def __init__(self, spec: TrackerSpec):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackingError("tracking: tensorboard needs TensorBoard: pip install -e \".[tensorboard]\"") \
                from None
        self.writer = SummaryWriter(spec.target)

    def log_params(self, params: dict[str, str]) -> None:
        table = "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("config", table, 0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_files(self, paths: list[str]) -> None:
        """PNG plots as images (TensorBoard shows no other files)."""
        import numpy as np
        from PIL import Image

        for path in paths:
            if path.endswith(".png"):
                with Image.open(path) as image:
                    self.writer.add_image(Path(path).stem, np.asarray(image.convert("RGB")), 0, dataformats="HWC")

    def release(self) -> None:
        self.writer.close()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


def open_run(kind: Tracking, out: Path, job: str, run_name: str, tracking_uri: str | None = None) -> TrackerSpec | None:
    """Open (or, for a resumed job, reopen) this job run's tracker run; None when tracking is off. Fails here,
    before training, when the tracker is missing or its store cannot be reached."""
    if kind == "none":
        return None
    out = Path(out)
    if kind == "tensorboard":
        spec = TrackerSpec("tensorboard", str((out / TENSORBOARD_DIR).resolve()))
        TensorboardRun(spec)  # the import and the folder, checked now
        return spec
    uri, client, experiment = mlflow_store(out, tracking_uri, job)
    record = out / RUN_RECORD
    if record.exists():
        earlier = json.loads(record.read_text())
        if earlier.get("uri") == uri and _mlflow_run_exists(client, earlier.get("run_id")):
            client.update_run(earlier["run_id"], status="RUNNING")
            return TrackerSpec("mlflow", uri, earlier["run_id"])
    try:
        run = client.create_run(experiment, run_name=run_name,
                                tags={"patchray.job": job, "patchray.output": str(out)})
    except Exception as e:  # the store refuses (a server that errs): say which
        raise _refused(uri, e) from None
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"uri": uri, "run_id": run.info.run_id, "experiment": EXPERIMENT_PREFIX + job})
                      + "\n")
    return TrackerSpec("mlflow", uri, run.info.run_id)


# How long the start of a job waits for a tracking server before it says so (MLflow's own client retries an
# unreachable server for minutes).
SERVER_TIMEOUT_S = 10.0


def check_reachable(uri: str, timeout_s: float = SERVER_TIMEOUT_S) -> None:
    """An http(s) tracking URI must answer MLflow's ``/health`` before training starts; other stores (a local
    SQLite file, a database URL) are checked by their first use."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError as e:  # it answers: a server (perhaps behind a proxy without /health)
        if e.code != 404:
            raise TrackingError(f"tracking_uri {uri}: the server answered /health with HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"tracking_uri {uri}: no MLflow tracking server answers ({reason}); start it, fix "
                            "tracking_uri, or leave it unset for a local store in the job's folder") from None


def _refused(uri: str, error: Exception) -> TrackingError:
    first = str(error).splitlines()[0] if str(error) else ""
    return TrackingError(f"tracking: MLflow store {uri} refused a new run: {type(error).__name__}: {first}")


def _mlflow_run_exists(client, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        client.get_run(run_id)
    except Exception:  # MlflowException: the store no longer has it (a new database): start a new run
        return False
    return True


def describe(spec: TrackerSpec | None) -> str:
    if spec is None:
        return ""
    if spec.kind == "mlflow":
        return f"MLflow run {spec.run_id} in {spec.target}"
    return f"TensorBoard events in {spec.target} (tensorboard --logdir {spec.target})"


def start(kind: Tracking, tracking_uri: str | None, out: Path, job: str, run_name: str, config: dict,
          log=print) -> TrackerSpec | None:
    """Open this job run's tracker run and log its resolved config; None when tracking is off."""
    spec = open_run(kind, out, job, run_name, tracking_uri)
    if spec is not None:
        run = spec.open()
        run.log_params(config_params(config))
        run.release()
        log(f"[{job}] tracking: {describe(spec)}")
    return spec


class EpochLogger:
    """Logs each epoch's metrics row to one tracker run (step: the 1-based epoch, as the job's log lines count),
    opened on first use in whichever process holds the logger: Ray Train's controller, during training. A
    tracker that fails mid-run is reported once and then left alone: losing curves must not cost the training."""

    def __init__(self, spec: TrackerSpec, log=None):
        self.spec, self.log = spec, log  # log None: print (a function that travels to another process by name)
        self._run = None
        self.failed = False

    def __call__(self, row: dict) -> None:
        if self.failed:
            return
        try:
            if self._run is None:
                self._run = self.spec.open()
            self._run.log_metrics(epoch_metrics(row), int(row["epoch"]) + 1)
        except Exception as e:  # a tracking server gone away, a full disk: training goes on, the log says so
            self.failed = True
            (self.log or print)(f"[tracking] logging epoch metrics stopped: {type(e).__name__}: {e}")

    def __getstate__(self):  # travels to the controller unopened
        return {"spec": self.spec, "log": None, "_run": None, "failed": False}


@contextmanager
def failed_if_raised(spec: TrackerSpec | None, files: list) -> Iterator[None]:
    """Around a job's training: if it raises (a failure, an interrupt), the tracker run ends FAILED with
    ``files`` (the config) attached, and the error goes on."""
    try:
        yield
    except BaseException:
        finish(spec, {}, 0, files, failed=True)
        raise


def finish(spec: TrackerSpec | None, numbers: dict, step: int, files: list[str], failed: bool = False) -> None:
    """The summary's headline ``numbers`` (metrics ``summary/<name>`` at the last step), the outputs ``files``
    (plots, tables, config, summary; MLflow artifacts, TensorBoard images for the PNGs), and the run's end."""
    if spec is None:
        return
    run = spec.open()
    numbers = {f"summary/{k}": float(v) for k, v in numbers.items() if _is_number(v)}
    if numbers:
        run.log_metrics(numbers, step)
    run.log_files([str(f) for f in files if Path(f).exists()])
    run.close("FAILED" if failed else "FINISHED")
