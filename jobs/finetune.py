"""Attribute fine-tuning: `python jobs/finetune.py [--config FILE] [--data DIR] [--init INIT] [key=value ...]`.

INIT is random (He), patchtask:<pretext checkpoint or pretraining run folder>, or imagenet
(torchvision weights from the local torch cache). With no --data it uses the synthetic
default's labeled crops.
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("finetune"))
