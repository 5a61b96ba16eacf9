"""The TPE sampler every search uses (the tuner and the offline replay alike), configured explicitly.

Optuna's default TPESampler samples at random for its first 10 trials: a 10-trial
search with the defaults would be random search. Here the random start is sized
to the search, the parameters are modelled jointly (``multivariate``, with
``group`` so that conditional parameters, such as a grid whose choices depend on
the patch size, form their own groups), and concurrent trials do not all get
the same suggestion (``constant_liar``: a running trial counts as a bad result
until it reports).
"""
from __future__ import annotations

# A configuration already trained to the end is not trained again (a search's trials share one seed, so it would
# only repeat the same run): TPE is told its recorded value and asked again, at most this many times in a row.
# When that many proposals in a row were all repeats, TPE has run out of new configurations (a small discrete
# space can be exhausted): from then on the search trains what it proposes, repeats included.
MAX_KNOWN_IN_A_ROW = 20


class RepeatRule:
    """The no-repeat rule as the tuner and the replay both apply it, one proposal at a time: ``tells(completed)``
    says whether a proposal is told its recorded value instead of trained (it repeats a completed configuration
    and TPE has not yet proposed ``MAX_KNOWN_IN_A_ROW`` such repeats in a row; from that point on, ``exhausted``,
    everything is trained). ``told`` counts the proposals told."""

    def __init__(self) -> None:
        self.in_a_row = 0
        self.told = 0
        self.exhausted = False

    def tells(self, completed: bool) -> bool:
        if self.exhausted or not completed:
            self.in_a_row = 0
            return False
        self.told += 1
        self.in_a_row += 1
        self.exhausted = self.in_a_row >= MAX_KNOWN_IN_A_ROW
        return True

# The smallest random start: with fewer observations TPE's two densities are guesses.
MIN_STARTUP_TRIALS = 3
# Optuna's own default, kept as the ceiling: larger searches gain nothing from a longer random start.
MAX_STARTUP_TRIALS = 10


def startup_trials(num_samples: int, requested: int | None = None) -> int:
    """Random trials before TPE models the results: ``requested`` if given, else a fifth of the search,
    between MIN_STARTUP_TRIALS and MAX_STARTUP_TRIALS, and always below ``num_samples`` when it can be."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"startup_trials must be >= 1, got {requested}")
        return requested
    return max(1, min(num_samples - 1, max(MIN_STARTUP_TRIALS, min(MAX_STARTUP_TRIALS, num_samples // 5))))


def tpe_sampler(seed: int, n_startup_trials: int):
    import warnings

    import optuna

    with warnings.catch_warnings():  # multivariate, group and constant_liar are "experimental" in Optuna's words
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True, constant_liar=True)
