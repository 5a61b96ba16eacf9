"""Tracking, read back with each tracker's own reader: MLflow's client on a real SQLite store, TensorBoard's
event accumulator on real event files."""
import json

import numpy as np
import pytest
from PIL import Image

from patchray import tracking

mlflow = pytest.importorskip("mlflow")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_config_params_are_flat_and_keep_types_readable():
    params = tracking.config_params({"seed": 3, "name": "run", "task": {"grid": "2x4", "jitter": [1, 2]},
                                     "optim": {"lr": 0.01}, "labels": None, "empty": {}})
    assert params == {"seed": "3", "name": "run", "task.grid": "2x4", "task.jitter": "[1, 2]", "optim.lr": "0.01",
                      "labels": "null", "empty": "{}"}


def test_epoch_metrics_keep_finite_numbers_and_one_level_dicts():
    row = {"epoch": 2, "loss": 1.5, "val_acc": 0.25, "amp": True, "note": "x", "probe_mA": None,
           "diverged": float("nan"), "skipped": {"decode": 3, "size": 0, "why": "text"}, "first_step_at": 1e9,
           "val_confusion": [[1, 0], [0, 1]]}
    assert tracking.epoch_metrics(row) == {"loss": 1.5, "val_acc": 0.25, "skipped/decode": 3.0, "skipped/size": 0.0}


def _plot(path):
    Image.fromarray(np.full((8, 12, 3), 200, np.uint8)).save(path)
    return path


def test_mlflow_run_holds_config_epochs_summary_and_artifacts_and_a_resumed_job_continues_it(tmp_path):
    out = tmp_path / "run"
    spec = tracking.start("mlflow", None, out, "pretrain", "run", {"seed": 1, "optim": {"lr": 0.01}}, log=print)
    assert spec.target == f"sqlite:///{(out / tracking.MLFLOW_DB).resolve()}"
    logger = tracking.EpochLogger(spec)
    for epoch, loss in enumerate([2.0, 1.5]):
        logger({"epoch": epoch, "loss": loss})
    # The job stops and is started again: same run, params not logged twice, later epochs added.
    again = tracking.start("mlflow", None, out, "pretrain", "run", {"seed": 1, "optim": {"lr": 0.01}}, log=print)
    assert again.run_id == spec.run_id
    tracking.EpochLogger(again)({"epoch": 2, "loss": 1.2})
    tracking.finish(again, {"val_acc": 0.5, "ignored": "text"}, 3, [_plot(out / "curves.png"), out / "missing.json"])

    client = mlflow.tracking.MlflowClient(spec.target)
    run = client.get_run(spec.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"seed": "1", "optim.lr": "0.01"}
    assert [(m.step, m.value) for m in client.get_metric_history(spec.run_id, "loss")] == [(1, 2.0), (2, 1.5),
                                                                                          (3, 1.2)]
    assert run.data.metrics["summary/val_acc"] == 0.5
    assert [a.path for a in client.list_artifacts(spec.run_id)] == ["curves.png"]
    assert (out / tracking.MLFLOW_ARTIFACTS).is_dir()  # artifacts beside the run, not in the working directory
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "patchray-pretrain"
    assert json.loads((out / tracking.RUN_RECORD).read_text())["run_id"] == spec.run_id


def test_a_new_store_starts_a_new_run_and_a_failed_job_is_marked_failed(tmp_path):
    out = tmp_path / "run"
    first = tracking.start("mlflow", None, out, "finetune", "run", {}, log=print)
    other_uri = f"sqlite:///{tmp_path / 'other.db'}"
    second = tracking.start("mlflow", other_uri, out, "finetune", "run", {}, log=print)
    assert second.run_id != first.run_id
    tracking.finish(second, {}, 0, [], failed=True)
    assert mlflow.tracking.MlflowClient(other_uri).get_run(second.run_id).info.status == "FAILED"


def test_tensorboard_events_hold_epoch_scalars_config_and_plots(tmp_path):
    out = tmp_path / "run"
    spec = tracking.start("tensorboard", None, out, "pretrain", "run", {"seed": 1}, log=print)
    logger = tracking.EpochLogger(spec)
    for epoch, loss in enumerate([2.0, 1.5]):
        logger({"epoch": epoch, "loss": loss})
    tracking.finish(spec, {"val_acc": 0.5}, 2, [_plot(out / "curves.png")])
    logger._run.release()

    events = event_accumulator.EventAccumulator(spec.target, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 2.0), (2, 1.5)]
    assert [(e.step, e.value) for e in events.Scalars("summary/val_acc")] == [(2, 0.5)]
    image = events.Images("curves")[0]
    assert (image.width, image.height) == (12, 8)
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()  # add_text's table
    assert "| seed | 1 |" in config


def test_a_failing_tracker_stops_logging_once_and_says_so(tmp_path):
    lines = []
    spec = tracking.TrackerSpec("mlflow", f"sqlite:///{tmp_path / 'x.db'}", run_id="no-such-run")
    logger = tracking.EpochLogger(spec, log=lines.append)
    logger({"epoch": 0, "loss": 1.0})
    logger({"epoch": 1, "loss": 1.0})
    assert len(lines) == 1 and "logging epoch metrics stopped" in lines[0]


def test_missing_tracker_package_is_named(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(tracking.TrackingError, match=r'pip install -e "\.\[mlflow\]"'):
        tracking.start("mlflow", None, tmp_path, "pretrain", "run", {}, log=print)


def test_an_unreachable_tracking_server_is_named_at_once_and_a_live_one_passes():
    import http.server
    import socket
    import threading
    import time

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(tracking.TrackingError, match=rf"tracking_uri http://127.0.0.1:{port}: no MLflow tracking "
                                                     r"server answers"):
        tracking.start("mlflow", f"http://127.0.0.1:{port}", "unused", "pretrain", "run", {}, log=print)
    assert time.perf_counter() - started < 5  # not MLflow's minutes of retries

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            self.send_response(200 if self.path == "/health" else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracking.check_reachable(f"http://127.0.0.1:{server.server_port}")  # answers: no error
        Health.do_GET = lambda self: (self.send_response(503), self.end_headers())
        with pytest.raises(tracking.TrackingError, match="answered /health with HTTP 503"):
            tracking.check_reachable(f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
    tracking.check_reachable("sqlite:///nowhere/mlflow.db")  # local stores are checked by their first use


def test_a_store_that_cannot_be_opened_is_refused_naming_it(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    uri = f"sqlite:///{blocked}/mlflow.db"  # a database under a file: cannot be created
    with pytest.raises(tracking.TrackingError, match=rf"MLflow store {uri} refused a new run"):
        tracking.start("mlflow", uri, tmp_path / "run", "pretrain", "run", {}, log=print)


def test_a_job_that_raises_while_training_ends_its_run_failed_with_its_config_and_the_error_goes_on(tmp_path):
    out = tmp_path / "run"
    spec = tracking.start("mlflow", None, out, "pretrain", "run", {"seed": 1}, log=print)
    (out / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(KeyboardInterrupt):
        with tracking.failed_if_raised(spec, [out / "config.yaml"]):
            raise KeyboardInterrupt
    client = mlflow.tracking.MlflowClient(spec.target)
    assert client.get_run(spec.run_id).info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(spec.run_id)] == ["config.yaml"]
    with tracking.failed_if_raised(None, []):  # tracking off: nothing to end
        pass
