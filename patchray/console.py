"""How much a job prints: patchray's own lines by default, Ray's too with --verbose or PATCHRAY_VERBOSE=1."""
from __future__ import annotations

import os

VERBOSE_ENV = "PATCHRAY_VERBOSE"


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def configure_output(verbose: bool) -> None:
    """Record the choice where Ray-starting code (``patchray.train.runner.init_ray``) reads it."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
