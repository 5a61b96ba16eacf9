"""Metrics against hand-computed cases; AP also against a brute-force reference."""
import json
import math

import numpy as np
import pytest

from patchray.metrics import (
    accuracy,
    attribute_metrics,
    average_precision,
    balanced_accuracy,
    balanced_error_rate,
    interpolated_average_precision,
    metrics_table_markdown,
    parse27k_balanced_error_rate,
    parse27k_positive,
    parse27k_table_markdown,
    to_jsonable,
)
from patchray.shards.attributes import PARSE27K, Attribute, AttributeSet

# ---------------------------------------------------------------- average precision

def test_ap_small_ranking():
    # Ranked: P N P N P. Positives at ranks 1, 3, 5 with precision 1/1, 2/3, 3/5.
    ap = average_precision(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 0, 1, 0, 1]))
    assert ap == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)


def test_ap_does_not_depend_on_input_order():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    positives = np.array([True, False, True, False, True])
    perm = np.array([3, 0, 4, 1, 2])
    assert average_precision(scores[perm], positives[perm]) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ap_perfect_ranking_is_one():
    # Every positive above every negative: precision 1 at each positive.
    assert average_precision(np.array([0.1, 0.95, 0.3, 0.9, 0.8]), np.array([0, 1, 0, 1, 1])) == pytest.approx(1.0)
    assert average_precision(np.array([0.3, 0.2]), np.array([True, True])) == pytest.approx(1.0)


def test_ap_worst_ranking():
    # Ranked: N N P P. Positives at ranks 3, 4: (1/3 + 2/4) / 2 = 5/12.
    assert average_precision(np.array([4.0, 3.0, 2.0, 1.0]), np.array([0, 0, 1, 1])) == pytest.approx(5 / 12)


def test_ap_ties_form_one_block():
    # All three tied: the block is retrieved at once, precision 2/3 for both positives -> 2/3.
    # (An optimistic order P P N would give 1, a pessimistic N P P (1/2 + 2/3)/2 = 7/12.)
    assert average_precision(np.array([0.8, 0.8, 0.8]), np.array([1, 1, 0])) == pytest.approx(2 / 3)
    # Blocks {0.9: N}, {0.5: P, N}, {0.1: P}: positives get precision 1/3 (end of block 2, rank 3)
    # and 2/4 (rank 4) -> (1/3 + 1/2) / 2 = 5/12.
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    positives = np.array([0, 1, 0, 1])
    assert average_precision(scores, positives) == pytest.approx(5 / 12)
    # Swapping the tied examples changes nothing.
    assert average_precision(scores[[0, 2, 1, 3]], positives[[0, 2, 1, 3]]) == pytest.approx(5 / 12)


def test_ap_no_positive_is_nan():
    assert math.isnan(average_precision(np.array([0.9, 0.1]), np.array([False, False])))
    assert math.isnan(average_precision(np.array([]), np.array([], dtype=bool)))


def test_ap_rejects_bad_input():
    with pytest.raises(ValueError):
        average_precision(np.array([0.5, np.nan]), np.array([1, 0]))
    with pytest.raises(ValueError):
        average_precision(np.array([0.5, 0.4]), np.array([1, 0, 1]))
    with pytest.raises(ValueError):
        average_precision(np.array([0.5, 0.4]), np.array([2, 0]))


def _brute_force_ap(scores, positives):
    """Reference: for each positive, precision among all examples scoring at least as high."""
    precisions = []
    for score, is_positive in zip(scores, positives):
        if is_positive:
            retrieved = scores >= score
            precisions.append(positives[retrieved].sum() / retrieved.sum())
    return float(np.mean(precisions)) if precisions else math.nan


def test_ap_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(1234)
    for case in range(50):
        n = int(rng.integers(1, 40))
        # Half the cases draw scores from a few values, so that ties are common.
        scores = rng.integers(0, 4, n) / 4 if case % 2 else rng.random(n)
        positives = rng.random(n) < rng.uniform(0.1, 0.9)
        expected = _brute_force_ap(scores, positives)
        got = average_precision(scores, positives)
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-12), (scores, positives)


# ---------------------------------------------------------------- accuracy, balanced accuracy

def test_majority_predictor_has_high_accuracy_but_half_balanced_accuracy():
    # 9 examples of class 0, 1 of class 1, always predict 0.
    y_true = np.array([0] * 9 + [1])
    y_pred = np.zeros(10, dtype=int)
    assert accuracy(y_true, y_pred) == pytest.approx(0.9)
    # Recall class 0 = 9/9, class 1 = 0/1 -> (1 + 0) / 2.
    assert balanced_accuracy(y_true, y_pred, 2) == pytest.approx(0.5)
    assert balanced_error_rate(y_true, y_pred, 2) == pytest.approx(0.5)


def test_balanced_accuracy_averages_only_classes_present():
    # 3 classes, class 2 never true. Recall class 0 = 2/3 (one predicted as 2), class 1 = 1/1.
    y_true = np.array([0, 0, 0, 1])
    y_pred = np.array([0, 0, 2, 1])
    assert balanced_accuracy(y_true, y_pred, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert accuracy(y_true, y_pred) == pytest.approx(3 / 4)


def test_empty_and_out_of_range():
    assert math.isnan(accuracy(np.array([], int), np.array([], int)))
    assert math.isnan(balanced_accuracy(np.array([], int), np.array([], int), 2))
    with pytest.raises(ValueError):
        balanced_accuracy(np.array([0, 2]), np.array([0, 1]), 2)


# ---------------------------------------------------------------- attribute_metrics

TOY = AttributeSet((
    Attribute("Orientation", ("front", "back", "left", "right"), mirror_classes=(("left", "right"),)),
    Attribute("Gender", ("male", "female")),
    Attribute("HasTrolley", ("no", "yes")),
))


def _peaked(predicted: list[int], num_classes: int) -> np.ndarray:
    """Probabilities with 0.7 on the predicted class index and the rest spread evenly."""
    probs = np.full((len(predicted), num_classes), 0.3 / (num_classes - 1))
    probs[np.arange(len(predicted)), predicted] = 0.7
    return probs


def _binary(p_positive: list[float]) -> np.ndarray:
    p = np.asarray(p_positive)
    return np.stack([1 - p, p], axis=1)


def _toy_case():
    # Stored values: 0 = N/A, 1.. = classes. Columns: Orientation, Gender, HasTrolley.
    labels = np.array([
        [1, 1, 1],
        [2, 2, 1],
        [3, 2, 1],
        [4, 1, 1],
        [1, 0, 2],
        [0, 2, 0],
    ])
    probs = [
        # Orientation predicted indices: front back left front back (last row N/A).
        _peaked([0, 1, 2, 0, 1, 3], 4),
        # Gender P(female); row 4 is N/A and would top the ranking if it counted.
        _binary([0.2, 0.9, 0.4, 0.6, 0.99, 0.7]),
        # HasTrolley P(yes); row 5 is N/A.
        _binary([0.1, 0.2, 0.3, 0.45, 0.4, 0.9]),
    ]
    return probs, labels


# Hand-computed expectations for _toy_case.
# Orientation: labeled rows 0-4, true idx [0,1,2,3,0], pred [0,1,2,0,1] -> 3/5 correct.
#   Recall front 1/2 (row 4 wrong), back 1/1, left 1/1, right 0/1 -> BA (0.5+1+1+0)/4 = 0.625.
# Gender: labeled rows 0,1,2,3,5, true [m,f,f,m,f], P(f) [.2,.9,.4,.6,.7] -> pred [m,f,m,f,f]:
#   3/5 correct. Recall male 1/2, female 2/3 -> BA 7/12.
#   AP(female): ranked .9 P, .7 P, .6 N, .4 P, .2 N -> (1/1 + 2/2 + 3/4)/3 = 11/12.
# HasTrolley: labeled rows 0-4, true [n,n,n,n,y], P(y) [.1,.2,.3,.45,.4] -> all pred no:
#   4/5 correct. Recall no 4/4, yes 0/1 -> BA 0.5.
#   AP(yes): ranked .45 N, .4 P, ... -> 1/2.
# mA = (0.625 + 7/12 + 0.5)/3 = (15 + 14 + 12)/72 = 41/72; mBER = 31/72.
# mAP = (11/12 + 1/2)/2 = 17/24. mean accuracy = (0.6 + 0.6 + 0.8)/3 = 2/3.
EXPECTED = {
    "Orientation": {"accuracy": 0.6, "balanced_accuracy": 0.625, "ber": 0.375, "count": 5},
    "Gender": {"accuracy": 0.6, "balanced_accuracy": 7 / 12, "ber": 5 / 12, "count": 5, "ap": 11 / 12},
    "HasTrolley": {"accuracy": 0.8, "balanced_accuracy": 0.5, "ber": 0.5, "count": 5, "ap": 0.5},
}


def test_attribute_metrics_hand_computed():
    probs, labels = _toy_case()
    metrics = attribute_metrics(probs, labels, TOY)
    assert list(metrics["attributes"]) == TOY.names
    for name, expected in EXPECTED.items():
        got = metrics["attributes"][name]
        assert set(got) == set(expected), name  # "ap" only for binary attributes
        for key, value in expected.items():
            assert got[key] == pytest.approx(value), (name, key)
    assert metrics["mA"] == pytest.approx(41 / 72)
    assert metrics["mBER"] == pytest.approx(31 / 72)
    assert metrics["mAP"] == pytest.approx(17 / 24)
    assert metrics["mean_accuracy"] == pytest.approx(2 / 3)
    assert metrics["orientation_accuracy"] == pytest.approx(0.6)
    assert metrics["num_examples"] == 6
    assert metrics["excluded"] == [] and metrics["ap_undefined"] == []


def test_predictions_on_na_examples_change_nothing():
    probs, labels = _toy_case()
    before = attribute_metrics(probs, labels, TOY)
    rng = np.random.default_rng(0)
    for column, attribute_probs in enumerate(probs):
        na = labels[:, column] == 0
        attribute_probs[na] = rng.dirichlet(np.ones(attribute_probs.shape[1]), int(na.sum()))
    assert probs[1][4, 1] != 0.99  # the N/A row really changed
    assert attribute_metrics(probs, labels, TOY) == before


def test_attribute_without_labels_is_excluded_from_means():
    probs, labels = _toy_case()
    with_backpack = AttributeSet(TOY.attributes + (Attribute("HasBackpack", ("no", "yes")),))
    labels = np.concatenate([labels, np.zeros((6, 1), dtype=labels.dtype)], axis=1)
    probs = probs + [_binary([0.9, 0.1, 0.5, 0.5, 0.3, 0.8])]
    metrics = attribute_metrics(probs, labels, with_backpack)

    backpack = metrics["attributes"]["HasBackpack"]
    assert backpack["count"] == 0
    assert all(math.isnan(backpack[key]) for key in ("accuracy", "balanced_accuracy", "ber", "ap"))
    assert metrics["excluded"] == ["HasBackpack"]
    # Means as for the three labeled attributes alone.
    assert metrics["mA"] == pytest.approx(41 / 72)
    assert metrics["mBER"] == pytest.approx(31 / 72)
    assert metrics["mAP"] == pytest.approx(17 / 24)
    assert metrics["mean_accuracy"] == pytest.approx(2 / 3)

    encoded = json.dumps(to_jsonable(metrics), allow_nan=False)
    assert json.loads(encoded)["attributes"]["HasBackpack"]["ap"] is None


def test_binary_attribute_without_positive_counts_in_ma_not_in_map():
    probs, labels = _toy_case()
    labels[4, 2] = 1  # HasTrolley's only "yes" becomes "no": rows 0-4 all "no", all predicted "no".
    metrics = attribute_metrics(probs, labels, TOY)
    trolley = metrics["attributes"]["HasTrolley"]
    assert math.isnan(trolley["ap"])
    assert trolley["balanced_accuracy"] == pytest.approx(1.0)  # only class "no" present, recall 5/5
    assert metrics["ap_undefined"] == ["HasTrolley"] and metrics["excluded"] == []
    assert metrics["mAP"] == pytest.approx(11 / 12)  # Gender alone
    assert metrics["mA"] == pytest.approx((0.625 + 7 / 12 + 1.0) / 3)


def test_no_orientation_attribute_gives_nan():
    probs, labels = _toy_case()
    binary_only = AttributeSet(TOY.attributes[1:])
    metrics = attribute_metrics(probs[1:], labels[:, 1:], binary_only)
    assert math.isnan(metrics["orientation_accuracy"])
    assert metrics["mA"] == pytest.approx((7 / 12 + 0.5) / 2)


def test_attribute_metrics_rejects_mismatched_inputs():
    probs, labels = _toy_case()
    with pytest.raises(ValueError, match="probability arrays"):
        attribute_metrics(probs[:2], labels, TOY)
    with pytest.raises(ValueError, match="Orientation"):
        attribute_metrics([probs[0][:, :3]] + probs[1:], labels, TOY)
    bad = labels.copy()
    bad[0, 1] = 3  # Gender has only stored values 0..2
    with pytest.raises(ValueError, match="Gender"):
        attribute_metrics(probs, bad, TOY)


# ---------------------------------------------------------------- output

def test_markdown_table_lists_attributes_and_summary_rows():
    probs, labels = _toy_case()
    metrics = attribute_metrics(probs, labels, TOY)
    table = metrics_table_markdown(metrics)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(TOY) + 5  # header, separator, attributes, summary rows
    for name in TOY.names:
        assert any(line.startswith(f"| {name} |") for line in lines), name
    for summary in ("**mA**", "**mBER**", "**mAP**", "**Orientation accuracy**"):
        assert any(line.startswith(f"| {summary} |") for line in lines), summary
    orientation_row = next(line for line in lines if line.startswith("| Orientation |"))
    assert orientation_row == "| Orientation | 60.0 | 62.5 | 37.5 | – | 5 |"
    gender_row = next(line for line in lines if line.startswith("| Gender |"))
    assert gender_row == "| Gender | 60.0 | 58.3 | 41.7 | 91.7 | 5 |"  # 7/12, 5/12, 11/12
    assert "56.9" in next(line for line in lines if line.startswith("| **mA** |"))  # 41/72
    assert "70.8" in next(line for line in lines if line.startswith("| **mAP** |"))  # 17/24
    # The JSON form (None for NaN) renders the same.
    assert metrics_table_markdown(to_jsonable(metrics)) == table


def test_to_jsonable_converts_nan_and_numpy():
    value = {"a": math.nan, "b": np.float32(0.5), "c": [np.int64(3), (np.inf, 1.0)], "d": np.array([1, 2])}
    assert to_jsonable(value) == {"a": None, "b": 0.5, "c": [3, [None, 1.0]], "d": [1, 2]}
    json.dumps(to_jsonable(value), allow_nan=False)


# ---------------------------------------------------------------- protocol parse27k (the authors' scripts)

def test_interpolated_ap_small_ranking():
    # Ranked P N P N P (3 positives). Cut-offs (recall, precision): (1/3, 1), (1/3, 1/2), (2/3, 2/3),
    # (2/3, 1/2), (1, 3/5). Levels 0-0.3 -> 1; 0.4-0.6 -> 2/3; 0.7-1.0 -> 3/5.
    ap = interpolated_average_precision(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 0, 1, 0, 1]))
    assert ap == pytest.approx((4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11)
    # The non-interpolated AP of the same ranking differs: (1 + 2/3 + 3/5) / 3.
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 0, 1, 0, 1])) != pytest.approx(ap)


def test_interpolated_ap_reaches_recall_levels_exactly():
    # 10 positives: 3 first, 7 negatives, 7 positives. Recall 3/10 reaches level 0.3 with precision 1; from
    # level 0.4 on the best precision is the last cut-off's, 10/17.
    positives = np.array([1] * 3 + [0] * 7 + [1] * 7)
    scores = -np.arange(len(positives), dtype=float)
    assert interpolated_average_precision(scores, positives) == pytest.approx((4 * 1 + 7 * 10 / 17) / 11)


def test_interpolated_ap_ties_perfect_worst_and_undefined():
    assert interpolated_average_precision(np.array([0.8, 0.8, 0.8]), np.array([1, 1, 0])) == pytest.approx(2 / 3)
    assert interpolated_average_precision(np.array([0.1, 0.9, 0.8]), np.array([0, 1, 1])) == pytest.approx(1.0)
    # Ranked N N P P: recall 1/2 at precision 1/3, recall 1 at 1/2 -> max precision 1/2 at every level.
    assert interpolated_average_precision(np.array([4.0, 3.0, 2.0, 1.0]), np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    assert math.isnan(interpolated_average_precision(np.array([0.3, 0.2]), np.array([0, 0])))
    with pytest.raises(ValueError):
        interpolated_average_precision(np.array([0.5, np.nan]), np.array([1, 0]))


def _authors_eleven_point_ap(scores, positives):
    """The authors' sweep (one example at a time, untied scores), with exact recall levels."""
    from fractions import Fraction

    order = np.argsort(-scores)
    total = int(positives.sum())
    points, tp = [], 0
    for k, index in enumerate(order, start=1):
        tp += int(positives[index])
        points.append((Fraction(tp, total), tp / k))
    return float(np.mean([max([p for r, p in points if r >= Fraction(level, 10)], default=0.0)
                          for level in range(11)]))


def test_interpolated_ap_matches_the_authors_sweep_on_random_untied_cases():
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(2, 40))
        scores = rng.random(n)
        positives = rng.random(n) < 0.4
        positives[0] = True
        assert interpolated_average_precision(scores, positives) == pytest.approx(
            _authors_eleven_point_ap(scores, positives), abs=1e-12)


def test_parse27k_positive_classes_are_yes_male_standing():
    assert PARSE27K["Gender"].classes[parse27k_positive(PARSE27K["Gender"])] == "male"
    assert PARSE27K["Posture"].classes[parse27k_positive(PARSE27K["Posture"])] == "standing"
    for attribute in PARSE27K:
        if attribute.is_binary and attribute.name not in ("Gender", "Posture"):
            assert attribute.classes[parse27k_positive(attribute)] == "yes", attribute.name
    assert parse27k_positive(Attribute("Lit", ("Yes", "No"))) == 0  # case does not matter
    assert parse27k_positive(Attribute("Light", ("off", "on"))) == 1  # no such name: the second class
    with pytest.raises(ValueError, match="not binary"):
        parse27k_positive(PARSE27K["Orientation"])


def test_parse27k_ber_counts_na_as_a_class_never_predicted():
    # Stored [N/A, N/A, 1, 1, 1, 2]; predicted classes (stored) [1, 2, 1, 1, 2, 2].
    # Rows: N/A error 1 (never predicted); class 1 recall 2/3 -> error 1/3; class 2 error 0 -> (1 + 1/3) / 3.
    stored = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 0, 1, 1])
    assert parse27k_balanced_error_rate(stored, y_pred, 2) == pytest.approx(4 / 9)
    # Protocol balanced on the same: N/A dropped, recall 2/3 and 1 -> BER 1/6.
    labeled = stored > 0
    assert balanced_error_rate(stored[labeled] - 1, y_pred[labeled], 2) == pytest.approx(1 / 6)
    # Without an N/A example there is no N/A row.
    assert parse27k_balanced_error_rate(np.array([1, 2]), np.array([0, 1]), 2) == pytest.approx(0.0)
    # Classes without an example (back, right) are left out: rows N/A 1, front 1/2, left 0 -> 1/2.
    assert parse27k_balanced_error_rate(np.array([0, 1, 1, 3]), np.array([3, 0, 1, 2]), 4) == pytest.approx(0.5)
    assert math.isnan(parse27k_balanced_error_rate(np.array([], int), np.array([], int), 2))
    with pytest.raises(ValueError):
        parse27k_balanced_error_rate(np.array([3]), np.array([0]), 2)


# Hand-computed protocol parse27k for _toy_case (rows 0-5; the N/A row of each attribute counts).
# Orientation: stored [1,2,3,4,1,N/A], predicted [1,2,3,1,2]: rows N/A 1, front 1/2, back 0, left 0, right 1
#   -> BER 2.5/5 = 0.5.
# Gender: stored [m,f,f,m,N/A,f], predicted [m,f,m,f,-,f]: rows N/A 1, male 1/2, female 1/3 -> 11/18.
#   AP(male) by P(male) = [.8,.1,.6,.4,.3] on the labeled rows: ranked P N P N N, cut-offs (1/2, 1),
#   (1/2, 1/2), (1, 2/3), (1, 1/2), (1, 2/5) -> levels 0-0.5: 1, 0.6-1.0: 2/3 -> (6 + 10/3) / 11 = 28/33.
# HasTrolley: stored [n,n,n,n,y,N/A], all predicted no: rows N/A 1, no 0, yes 1 -> 2/3.
#   AP(yes): ranked N P N N N -> precision 1/2 at recall 1, every level -> 1/2.
# mAP = (28/33 + 1/2) / 2 = 89/132; mBER = (1/2 + 11/18 + 2/3) / 3 = 16/27.
EXPECTED_PARSE27K = {
    "Orientation": {"ber": 0.5, "count": 5, "na_count": 1},
    "Gender": {"ber": 11 / 18, "count": 5, "na_count": 1, "ap": 28 / 33, "positive": "male"},
    "HasTrolley": {"ber": 2 / 3, "count": 5, "na_count": 1, "ap": 0.5, "positive": "yes"},
}


def test_attribute_metrics_parse27k_hand_computed():
    probs, labels = _toy_case()
    metrics = attribute_metrics(probs, labels, TOY)
    assert metrics["protocol"] == "balanced"
    paper = metrics["parse27k"]
    for name, expected in EXPECTED_PARSE27K.items():
        assert set(paper["attributes"][name]) == set(expected), name
        for key, value in expected.items():
            assert paper["attributes"][name][key] == pytest.approx(value) if isinstance(value, float) \
                else paper["attributes"][name][key] == value, (name, key)
    assert paper["mAP"] == pytest.approx(89 / 132)
    assert paper["mBER"] == pytest.approx(16 / 27)
    # Protocol balanced is unchanged beside it.
    assert metrics["mAP"] == pytest.approx(17 / 24) and metrics["mBER"] == pytest.approx(31 / 72)


def test_parse27k_leaves_out_attributes_without_labels():
    probs, labels = _toy_case()
    with_backpack = AttributeSet(TOY.attributes + (Attribute("HasBackpack", ("no", "yes")),))
    labels = np.concatenate([labels, np.zeros((6, 1), dtype=labels.dtype)], axis=1)
    metrics = attribute_metrics(probs + [_binary([0.9, 0.1, 0.5, 0.5, 0.3, 0.8])], labels, with_backpack)
    backpack = metrics["parse27k"]["attributes"]["HasBackpack"]
    assert math.isnan(backpack["ber"]) and math.isnan(backpack["ap"]) and backpack["na_count"] == 6
    assert metrics["parse27k"]["mAP"] == pytest.approx(89 / 132)
    assert metrics["parse27k"]["mBER"] == pytest.approx(16 / 27)


def test_parse27k_table_lists_positive_class_ap_and_ber():
    probs, labels = _toy_case()
    metrics = attribute_metrics(probs, labels, TOY)
    table = parse27k_table_markdown(metrics)
    lines = table.strip().splitlines()
    assert "| Gender | male | 84.8 | 61.1 | 5 | 1 |" in lines  # 28/33, 11/18
    assert "| Orientation | – | – | 50.0 | 5 | 1 |" in lines
    assert any(line.startswith("| **mAP** |") and "67.4" in line for line in lines)  # 89/132
    assert any(line.startswith("| **mBER** |") and "59.3" in line for line in lines)  # 16/27
    assert parse27k_table_markdown(to_jsonable(metrics)) == table


# ---------------------------------------------------------------- attribute sets not shaped like PARSE-27k

ORIENTATION_ONLY = AttributeSet((TOY.attributes[0],))


def test_metrics_and_tables_without_a_binary_attribute():
    probs, labels = _toy_case()
    metrics = attribute_metrics(probs[:1], labels[:, :1], ORIENTATION_ONLY)
    assert metrics["mA"] == pytest.approx(0.625) and metrics["orientation_accuracy"] == pytest.approx(0.6)
    assert math.isnan(metrics["mAP"]) and math.isnan(metrics["parse27k"]["mAP"])
    assert metrics["parse27k"]["mBER"] == pytest.approx(0.5)
    for table in (metrics_table_markdown(metrics), metrics_table_markdown(to_jsonable(metrics))):
        assert "AP" not in table and "**mAP**" not in table  # no empty AP column or mAP row
        assert "| Orientation | 60.0 | 62.5 | 37.5 | 5 |" in table and "**Orientation accuracy**" in table
    paper = parse27k_table_markdown(to_jsonable(metrics))
    assert "AP" not in paper and "| Orientation | 50.0 | 5 | 1 |" in paper
    json.dumps(to_jsonable(metrics), allow_nan=False)


def test_metrics_and_tables_for_a_single_binary_attribute():
    probs, labels = _toy_case()
    gender = AttributeSet((TOY.attributes[1],))
    metrics = attribute_metrics(probs[1:2], labels[:, 1:2], gender)
    assert metrics["mA"] == pytest.approx(7 / 12) and metrics["mAP"] == pytest.approx(11 / 12)
    assert metrics["parse27k"]["mAP"] == pytest.approx(28 / 33)
    table = metrics_table_markdown(metrics)
    assert "Orientation" not in table and "| Gender | 60.0 | 58.3 | 41.7 | 91.7 | 5 |" in table


def test_metrics_when_a_split_holds_one_class_only():
    # Every labeled Orientation is "front": balanced accuracy is the recall of front alone; parse27k averages
    # the front and N/A rows. Predicted [front, back, left, front, back] on rows 0-4 -> recall 2/5.
    probs, labels = _toy_case()
    labels[:5, 0] = 1
    metrics = attribute_metrics(probs[:1], labels[:, :1], ORIENTATION_ONLY)
    assert metrics["attributes"]["Orientation"]["balanced_accuracy"] == pytest.approx(0.4)
    assert metrics["parse27k"]["attributes"]["Orientation"]["ber"] == pytest.approx((1 + 0.6) / 2)
    assert "| Orientation | 40.0 | 40.0 | 60.0 | 5 |" in metrics_table_markdown(metrics)
