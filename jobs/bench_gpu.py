"""One GPU's patches/s: nvJPEG decode and patch cutting against a CPU core, training steps with bf16,
channels-last and torch.compile, and the end-to-end path with the data decoded on the GPU. Needs no Ray.

    python jobs/bench_gpu.py [key=value ...]    # e.g. models=[resnet18] patches_per_step=[1024] device=cpu
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("bench_gpu"))
