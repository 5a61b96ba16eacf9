"""Ray Train's cost: the same model, data and checkpoints through a plain PyTorch loop and one Ray Train worker.

    python jobs/bench_train.py [key=value ...]    # e.g. crops=4096 device=cuda compile=inductor
"""
import sys

from patchray.train.cli import bench_train_main as main

if __name__ == "__main__":
    sys.exit(main())
