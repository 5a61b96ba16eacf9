"""Ray Train's cost: the same model, data and checkpoints through a plain PyTorch loop and one Ray Train worker.

    python jobs/bench_train.py [key=value ...]    # e.g. crops=4096 device=cuda compile=inductor
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("bench_train"))
