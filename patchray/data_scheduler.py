"""A pause for Ray Data's scheduling loop while it makes no progress.

Ray 2.60's streaming executor blocks in ``ray.wait`` (0.1 s at most) until one of its tasks has output ready.
When the stream is ahead of its consumer, that returns at once and achieves nothing: the data tasks are stalled
on outputs the executor will not read (backpressure), or have all ended, and the loop goes round again
immediately, recomputing resource budgets and metric gauges thousands of times a second. It spins in the split
coordinator that feeds Ray Train's workers (or in the worker that iterates a stream itself): with
``decode_on=trainer``, whose data tasks only read, it took half a CPU of the two that the ingest benchmark spent
(docs/performance.md, "Ingest"). ``PauseWhenIdle`` is a Ray Data execution callback, run once a loop: after a
step in which nothing happened it sleeps ``IDLE_PAUSE_S``, long enough to stop the spin, short beside the time a
worker takes to consume a block. ``pipeline.crop_dataset`` registers it on the streams it builds; a dataset
carries its context, so it runs wherever Ray runs the stream's executor.

Kept apart from ``patchray.pipeline``: the split coordinator imports this module to build the callback, and
should not import torch to do so.
"""
from __future__ import annotations

import time

from patchray.ray_compat import execution_callback_base, executor_progress

# Ray Data's own consumers poll an empty output queue every 10 ms; a loop that achieved nothing waits half that.
IDLE_PAUSE_S = 0.005


class PauseWhenIdle(execution_callback_base()):
    """Sleep ``IDLE_PAUSE_S`` after a scheduling-loop step that changed nothing (``ray_compat.executor_progress``).
    ``steps`` and ``pauses`` count, for the whole process, the steps it saw and those it slept after."""

    steps = 0
    pauses = 0

    def __init__(self):
        self.last = None

    def on_execution_step(self, executor) -> None:
        progress = executor_progress(executor)
        PauseWhenIdle.steps += 1
        if progress == self.last:
            PauseWhenIdle.pauses += 1
            time.sleep(IDLE_PAUSE_S)
        self.last = progress
