"""Grid vs random + ASHA vs TPE + ASHA vs TPE: the whole grid recorded once with several seeds, the searches
replayed 100 times each over the recorded curves; regret and epochs spent.

    python jobs/bench_tune.py [--config FILE] [key=value ...]    # e.g. seeds=2 finetune.epochs=8
    python jobs/bench_tune.py curves=runs/bench_tune/curves.jsonl # replay an earlier recording, no training
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("bench_tune"))
