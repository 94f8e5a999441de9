"""Shared fixtures: the module folder on sys.path, one processed scenario per session, a fresh logic per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "NSLFSlicer"
sys.path.insert(0, str(MODULE_DIR))

from NSLFSlicerLib.logic import NSLFLogicCore  # noqa: E402
from NSLFSlicerLib.testing import run_scenario  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes a minute or more on 2 cores (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def scenario(tmp_path_factory):
    """The shared scenario (oblique phantom, random compact model), run once."""
    return run_scenario(NSLFLogicCore(), tmp_path_factory.mktemp("scenario"))


@pytest.fixture(scope="session")
def model_path(scenario):
    return scenario.model_path


@pytest.fixture(scope="session")
def case_dir(scenario):
    return scenario.case_dir


@pytest.fixture
def logic():
    """A logic on a fresh standalone scene."""
    return NSLFLogicCore()


@pytest.fixture
def fresh_inputs(scenario):
    """A logic on a fresh scene and the scenario's four inputs, loaded from its case folder into a study."""
    from NSLFSlicerLib.testing import load_case_nodes, put_in_study

    logic = NSLFLogicCore()
    nodes = load_case_nodes(logic.context, scenario.case_dir)
    put_in_study(nodes)
    return logic, nodes



@pytest.fixture(scope="session")
def small_case_dir(tmp_path_factory):
    """A 32^3 phantom case on a straight grid (fast to load; no model run)."""
    from NSLFSlicerLib.testing import write_phantom

    return write_phantom(tmp_path_factory.mktemp("small-case"), size=(32, 32, 32), oblique=False)


@pytest.fixture
def small_inputs(small_case_dir):
    """A logic on a fresh scene and the small case's four input nodes."""
    from NSLFSlicerLib.testing import load_case_nodes

    logic = NSLFLogicCore()
    return logic, load_case_nodes(logic.context, small_case_dir)
