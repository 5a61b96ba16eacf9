"""The online probe on hand-made features whose answer is known, and ``embed`` on a real random trunk."""
import numpy as np
import pytest
import torch

from patchray.metrics import attribute_metrics
from patchray.models import build_trunk
from patchray.patches import channel_stats, normalize_images
from patchray.probe import ProbeConfig, crop_normalizer, embed, feature_dim, knn_probe, linear_probe, probe_scores
from patchray.shards.attributes import NA, Attribute, AttributeSet

BINARY = AttributeSet((Attribute("Bag", ("no", "yes")), Attribute("Phone", ("no", "yes")),
                       Attribute("Trolley", ("no", "yes")), Attribute("Backpack", ("no", "yes"))))
WITH_MULTI = AttributeSet((Attribute("Bag", ("no", "yes")), Attribute("Orientation", ("front", "back", "left"))))


def _clustered(labels: np.ndarray, rng: np.random.Generator, dims: int = 8, shift: float = 4.0) -> np.ndarray:
    """Unit Gaussian noise with each stored class c >= 1 moved by ``shift`` along feature c - 1 (N/A rows
    stay at the origin): every pair of classes is linearly separable with a wide margin."""
    features = rng.normal(size=(len(labels), dims))
    labeled = labels != NA
    features[np.flatnonzero(labeled), labels[labeled] - 1] += shift
    return features.astype(np.float32)


def _balanced_accuracies(probs, labels, attributes) -> dict[str, float]:
    metrics = attribute_metrics(probs, labels, attributes)
    return {name: entry["balanced_accuracy"] for name, entry in metrics["attributes"].items()}


def test_separable_attribute_is_recovered_by_both_probes():
    rng = np.random.default_rng(0)
    # Bag separable on feature 0 and 1 (binary), Orientation on 2..4 (3 classes); one in ten Bag labels rare.
    def split(n):
        bag = np.where(rng.random(n) < 0.1, 2, 1)
        orientation = rng.integers(1, 4, size=n)
        features = rng.normal(size=(n, 8))
        features[:, 0] += 4.0 * (bag == 2)
        features[np.arange(n), 1 + orientation] += 4.0
        return features.astype(np.float32), np.stack([bag, orientation], axis=1)

    train_x, train_y = split(400)
    val_x, val_y = split(400)
    linear = _balanced_accuracies(linear_probe(train_x, train_y, val_x, WITH_MULTI), val_y, WITH_MULTI)
    knn = _balanced_accuracies(knn_probe(train_x, train_y, val_x, WITH_MULTI), val_y, WITH_MULTI)
    assert linear["Bag"] > 0.97 and linear["Orientation"] > 0.97
    assert knn["Bag"] > 0.9 and knn["Orientation"] > 0.9


def test_shuffled_labels_score_near_chance():
    # Labels drawn independently of the features: whatever a probe predicts is independent of the truth, so each
    # class recall is a binomial proportion around the chance level. With 400 val crops, 200 per class, a binary
    # attribute's balanced accuracy has std <= sqrt(0.25 / 200) / sqrt(2) = 0.025 and the mA of 4 attributes
    # 0.0125: 0.05 is 4 standard deviations (and the seeds are fixed, so the test cannot flake).
    rng = np.random.default_rng(1)
    train_x, val_x = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))
    train_y = np.stack([rng.permutation(np.repeat([1, 2], 200)) for _ in BINARY], axis=1)
    val_y = np.stack([rng.permutation(np.repeat([1, 2], 200)) for _ in BINARY], axis=1)
    scores = probe_scores(train_x, train_y, val_x, val_y, BINARY)
    assert scores["probe_mA"] == pytest.approx(0.5, abs=0.05)
    assert scores["knn_mA"] == pytest.approx(0.5, abs=0.05)


def test_na_rows_are_left_out_of_the_fit():
    # 60 train crops per class in two clusters, and 200 N/A crops, half in each cluster. Counted as either class
    # (or as class -1, i.e. the last, by an off-by-one index) they would outnumber the true class of one
    # cluster 100 to 60 and flip its predictions: balanced accuracy about 0.5 instead of about 1.
    rng = np.random.default_rng(2)
    attributes = AttributeSet((Attribute("Bag", ("no", "yes")),))
    labeled = np.repeat([1, 2], 60)
    hidden = _clustered(np.repeat([1, 2], 100), rng)
    # The same N/A crops with each feature shuffled among them on its own: every feature keeps its values, so
    # the standardisation (which does use N/A crops: features need no label) is the same, but the clusters are
    # gone. Left out of the fit, N/A crops cannot tell the two apart; counted as any class, even one of their
    # own, they would move the fit.
    scattered = np.stack([rng.permutation(column) for column in hidden.T], axis=1)
    train_y = np.concatenate([labeled, np.full(200, NA)])[:, None]
    val_y = np.repeat([1, 2], 100)[:, None]
    val_x = _clustered(val_y.ravel(), rng)
    labeled_x = _clustered(labeled, rng)
    for probe in (linear_probe, knn_probe):
        probs = probe(np.concatenate([labeled_x, hidden]), train_y, val_x, attributes)
        assert _balanced_accuracies(probs, val_y, attributes)["Bag"] > 0.95, probe.__name__
        probs_scattered = probe(np.concatenate([labeled_x, scattered]), train_y, val_x, attributes)
        np.testing.assert_allclose(probs[0], probs_scattered[0], rtol=1e-6, atol=1e-9, err_msg=probe.__name__)


def test_single_class_and_unlabeled_attributes_do_not_crash():
    rng = np.random.default_rng(3)
    train_y = np.stack([rng.integers(1, 3, 100), np.where(rng.random(100) < 0.5, 1, NA), np.full(100, NA),
                        rng.integers(1, 3, 100)], axis=1)
    val_y = rng.integers(1, 3, size=(50, 4))
    train_x, val_x = _clustered(train_y[:, 0], rng), _clustered(val_y[:, 0], rng)
    for probe in (linear_probe, knn_probe):
        probs = probe(train_x, train_y, val_x, BINARY)
        # Phone: only "no" among its train rows, so "no" for every crop; Trolley: no labeled train row, uniform.
        np.testing.assert_array_equal(probs[1], np.tile([1.0, 0.0], (50, 1)))
        np.testing.assert_array_equal(probs[2], np.full((50, 2), 0.5))
    scores = probe_scores(train_x, train_y, val_x, val_y, BINARY)
    assert scores["probe_attributes"]["Phone"] == 0.5  # every val crop called "no": recalls 1 and 0
    assert scores["probe_attributes"]["Bag"] > 0.9


def test_unseen_class_gets_probability_zero():
    rng = np.random.default_rng(4)
    # Orientation's third class ("left") is never among the train rows.
    train_y = np.stack([rng.integers(1, 3, 60), rng.integers(1, 3, 60)], axis=1)
    val_x = rng.normal(size=(10, 8))
    for probe in (linear_probe, knn_probe):
        probs = probe(_clustered(train_y[:, 1], rng), train_y, val_x, WITH_MULTI)
        assert probs[1].shape == (10, 3) and np.all(probs[1][:, 2] == 0.0)
        np.testing.assert_allclose(probs[1].sum(axis=1), 1.0)


def test_probe_scores_are_deterministic_and_flat():
    rng = np.random.default_rng(5)
    train_y, val_y = rng.integers(0, 3, size=(200, 4)), rng.integers(0, 3, size=(200, 4))
    train_x, val_x = _clustered(train_y[:, 0], rng), _clustered(val_y[:, 0], rng)
    first = probe_scores(train_x, train_y, val_x, val_y, BINARY)
    assert first == probe_scores(train_x, train_y, val_x, val_y, BINARY)
    assert set(first) == {"probe_mA", "probe_mAP", "knn_mA", "knn_mAP", "probe_attributes"}
    assert all(isinstance(first[key], float) for key in ("probe_mA", "probe_mAP", "knn_mA", "knn_mAP"))
    assert list(first["probe_attributes"]) == BINARY.names


def test_undefined_numbers_are_none():
    # Only a multi-class attribute, so no AP; Bag has no labeled val crop, so it is left out.
    rng = np.random.default_rng(6)
    train_y = np.stack([rng.integers(1, 3, 50), rng.integers(1, 4, 50)], axis=1)
    val_y = np.stack([np.full(20, NA), rng.integers(1, 4, 20)], axis=1)
    scores = probe_scores(rng.normal(size=(50, 4)), train_y, rng.normal(size=(20, 4)), val_y, WITH_MULTI)
    assert scores["probe_mAP"] is None and scores["knn_mAP"] is None
    assert scores["probe_attributes"]["Bag"] is None
    assert isinstance(scores["probe_mA"], float)


# ---------------------------------------------------------------- embed

@pytest.fixture
def trunk():
    torch.manual_seed(0)
    return build_trunk("tiny_d25")


def _crops(count: int = 16, height: int = 64, width: int = 32) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("training", [True, False])
def test_embed_shape_mode_weights_and_determinism(trunk, training):
    trunk.train(training)
    before = {name: value.clone() for name, value in trunk.state_dict().items()}
    normalize = crop_normalizer({"mode": "patch"})
    features = embed(trunk, _crops(), normalize, "cpu", batch=5)
    assert features.shape == (16, 2 * trunk.out_channels) == (16, feature_dim(trunk))
    assert features.dtype == np.float32 and np.all(np.isfinite(features))
    assert trunk.training == training
    assert all(torch.equal(before[name], value) for name, value in trunk.state_dict().items())
    # Dropout off: a second call gives the same features, however the crops are batched.
    np.testing.assert_array_equal(features, embed(trunk, _crops(), normalize, "cpu", batch=5))
    np.testing.assert_allclose(features, embed(trunk, _crops(), normalize, "cpu", batch=16), rtol=1e-4, atol=1e-5)


def test_embed_pools_the_eval_map(trunk):
    crops = _crops(4)
    average = embed(trunk, crops, crop_normalizer({"mode": "none"}), "cpu", pool="avg")
    both = embed(trunk, crops, crop_normalizer({"mode": "none"}), "cpu")
    with torch.no_grad():
        feature_map = trunk.eval()(normalize_images(torch.from_numpy(crops), "none"))
    np.testing.assert_allclose(average, feature_map.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(both[:, :trunk.out_channels], average)
    np.testing.assert_allclose(both[:, trunk.out_channels:], feature_map.amax(dim=(2, 3)).numpy(), rtol=1e-5)


def test_embed_restores_each_module_mode(trunk):
    trunk.train()
    trunk.stages[0].eval()  # a caller's frozen block stays frozen
    embed(trunk, _crops(2), crop_normalizer({"mode": "patch"}), "cpu")
    assert not trunk.stages[0].training and not any(m.training for m in trunk.stages[0].modules())
    assert all(stage.training for stage in list(trunk.stages)[1:])


def test_crop_normalizer_pools_per_pixel_pretraining_statistics():
    generator = torch.Generator().manual_seed(0)
    mean, std = torch.rand(3, 32, 32, generator=generator), 0.1 + torch.rand(3, 32, 32, generator=generator)
    crops = torch.from_numpy(_crops(2))
    channel_mean, channel_std = channel_stats(mean, std)
    expected = normalize_images(crops, "dataset", mean=channel_mean, std=channel_std)
    torch.testing.assert_close(crop_normalizer({"mode": "dataset", "mean": mean, "std": std})(crops), expected)


# ---------------------------------------------------------------- config

def test_probe_config_defaults_and_validation():
    config = ProbeConfig()
    assert (config.enabled, config.every, config.train_crops, config.val_crops, config.k, config.data) == (
        True, 1, 200, 200, 20, [])
    for field, value in [("every", 0), ("train_crops", 0), ("val_crops", -1), ("k", 0), ("k", 2.5),
                         ("l2", -1.0), ("l2", float("nan")), ("data", "shards/parse27k"), ("data", [""]),
                         ("pool", "sum")]:
        with pytest.raises(ValueError, match=field):
            ProbeConfig(**{field: value})
