"""Linear probe: a multinomial logistic regression per attribute on frozen trunk features.

The standard read-out of a self-supervised representation: how much of an attribute a linear map of the
features recovers. Fitted in torch (no new dependency) with full-batch L-BFGS from zero weights in float64,
so the same features give the same probabilities on every call. The attributes are fitted as one problem:
their losses touch disjoint weights, so the sum's minimum is each attribute's own, and one L-BFGS run took
63 loss evaluations where eleven separate runs took 750 (PARSE-27k's attributes, 500 crops, 256 features).
What is fitted, and why:

* features standardised with the train crops' statistics (``standardise``), so one L2 penalty suits every
  channel and the optimiser sees a well-conditioned problem;
* rows whose label is N/A (0) are left out of that attribute's fit only;
* classes weighted to equal total weight (``balanced``, default): PARSE-27k's attributes are skewed (a phone
  in 3% of crops), an unweighted fit on a few hundred crops predicts the majority class, and mA scores that at
  chance whatever the features hold;
* only the classes seen among the train rows get a logit; an unseen class has probability 0 (an unpenalised
  bias would run to minus infinity for it). An attribute with a single seen class gets that class with
  probability 1 (the only answer its train rows support); one with no labeled train row gets uniform
  probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from patchray.shards.attributes import NA, AttributeSet

from .features import check_labels, single_threaded, standardise

# Per-example mean loss + l2/2 |W|^2: scikit-learn's default C = 1 is l2 = 1/N, i.e. 0.002 for 500 crops.
# Five times that: the probe is a monitor compared across epochs, where a stable fit counts more than the
# last point of accuracy, and 2C = 256 features on 500 crops separate almost any labelling without it.
DEFAULT_L2 = 1e-2
MAX_ITER = 200  # L-BFGS iterations of the joint fit; this small a strongly convex problem needs well under that


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
                 attributes: AttributeSet, *, l2: float = DEFAULT_L2, balanced: bool = True,
                 max_iter: int = MAX_ITER) -> list[np.ndarray]:
    """Val probabilities per attribute, each [N_val, K_a] (column k = stored class k + 1), from a logistic
    regression fitted on the train features [N, D] and stored labels [N, A] (0 = N/A); ready for
    ``attribute_metrics(probs, val_labels, attributes)``."""
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    with single_threaded():
        return _linear_probe(train_features, train_labels, val_features, attributes, l2, balanced, max_iter)


def _linear_probe(train_features, train_labels, val_features, attributes: AttributeSet, l2: float, balanced: bool,
                  max_iter: int) -> list[np.ndarray]:
    train_x, val_x = standardise(train_features, val_features)
    labels = check_labels(train_labels, len(train_x), attributes)
    probs: list[np.ndarray] = []
    fitted: list[_Block] = []
    for column, attribute in enumerate(attributes):
        block = _block(labels[:, column], column, balanced)
        probs.append(np.zeros((len(val_x), attribute.num_classes)))
        if block.seen.size >= 2:
            fitted.append(block)
        elif block.seen.size == 1:
            probs[column][:, block.seen[0]] = 1.0
        else:
            probs[column][:] = 1.0 / attribute.num_classes
    if fitted:
        coef, bias = _fit(train_x, fitted, l2, max_iter)
        with torch.no_grad():
            logits = val_x @ coef + bias
        for block in fitted:
            probs[block.column][:, block.seen] = torch.softmax(logits[:, block.logits], dim=1).numpy()
    return probs


@dataclass
class _Block:
    """One attribute's share of the joint fit: its seen classes (0-based), a target (index among them) and a
    weight per train row (0 for N/A rows), and the slice of the logits it owns."""
    column: int
    seen: np.ndarray
    target: torch.Tensor
    weight: torch.Tensor
    start: int = 0  # first logit column of the joint fit

    @property
    def logits(self) -> slice:
        return slice(self.start, self.start + self.seen.size)


def _block(stored: np.ndarray, column: int, balanced: bool) -> _Block:
    labeled = stored != NA
    seen = np.unique(stored[labeled]) - 1
    target = np.zeros(len(stored), dtype=np.int64)
    target[labeled] = np.searchsorted(seen, stored[labeled] - 1)
    weight = np.zeros(len(stored))
    if seen.size:
        # Weights summing to 1: each seen class 1/len(seen) in all when balanced, each labeled row 1/n otherwise.
        counts = np.bincount(target[labeled], minlength=seen.size)
        weight[labeled] = 1.0 / (seen.size * counts[target[labeled]]) if balanced else 1.0 / labeled.sum()
    return _Block(column, seen, torch.from_numpy(target), torch.from_numpy(weight))


def _fit(x: torch.Tensor, blocks: list[_Block], l2: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    start = 0
    for block in blocks:
        block.start, start = start, start + block.seen.size
    coef = torch.zeros(x.shape[1], start, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(start, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([coef, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ coef + bias
        loss = 0.5 * l2 * coef.square().sum()
        for block in blocks:
            loss = loss + (block.weight * F.cross_entropy(logits[:, block.logits], block.target,
                                                          reduction="none")).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return coef.detach(), bias.detach()
