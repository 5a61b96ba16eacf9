"""Every row of the training stream accounted for, every epoch: trained, skipped (bad), or dropped.

Ray Train splits the stream evenly over its workers (``streaming_split(equal=True)``), which drops up to
``workers - 1`` rows an epoch; nothing else is dropped (batches are not ``drop_last``). The rows a worker
receives are either trained on or skipped with a reason, so what the workers did not receive is what the
split dropped: ``in_stream = trained + skipped + dropped``.
"""
from __future__ import annotations

ROW_KEYS = ("in_stream", "trained", "skipped", "dropped")


def epoch_rows(in_stream: int, received: int, skipped: int) -> dict[str, int]:
    """The epoch's accounting from the rows the workers received (all of them) and skipped (bad)."""
    if received > in_stream:
        raise AssertionError(f"the workers received {received} rows of a stream of {in_stream}: "
                             "the driver's count of the stream is wrong")
    return {"rows_in_stream": in_stream, "rows_trained": received - skipped, "rows_skipped": skipped,
            "rows_dropped": in_stream - received}


def format_rows(rows: dict[str, int]) -> str:
    return (f"rows per epoch: {rows['in_stream']} in the stream = {rows['trained']} trained + {rows['skipped']} "
            f"skipped (bad) + {rows['dropped']} dropped (the even split over workers)")
