"""Ingest throughput: torchvision's decode limit vs a plain torch DataLoader vs patchray's Ray Data pipeline.

    python jobs/bench_ingest.py [--data SHARDS ...] [key=value ...]    # e.g. copies=4 cores=2 task.patches_per_crop=16
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("bench_ingest"))
