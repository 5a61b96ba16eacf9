"""kNN probe: similarity-weighted votes of the nearest train crops, per attribute.

The kNN monitor of self-supervised learning (Wu et al. 2018, "Unsupervised feature learning via
non-parametric instance discrimination"): nothing is fitted, so it reads the geometry of the feature space as
it is, and it complements the linear probe (a representation can be linearly separable yet badly clustered,
and the other way round). How it votes, and why:

* cosine similarity of features standardised with the train crops' statistics, then scaled to unit length:
  ReLU features are all non-negative, so raw cosines crowd near 1; centring spreads them, and the scaling
  keeps large channels (the maxima of ``avgmax``) from dominating;
* each of the ``k`` nearest train crops votes exp(similarity / temperature) for its class (temperature 0.07,
  the usual value), so closer neighbours count more;
* per attribute, train crops labeled N/A are not neighbours at all (the k nearest are taken among the labeled
  ones), so they neither vote nor crowd labeled crops out of the k;
* ``balanced`` (default, as the linear probe) divides each class's votes by its share of the labeled train
  crops, a prior correction without which a rare class is almost never in the majority of 20 neighbours.

Each row's votes are normalised to probabilities [N_val, K_a]; a class without a labeled train crop gets 0,
an attribute without any labeled train crop uniform probabilities.
"""
from __future__ import annotations

import numpy as np
import torch

from patchray.shards.attributes import NA, AttributeSet

from .features import check_labels, single_threaded, standardise

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


def knn_probe(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
              attributes: AttributeSet, *, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE,
              balanced: bool = True) -> list[np.ndarray]:
    """Val probabilities per attribute, each [N_val, K_a] (column k = stored class k + 1), from the votes of
    the ``k`` most cosine-similar labeled train crops; ready for ``attribute_metrics``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with single_threaded():
        return _knn_probe(train_features, train_labels, val_features, attributes, k, temperature, balanced)


def _knn_probe(train_features, train_labels, val_features, attributes: AttributeSet, k: int, temperature: float,
               balanced: bool) -> list[np.ndarray]:
    train_x, val_x = (torch.nn.functional.normalize(x, dim=1) for x in standardise(train_features, val_features))
    labels = check_labels(train_labels, len(train_x), attributes)
    similarity = val_x @ train_x.T  # [N_val, N_train], cosines
    probs = []
    for column, attribute in enumerate(attributes):
        stored = labels[:, column]
        labeled = np.flatnonzero(stored != NA)
        num_classes = attribute.num_classes
        if len(labeled) == 0:
            probs.append(np.full((len(val_x), num_classes), 1.0 / num_classes))
            continue
        classes = torch.from_numpy(stored[labeled] - 1)  # 0-based
        nearest_similarity, nearest = similarity[:, labeled].topk(min(k, len(labeled)), dim=1)
        # exp((s - 1) / T) rather than exp(s / T): the same votes up to a factor, never overflowing.
        weight = torch.exp((nearest_similarity - 1.0) / temperature)
        votes = torch.zeros(len(val_x), num_classes, dtype=torch.float64)
        votes.scatter_add_(1, classes[nearest], weight)
        if balanced:
            share = torch.bincount(classes, minlength=num_classes).to(torch.float64) / len(labeled)
            votes = votes / torch.where(share > 0, share, torch.ones_like(share))
        probs.append((votes / votes.sum(dim=1, keepdim=True)).numpy())
    return probs
