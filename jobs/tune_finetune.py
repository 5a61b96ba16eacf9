"""Ray Tune over the pretext task and fine-tuning, scored by fine-tuned validation mA (Optuna + ASHA).

    python jobs/tune_finetune.py                                   # small search, default data, <= 15 min
    python jobs/tune_finetune.py --config configs/tune.yaml --name wide --samples 64 --time-budget 36000

Re-running with the same --name resumes the experiment; see README "Searching with Ray Tune".
"""
import sys

from patchray.cli import main

if __name__ == "__main__":
    sys.exit(main("tune_finetune"))
