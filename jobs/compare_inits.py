"""The paper's comparison on our data: `python jobs/compare_inits.py [--config FILE] [key=value ...]`.

Pretrains once (or reuses pretrained=PATH), fine-tunes from random and PatchTask
(and ImageNet where its weights are cached) at each label budget and seed, and
writes comparison.md / .json / .png, learning_curves.png and, with two or more
budgets, low_shot.png. With layers=[k, ...] also PatchTask runs that copy only
the trunk's first k blocks (fine-tuned and/or frozen: layer_modes), summed up in
layerwise.md / .png.
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("compare_inits"))
