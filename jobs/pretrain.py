"""PatchTask pretraining: `python jobs/pretrain.py [--config FILE] [--data GLOB ...] [key=value ...]`.

With no arguments it renders the synthetic default data (once), pretrains on
the local machine and prints where everything is. Under `ray job submit` it
joins that cluster.
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("pretrain"))
