"""Evaluation metrics for person attribute recognition (PARSE-27k protocol), in plain numpy.

The PARSE-27k benchmark reports, per attribute, the balanced error rate (BER:
one minus the mean per-class recall, so that a classifier cannot score well
by always answering the majority class) and, for binary attributes, the
average precision (AP) of the positive class. Examples labeled N/A (stored
value 0) carry no ground truth and are left out of every metric.

Conventions used throughout:

* Class indices passed to :func:`accuracy` and :func:`balanced_accuracy` are
  0-based (``stored value - 1``); :func:`attribute_metrics` does that shift.
* A quantity with nothing to average over is ``NaN`` (never 0), so that it
  cannot pass for a real score; :func:`to_jsonable` turns it into ``None``.
* Predictions are the argmax of the probabilities; equal probabilities go to
  the lower class index (numpy's argmax).

Two protocols are computed side by side (see README, "Metrics"):

* ``balanced`` (patchray's own, the top-level keys of :func:`attribute_metrics`):
  N/A excluded everywhere; balanced accuracy / BER over the classes present;
  non-interpolated AP of the second class name (``yes``, ``female``, ``walking``).
* ``parse27k`` (the authors' evaluation scripts, ``pmetrics.py`` and
  ``parse_evaluation.py`` of GitHub psudowe/parse27k_tools; the ``"parse27k"``
  key): 11-point interpolated AP of the positive classes ``yes`` / ``male`` /
  ``standing`` with N/A dropped, and a BER that counts N/A as a true class. This
  is the one comparable with the paper's tables.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from patchray.shards.attributes import NA, Attribute, AttributeSet

ORIENTATION = "Orientation"
_MISSING = "–"  # table cell for a metric that is undefined or does not apply
# The authors' positive classes (parse27k_tools attribute_datasets.py: stored 1 = POS, "by convention we
# handled the male as the 'pos' label"; Posture: "standing -> pos (less frequent)"; the others are yes/no).
PARSE27K_POSITIVE_NAMES = ("yes", "male", "standing")


def _ranked_blocks(scores: np.ndarray, positives: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """What both APs rank on: (number of positives, index of the last example of each block of equal scores
    in descending order (the block's cut-off rank), true positives up to each block's end); None without a
    positive. Checks the inputs."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = _as_bool(positives, "positives")
    if scores.ndim != 1 or positives.shape != scores.shape:
        raise ValueError(f"scores and positives must be 1-D of equal length, got {scores.shape} and {positives.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite: a NaN or infinite score has no place in a ranking")
    num_positives = int(positives.sum())
    if num_positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    block_ends = np.append(np.flatnonzero(np.diff(sorted_scores) != 0), len(sorted_scores) - 1)
    return num_positives, block_ends, np.cumsum(positives[order])[block_ends]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated average precision of ranking ``scores`` in descending order.

    AP = (1 / P) * sum over positives p of precision@rank(p), with P the number
    of positives. ``positives`` is a bool (or 0/1) array of the same length.

    Ties: examples with equal scores form one block that is retrieved all at
    once, so every positive in a block gets the precision measured at the end
    of that block (the same as sklearn's ``average_precision_score``, which
    thresholds at each distinct score). The result therefore does not depend on
    the order of tied examples. Example: scores [0.8, 0.8, 0.8], positives
    [1, 1, 0] give 2/3 (not 1 or 7/12, as an optimistic or pessimistic order would).

    Returns NaN when there is no positive (AP is undefined, not zero).
    """
    ranked = _ranked_blocks(scores, positives)
    if ranked is None:
        return math.nan
    num_positives, block_ends, tp_at_block_end = ranked
    precision_at_block_end = tp_at_block_end / (block_ends + 1)
    positives_in_block = np.diff(tp_at_block_end, prepend=0)
    return float(np.sum(positives_in_block * precision_at_block_end) / num_positives)


def interpolated_average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """11-point interpolated AP (PASCAL VOC 2007 style), as the authors' ``average_precision_everingham``.

    AP = mean over recall levels r in {0, 0.1, ..., 1} of the highest precision
    reached at any cut-off whose recall is >= r (0 when no cut-off reaches r).
    Callers drop N/A examples first (the authors' ``precision_recall`` does).

    Two knowing details, both order- and rounding-independent versions of the
    authors' loop: cut-offs are the distinct scores (tied examples are retrieved
    as one block, as in :func:`average_precision`; the authors' sweep, one
    example at a time, depends on the input order of ties), and "recall >= r" is
    decided exactly in integers (``10 * TP >= k * P``), so recall 3/10 reaches
    0.3 (with the authors' ``np.linspace`` levels 0.30000000000000004 it would
    not). Without ties, and away from such float edges, the values are theirs.
    NaN when there is no positive (the authors' script divides by zero there).
    """
    ranked = _ranked_blocks(scores, positives)
    if ranked is None:
        return math.nan
    num_positives, block_ends, tp = ranked
    precision = tp / (block_ends + 1)
    levels = np.arange(11)
    # reached[k, c]: cut-off c has recall >= k / 10, i.e. 10 * tp >= k * P (exact).
    reached = 10 * tp[None, :] >= levels[:, None] * num_positives
    best = np.where(reached, precision[None, :], 0.0).max(axis=1)
    return float(best.mean())


def parse27k_positive(attribute: Attribute) -> int:
    """0-based class index of a binary attribute's positive class under protocol ``parse27k``.

    The class named ``yes``, ``male`` or ``standing`` (case-insensitive), as the
    authors' label convention: PARSE-27k's Gender ``male``, Posture ``standing``
    (patchray stores both as the *first* class) and ``yes`` of the yes/no
    attributes (patchray's second class). Other binary attributes (none of
    those names, or both classes named so) keep protocol ``balanced``'s
    positive class, the second class name. Multi-class attributes have none.
    """
    if not attribute.is_binary:
        raise ValueError(f"attribute {attribute.name!r} is not binary: it has no positive class")
    named = [i for i, name in enumerate(attribute.classes) if name.lower() in PARSE27K_POSITIVE_NAMES]
    return named[0] if len(named) == 1 else 1


def parse27k_balanced_error_rate(stored: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """BER the authors' way (``pmetrics.balanced_error_rate`` on ``softmax_to_confmat``): N/A is a true class.

    ``stored`` holds stored labels 0..K (0 = N/A), ``y_pred`` the predicted
    0-based indices of the K real classes. The confusion matrix has K + 1 rows
    and columns, N/A first; BER = mean over its rows (true classes, N/A
    included) of the row's error rate, 1 - recall.

    Interpretation: the authors' nets have K + 1 outputs, N/A first, but with
    N/A examples adding no loss (the PatchIt fine-tuning) nothing trains the N/A
    output up, so it is in effect never predicted (their ``make_up_predictions``
    zeroes it in retrieval mode); patchray's heads have no N/A output at all.
    So the N/A row's error is 1 whenever the split holds an N/A example: a
    classifier is charged for every N/A example it cannot flag. A true class without any example is left
    out of the mean (in the authors' script its row is 0/0 = NaN and spoils the
    mean); NaN when there is no example at all.
    """
    stored = np.asarray(stored).astype(np.int64, copy=False)
    y_pred = np.asarray(y_pred).astype(np.int64, copy=False)
    if stored.ndim != 1 or stored.shape != y_pred.shape:
        raise ValueError(f"stored and y_pred must be 1-D of equal length, got {stored.shape} and {y_pred.shape}")
    if stored.size and (stored.min() < NA or stored.max() > num_classes):
        raise ValueError(f"stored labels must lie in 0..{num_classes}")
    if y_pred.size and (y_pred.min() < 0 or y_pred.max() >= num_classes):
        raise ValueError(f"y_pred holds class indices outside 0..{num_classes - 1}")
    if stored.size == 0:
        return math.nan
    support = np.bincount(stored, minlength=num_classes + 1)
    hits = np.bincount(stored[stored == y_pred + 1], minlength=num_classes + 1)  # N/A (0) is never hit
    present = support > 0
    return float(np.mean(1.0 - hits[present] / support[present]))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions equal to the truth; NaN for no example."""
    y_true, y_pred = _paired_labels(y_true, y_pred)
    if y_true.size == 0:
        return math.nan
    return float(np.mean(y_true == y_pred))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (0-based indices).

    Classes absent from ``y_true`` have no recall and are not averaged;
    predicting them still counts as a miss for the true class. NaN for no example.
    """
    y_true, y_pred = _paired_labels(y_true, y_pred)
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside 0..{num_classes - 1}")
    if y_true.size == 0:
        return math.nan
    support = np.bincount(y_true, minlength=num_classes)
    hits = np.bincount(y_true[y_true == y_pred], minlength=num_classes)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def balanced_error_rate(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """1 - :func:`balanced_accuracy`: PARSE-27k's headline error measure."""
    return 1.0 - balanced_accuracy(y_true, y_pred, num_classes)


def attribute_metrics(probs: Sequence[np.ndarray], labels: np.ndarray, attributes: AttributeSet) -> dict[str, Any]:
    """Per-attribute and summary metrics of predicted class probabilities.

    ``probs[a]`` is [N, K_a]: probabilities of the K real classes of attribute a
    (column 0 = stored value 1). ``labels`` is [N, A] stored values (0 = N/A),
    columns in ``attributes``' order.

    Returns::

        {"attributes": {name: {"accuracy", "balanced_accuracy", "ber", "count"[, "ap"]}},
         "mA", "mBER", "mAP", "mean_accuracy", "orientation_accuracy",
         "num_examples", "excluded", "ap_undefined", "protocol": "balanced",
         "parse27k": {"attributes": {name: {"ber", "count", "na_count"[, "ap", "positive"]}},
                      "mAP", "mBER"}}

    The top-level keys are protocol ``balanced``; ``"parse27k"`` holds the
    authors' protocol (:func:`interpolated_average_precision` of the class
    :func:`parse27k_positive` names, :func:`parse27k_balanced_error_rate`),
    averaged as the authors do: mAP over the binary attributes, mBER over every
    attribute (multi-class ones included). Its attributes without a labeled
    example are NaN and left out of its means too (``"excluded"`` applies to
    both protocols), as are undefined APs.

    * ``"ap"`` appears for binary attributes only: AP of the positive class
      (stored value 2, the second class name) ranked by its probability.
    * ``"excluded"``: attributes without a single labeled example. Their
      entries are NaN (count 0) and they are left out of every mean.
    * ``"ap_undefined"``: binary attributes that have labeled examples but no
      positive among them; their AP is NaN and left out of mAP only.
    * mA / mean_accuracy average over all attributes not excluded (multi-class
      ones such as Orientation included); mBER = 1 - mA; mAP averages the
      defined APs. ``orientation_accuracy`` is the plain accuracy of the
      attribute named "Orientation", NaN when there is none or it is excluded.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(attributes):
        raise ValueError(f"labels must be [N, {len(attributes)}] (one column per attribute), got {labels.shape}")
    if len(probs) != len(attributes):
        raise ValueError(f"expected {len(attributes)} probability arrays (one per attribute), got {len(probs)}")
    num_examples = labels.shape[0]

    per_attribute: dict[str, dict[str, float | int]] = {}
    excluded: list[str] = []
    ap_undefined: list[str] = []
    paper_entries: dict[str, dict[str, Any]] = {}
    for column, (attribute, attribute_probs) in enumerate(zip(attributes, probs)):
        attribute_probs = np.asarray(attribute_probs, dtype=np.float64)
        expected_shape = (num_examples, attribute.num_classes)
        if attribute_probs.shape != expected_shape:
            raise ValueError(f"probs for {attribute.name!r} must be {expected_shape}, got {attribute_probs.shape}")
        stored = labels[:, column]
        if stored.min(initial=NA) < NA or stored.max(initial=NA) > attribute.num_classes:
            raise ValueError(f"labels of {attribute.name!r} must lie in 0..{attribute.num_classes}")

        labeled = stored != NA
        y_true = stored[labeled].astype(np.int64) - 1
        labeled_probs = attribute_probs[labeled]
        if not np.all(np.isfinite(labeled_probs)):
            raise ValueError(f"probs for {attribute.name!r} hold NaN or infinite values on labeled examples")
        y_pred = np.argmax(labeled_probs, axis=1)
        # Protocol parse27k scores N/A examples as a class the net never predicts (their prediction is moot).
        all_pred = np.zeros(num_examples, dtype=np.int64)
        all_pred[labeled] = y_pred
        paper: dict[str, Any] = {
            "ber": parse27k_balanced_error_rate(stored, all_pred, attribute.num_classes) if labeled.any() else math.nan,
            "count": int(labeled.sum()),
            "na_count": int(num_examples - labeled.sum()),
        }
        if attribute.is_binary:
            positive = parse27k_positive(attribute)
            paper["positive"] = attribute.classes[positive]
            paper["ap"] = interpolated_average_precision(labeled_probs[:, positive], y_true == positive)
        paper_entries[attribute.name] = paper

        entry: dict[str, float | int] = {
            "accuracy": accuracy(y_true, y_pred),
            "balanced_accuracy": balanced_accuracy(y_true, y_pred, attribute.num_classes),
            "ber": balanced_error_rate(y_true, y_pred, attribute.num_classes),
            "count": int(labeled.sum()),
        }
        if attribute.is_binary:
            # Column 1 = stored value 2 = the positive class ("yes", "female", "walking").
            entry["ap"] = average_precision(labeled_probs[:, 1], y_true == 1)
            if entry["count"] > 0 and math.isnan(entry["ap"]):
                ap_undefined.append(attribute.name)
        if entry["count"] == 0:
            excluded.append(attribute.name)
        per_attribute[attribute.name] = entry

    included = [entry for name, entry in per_attribute.items() if name not in excluded]
    mean_balanced_accuracy = _mean([entry["balanced_accuracy"] for entry in included])
    orientation = per_attribute.get(ORIENTATION)
    return {
        "attributes": per_attribute,
        "mA": mean_balanced_accuracy,
        "mBER": 1.0 - mean_balanced_accuracy,
        "mAP": _mean([entry["ap"] for entry in included if "ap" in entry and not math.isnan(entry["ap"])]),
        "mean_accuracy": _mean([entry["accuracy"] for entry in included]),
        "orientation_accuracy": orientation["accuracy"] if orientation is not None else math.nan,
        "num_examples": num_examples,
        "excluded": excluded,
        "ap_undefined": ap_undefined,
        "protocol": "balanced",
        "parse27k": {
            "attributes": paper_entries,
            "mAP": _mean([e["ap"] for n, e in paper_entries.items()
                          if n not in excluded and "ap" in e and not math.isnan(e["ap"])]),
            "mBER": _mean([e["ber"] for n, e in paper_entries.items() if n not in excluded]),
        },
    }


def metrics_table_markdown(metrics: dict[str, Any]) -> str:
    """Markdown table of :func:`attribute_metrics`' result (protocol ``balanced``): one row per attribute,
    then summary rows.

    Rates are percentages with one decimal; "–" marks a value that is undefined
    (NaN, or None after :func:`to_jsonable`) or does not apply (AP of a
    multi-class attribute). Each summary row puts its value in the column of
    the quantity it averages (mA under balanced accuracy, mAP under AP, ...).
    What the attribute set lacks is left out rather than shown empty: the AP
    column and mAP row without a binary attribute, the orientation row without
    an attribute named "Orientation".
    Accepts the output of :func:`to_jsonable` as well, so a table can be made
    from a metrics file read back from disk.
    """
    has_ap = any("ap" in entry for entry in metrics["attributes"].values())
    header = ["Attribute", "Accuracy (%)", "Balanced acc. (%)", "BER (%)"] + (["AP (%)"] if has_ap else []) + ["Count"]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for name, entry in metrics["attributes"].items():
        rows.append([
            name,
            _percent(entry.get("accuracy")),
            _percent(entry.get("balanced_accuracy")),
            _percent(entry.get("ber")),
            *([_percent(entry.get("ap"))] if has_ap else []),
            str(entry.get("count", _MISSING)),
        ])
    summary = [("**mA**", 2, "mA"), ("**mBER**", 3, "mBER")]
    if has_ap:
        summary.append(("**mAP**", 4, "mAP"))
    summary.append(("**Mean accuracy**", 1, "mean_accuracy"))
    if ORIENTATION in metrics["attributes"]:
        summary.append(("**Orientation accuracy**", 1, "orientation_accuracy"))
    rows += [_summary_row(label, column, _percent(metrics.get(key)), len(header)) for label, column, key in summary]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    if metrics.get("excluded"):
        lines.append("")
        lines.append("No labeled example, left out of the means: " + ", ".join(metrics["excluded"]) + ".")
    return "\n".join(lines) + "\n"


def parse27k_table_markdown(metrics: dict[str, Any]) -> str:
    """Markdown table of protocol ``parse27k`` (``metrics["parse27k"]`` of :func:`attribute_metrics`, or its
    :func:`to_jsonable` form): per attribute the positive class, 11-point AP, BER with N/A as a class, the
    labeled and N/A counts; then mAP and mBER. The AP columns and mAP row only where a binary attribute is."""
    paper = metrics["parse27k"]
    has_ap = any("ap" in entry for entry in paper["attributes"].values())
    header = (["Attribute"] + (["Positive class", "AP, 11-point (%)"] if has_ap else [])
              + ["BER, N/A a class (%)", "Labeled", "N/A"])
    rows = [header, ["---"] + (["---", "---:"] if has_ap else []) + ["---:"] * 3]
    for name, entry in paper["attributes"].items():
        rows.append([name] + ([entry.get("positive", _MISSING), _percent(entry.get("ap"))] if has_ap else [])
                    + [_percent(entry.get("ber")), str(entry.get("count", _MISSING)),
                       str(entry.get("na_count", _MISSING))])
    ber_column = 3 if has_ap else 1
    if has_ap:
        rows.append(_summary_row("**mAP**", 2, _percent(paper.get("mAP")), len(header)))
    rows.append(_summary_row("**mBER**", ber_column, _percent(paper.get("mBER")), len(header)))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def _summary_row(label: str, column: int, value: str, width: int) -> list[str]:
    row = [label] + [""] * (width - 1)
    row[column] = value
    return row


def to_jsonable(value: Any) -> Any:
    """Copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NaN and infinities become None (JSON has no NaN; Python's json would write
    a non-standard ``NaN`` token other parsers reject); numpy scalars and arrays
    become Python numbers and lists; tuples become lists.
    """
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _as_bool(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype == np.bool_:
        return values
    if values.size and not np.all((values == 0) | (values == 1)):
        raise ValueError(f"{name} must be bool or 0/1")
    return values.astype(bool)


def _paired_labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64, copy=False)
    y_pred = np.asarray(y_pred).astype(np.int64, copy=False)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _percent(value: float | None) -> str:
    if value is None or math.isnan(value):
        return _MISSING
    return f"{100.0 * value:.1f}"
