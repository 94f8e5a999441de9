"""Shared pytest set-up: deterministic, single-process CPU torch for reproducible numbers."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as authors_reference


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes a minute or more on 2 cores (deselect with -m 'not slow')")


@pytest.fixture
def random_model_file(tmp_path):
    """A weights file of a seeded random ``compact`` NSLF (stage 3), as ``nslf train`` writes them."""
    from nslfcore.config import PRESETS
    from nslfcore.models import NSLF
    from nslfcore.training.checkpoint import atomic_torch_save, new_checkpoint

    torch.manual_seed(0)
    model = NSLF(PRESETS["compact"])
    path = tmp_path / "random-model.pt"
    atomic_torch_save(new_checkpoint(kind="weights", config=model.config.to_json(), stage=3, epoch=1,
                                     model=model.state_dict()), path)  # fmt: skip
    return path
