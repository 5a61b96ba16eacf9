"""Counting what a shard-producing run was given, wrote and skipped, by reason, and saying so."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from patchray.shards.writer import SUMMARY_JSON, ShardFile, safe_text

__all__ = ["MAX_MESSAGES", "MAX_MESSAGE_CHARS", "SUMMARY_JSON", "RunReport"]

# Problems are counted without limit; only the first few are kept word for word, each cut to a sane length
# (a hostile input line can be megabytes long).
MAX_MESSAGES = 50
MAX_MESSAGE_CHARS = 400


@dataclass
class RunReport:
    """What a run was given (``inputs``, by kind), wrote, and skipped (by reason).

    Every input ends up written, skipped under a reason, or (labels CSV rows only) attached to a crop:
    ``written + skipped_total + label_rows_used == sum(inputs)``; ``unaccounted`` says how far from that a run
    is, and is 0 for every ingest path (tests/shards/ingest/test_fuzz.py checks it on hostile input).
    """
    command: str
    out_dir: str
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    files: list[ShardFile] = field(default_factory=list)
    inputs: Counter = field(default_factory=Counter)
    label_rows_used: int = 0

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if len(self.messages) < MAX_MESSAGES:
            text = f"{where}: {reason}" + (f" ({detail})" if detail else "")
            if len(text) > MAX_MESSAGE_CHARS:
                text = text[:MAX_MESSAGE_CHARS] + "..."
            self.messages.append(safe_text(text))

    def convert(self, what: str) -> None:
        self.converted[what] += 1

    def given(self, kind: str, count: int = 1) -> None:
        self.inputs[kind] += count

    @property
    def unaccounted(self) -> int:
        return sum(self.inputs.values()) - self.written - sum(self.skipped.values()) - self.label_rows_used

    def to_dict(self) -> dict:
        d = {
            "command": self.command,
            "out_dir": safe_text(self.out_dir),
            "crops_written": self.written,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": sum(self.skipped.values()),
            "converted": dict(sorted(self.converted.items())),
            "shards": [os.path.basename(f.path) for f in self.files],
            "bytes": sum(f.bytes for f in self.files),
            "first_problems": self.messages,
        }
        d["inputs"] = dict(sorted(self.inputs.items()))
        if self.label_rows_used:
            d["label_rows_used"] = self.label_rows_used
        d["unaccounted"] = self.unaccounted
        return d

    def save(self, directory: str | os.PathLike | None = None) -> Path:
        """Write ``summary.json`` into ``directory`` (default: the output folder)."""
        path = Path(directory if directory is not None else self.out_dir) / SUMMARY_JSON
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def format(self) -> str:
        d = self.to_dict()
        out_dir = safe_text(self.out_dir)
        lines = [f"{self.command}: wrote {d['crops_written']} crops in {len(d['shards'])} shard(s), "
                 f"{d['bytes'] / 1e6:.1f} MB -> {out_dir}"]
        if d["inputs"]:
            lines.append("  given: " + ", ".join(f"{k}={v}" for k, v in d["inputs"].items())
                         + ("" if not self.unaccounted else f" ({self.unaccounted} NOT ACCOUNTED FOR)"))
        if d["skipped_total"]:
            reasons = ", ".join(f"{k}={v}" for k, v in d["skipped"].items())
            lines.append(f"  skipped {d['skipped_total']}: {reasons}")
            lines += [f"    {m}" for m in self.messages[:10]]
            if len(self.messages) > 10:
                lines.append(f"    ... (first {len(self.messages)} problems in {SUMMARY_JSON})")
        else:
            lines.append("  skipped 0")
        if d["converted"]:
            lines.append("  converted: " + ", ".join(f"{k}={v}" for k, v in d["converted"].items()))
        lines.append(f"  summary: {Path(out_dir) / SUMMARY_JSON}")
        return "\n".join(lines)
