import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    # Deterministic weights and inputs so that tolerances are reproducible.
    torch.manual_seed(0)
