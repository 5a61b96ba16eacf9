"""Fine-tuning's outputs (tables, summary, printed summary, epoch line) for attribute sets not shaped like
PARSE-27k, and with both evaluation protocols."""
import json

import numpy as np
import pytest
import torch

from patchray import config as configlib
from patchray.metrics import attribute_metrics, to_jsonable
from patchray.shards import PARSE27K, AttributeSet
from patchray.train.config import FinetuneConfig
from patchray.train.finetune import format_summary, write_outputs
from patchray.train.finetune_loop import _summary_metrics, scores_text
from patchray.train.rows import epoch_rows

ORIENTATION_ONLY = AttributeSet((PARSE27K["Orientation"],))


def _metrics(attributes, n=12, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, a.num_classes + 1, n) for a in attributes], 1)
    probs = [rng.dirichlet(np.ones(a.num_classes), n) for a in attributes]
    return attribute_metrics(probs, labels, attributes)


def _history(attributes, evaluate_test=True):
    history = []
    for epoch in range(2):
        metrics = {"epoch": epoch, "lr": 0.01, "loss": 1.5 - 0.1 * epoch, "crops": 10, "crops_per_s": 5.0,
                   "data_wait_frac": 0.1, "skipped_rows": 0, "workers": 1} | epoch_rows(10, 10, 0)
        val = _metrics(attributes, seed=epoch)
        test = _metrics(attributes, seed=10) if epoch == 1 and evaluate_test else None
        metrics |= _summary_metrics("val", val) | _summary_metrics("test", test)
        history.append(metrics | {"skipped": {}, "val": to_jsonable(val), "test": to_jsonable(test)})
    return history


def _write(tmp_path, attributes, **overrides):
    cfg = configlib.build(FinetuneConfig, {"out": str(tmp_path), "name": "ft"} | overrides)
    state = {"model": {"w": torch.zeros(2)}}
    skipped = {"val": {}, "test": {}} if cfg.evaluate_test else {"val": {}}
    return write_outputs(tmp_path, cfg, state, _history(attributes, cfg.evaluate_test), 10, skipped, "1 worker",
                         12.0, {"identity": 1}, class_weights=[[1.0, 1.0, 1.0, 1.0]])


def test_outputs_of_an_orientation_only_dataset(tmp_path):
    history = _history(ORIENTATION_ONLY)
    assert history[0]["val_mAP"] is None and history[0]["val_parse27k_mAP"] is None
    assert history[0]["val_parse27k_mBER"] is not None
    line = scores_text(history[0])  # the epoch line formatted mAP as a number and crashed on None
    assert line.startswith(" val mA ") and "mAP" not in line

    summary = _write(tmp_path, ORIENTATION_ONLY, loss="balanced")
    assert summary["test"]["mAP"] is None and summary["test"]["parse27k_mAP"] is None
    assert summary["test"]["parse27k_mBER"] is not None and summary["loss"] == "balanced"
    json.loads((tmp_path / "summary.json").read_text())
    text = format_summary(summary)
    assert "protocol parse27k (the paper's): mBER " in text and "mAP" not in text
    assert "orientation accuracy" in text and ", loss balanced" in text
    table = (tmp_path / "test_metrics.md").read_text()
    assert "## Protocol parse27k" in table and "## Protocol balanced" in table
    assert "AP (%)" not in table and "AP, 11-point" not in table and "**mAP**" not in table
    test = json.loads((tmp_path / "test_metrics.json").read_text())
    assert set(test["parse27k"]["attributes"]) == {"Orientation"}
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_outputs_of_parse27k_shaped_data_report_both_protocols(tmp_path):
    summary = _write(tmp_path, PARSE27K)
    for split in ("val", "test"):
        assert set(summary[split]) == {"mA", "mAP", "mBER", "orientation_accuracy", "parse27k_mAP", "parse27k_mBER"}
        assert all(v is not None for v in summary[split].values())
    text = format_summary(summary)
    assert "protocol parse27k (the paper's): mAP " in text and "protocol balanced: mA " in text
    table = (tmp_path / "test_metrics.md").read_text()
    assert "| Gender | male |" in table and "| HasTrolley | yes |" in table
    assert json.loads((tmp_path / "val_metrics.json").read_text())["parse27k"]["mBER"] == pytest.approx(
        summary["val"]["parse27k_mBER"])


def test_a_single_attribute_with_one_class_present(tmp_path):
    gender = AttributeSet((PARSE27K["Gender"],))
    labels = np.array([[1], [1], [0], [1]])  # male only, one N/A
    metrics = attribute_metrics([np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])], labels, gender)
    scores = _summary_metrics("val", metrics)
    assert scores["val_mA"] == pytest.approx(2 / 3) and scores["val_orientation_acc"] is None
    assert scores["val_mAP"] is None  # no "female" positive: protocol balanced's AP is undefined
    assert scores["val_parse27k_mAP"] == pytest.approx(1.0)  # male is parse27k's positive, all positives
    assert scores["val_parse27k_mBER"] == pytest.approx((1 + 1 / 3) / 2)  # N/A row 1, male row 1/3
    assert scores_text(scores) == " val mA 0.667"


def test_outputs_without_a_test_evaluation_hold_no_test_number(tmp_path):
    (tmp_path / "test_metrics.md").write_text("an earlier run's table")  # not this run's: removed
    summary = _write(tmp_path, PARSE27K, evaluate_test=False)
    assert summary["test"] is None and summary["tables"] == [] and "test" not in summary["skipped_rows"]
    assert json.loads((tmp_path / "summary.json").read_text())["test"] is None
    assert not (tmp_path / "test_metrics.md").exists() and not (tmp_path / "test_metrics.json").exists()
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any(key.startswith("test") for h in history for key in h)
    assert history[-1]["val_mA"] is not None
    text = format_summary(summary)
    assert "test not evaluated (evaluate_test: false)" in text and "test_metrics" not in text
    assert "  val, protocol balanced: mA " in text and "test," not in text
    assert (tmp_path / "curves.png").stat().st_size > 0
