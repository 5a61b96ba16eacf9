"""Where ASHA judges a trial: rungs strictly before the last epoch, so a trial is never stopped as it finishes.

Ray's ASHA (one bracket) puts rungs at ``grace * rf**k`` for every k with
``grace * rf**k <= max_t``, and with ``stop_last_trials`` it also stops every
trial that reaches ``max_t``. Both would land on a trial's final report when
``max_t`` is its epoch count: the trial would be cut while it writes its last
outputs, and listed as stopped although it ran to the end. So ``max_t`` is the
shortest trial's last epoch minus one and ``stop_last_trials`` is off: every rung
comes before every trial's final epoch, and a trial past the last rung runs out.
"""
from __future__ import annotations

import math


def asha_max_t(grace_period: int, final_epoch: int) -> int:
    """ASHA's ``max_t`` for trials whose shortest run has ``final_epoch`` epochs (ValueError when the grace
    period leaves no epoch to judge before the end)."""
    if grace_period >= final_epoch:
        raise ValueError(f"grace_period {grace_period} must be below the fine-tuning epochs ({final_epoch}): "
                         "ASHA can only judge a trial before its last epoch")
    return final_epoch - 1


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """The epochs at which Ray's ASHA compares trials (its formula, smallest first)."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [grace_period * reduction_factor ** k for k in range(count)]
