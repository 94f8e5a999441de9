"""Shared pytest set-up: deterministic, single-process CPU torch for reproducible numbers."""

import os
import shutil
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
    from nslfcore.model_store import save_model
    from nslfcore.models import NSLF

    torch.manual_seed(0)
    return save_model(NSLF(PRESETS["compact"]), tmp_path / "random-model.pt", stage=3, epoch=1)


@pytest.fixture(scope="session")
def _tiny_case_once(tmp_path_factory):
    from nslfcore.data.phantom import write_phantom_dataset

    (folder,) = write_phantom_dataset(tmp_path_factory.mktemp("tiny-case"), 1, seed=6, tiny=True)
    return folder


@pytest.fixture
def tiny_case(_tiny_case_once, tmp_path):
    """A tiny phantom case folder in the BraTS 2021 layout: ``tmp_path/cases/BraTS2021_00000`` with
    ``BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``, 48^3 voxels (1 mm, LPS), as
    ``nslf phantom --tiny --n 1 --seed 6`` writes it.

    Generated once per session and copied for each test, so a test may change or break its files.
    """
    return Path(shutil.copytree(_tiny_case_once, tmp_path / "cases" / _tiny_case_once.name))


@pytest.fixture
def stopped_training(monkeypatch):
    """``nslfcore.training.run.train`` replaced by one that returns ``"stopped"`` at once, as the real one
    does after a STOP file (the trainer's own tests: test_training.py); the run folders it was given, in order."""
    import nslfcore.training.run as training_run

    calls: list[str] = []

    def stopped_train(data, run_dir, *args, **kwargs):
        calls.append(Path(run_dir).name)
        return "stopped"

    monkeypatch.setattr(training_run, "train", stopped_train)
    return calls
