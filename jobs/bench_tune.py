"""Full grid vs Optuna + ASHA on one small space: best objective found and fine-tuning epochs spent.

    python jobs/bench_tune.py [--config FILE] [key=value ...]    # e.g. num_samples=10 finetune.epochs=8
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("bench_tune"))
