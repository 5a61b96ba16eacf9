"""Counting what a shard-producing run wrote and skipped, by reason, and saying so."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from patchray.shards.writer import ShardFile

SUMMARY_JSON = "summary.json"
# Problems are counted without limit; only the first few are kept word for word.
MAX_MESSAGES = 50


@dataclass
class RunReport:
    command: str
    out_dir: str
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    files: list[ShardFile] = field(default_factory=list)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(f"{where}: {reason}" + (f" ({detail})" if detail else ""))

    def convert(self, what: str) -> None:
        self.converted[what] += 1

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "out_dir": self.out_dir,
            "crops_written": self.written,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": sum(self.skipped.values()),
            "converted": dict(sorted(self.converted.items())),
            "shards": [os.path.basename(f.path) for f in self.files],
            "bytes": sum(f.bytes for f in self.files),
            "first_problems": self.messages,
        }

    def save(self) -> Path:
        path = Path(self.out_dir) / SUMMARY_JSON
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def format(self) -> str:
        d = self.to_dict()
        lines = [f"{self.command}: wrote {d['crops_written']} crops in {len(d['shards'])} shard(s), "
                 f"{d['bytes'] / 1e6:.1f} MB -> {self.out_dir}"]
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
        lines.append(f"  summary: {Path(self.out_dir) / SUMMARY_JSON}")
        return "\n".join(lines)
