"""Linear probe of frozen trunks: `python jobs/evaluate.py [--config FILE] [--inits INIT ...] [--data DIR ...]
[key=value ...]`.

INIT is random (He), patchtask:<pretraining run folder or pretext.pt> (any number of them) or imagenet
(torchvision weights from the local torch cache); default: random, patchtask:runs/pretrain and imagenet where
cached. Each init's trunk embeds the labeled crops once (cached in OUT/NAME/features/), then a linear probe is
fitted per label budget and seed on the crops fine-tuning would train on; writes linear_eval.md / .json and
low_shot_linear.png. One process, no Ray; a GPU when torch sees one.
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("evaluate"))
