"""Full grid vs Optuna + ASHA on one small space: best objective found and fine-tuning epochs spent.

    python jobs/bench_tune.py [--config FILE] [key=value ...]    # e.g. num_samples=10 finetune.epochs=8
"""
import sys

from patchray.train.cli import bench_tune_main as main

if __name__ == "__main__":
    sys.exit(main())
