"""Memory while streaming: the same ingest over N and 10N copies of the shards; peaks must stay flat.

    python jobs/bench_memory.py [--data SHARDS ...] [key=value ...]    # e.g. copies=2 scale=10
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("bench_memory"))
