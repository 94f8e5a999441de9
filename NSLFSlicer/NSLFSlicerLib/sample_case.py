"""The panel's "Load sample case": a BraTS-like phantom case generated in a child process, then loaded as volume nodes.

The case (MNI152 anatomy with a synthetic tumour, 240 x 240 x 155 at 1 mm; see
:mod:`nslfcore.data.phantom`) is generated once by ``nslf phantom`` (seed 7, never used to train the
shipped model) into a folder and reused afterwards. Generating it needs torch (the dependency
step) and scipy (bundled with Slicer); the MNI152 template ships inside ``nslfcore``, so nothing
is installed into Slicer for it (nilearn, which would upgrade Slicer's requests, is not needed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from . import ensure_engine_on_path
from .assign import load_case_folder
from .process_runner import python_executable

ensure_engine_on_path()
import nslfcore  # noqa: E402

SEED = 7
CASE_NAME = "BraTS2021_00000"
#: What the phantom generator needs beyond the engine and torch (Slicer bundles it).
PACKAGES = ("scipy==1.17.1",)


def missing_packages() -> list[str]:
    return [p for p in PACKAGES if importlib.util.find_spec(p.split("==")[0]) is None]


def case_folder(folder: str | Path) -> Path:
    return Path(folder) / CASE_NAME


def is_generated(folder: str | Path) -> bool:
    return len(list(case_folder(folder).glob("*.nii.gz"))) == 5


def generate_command(folder: str | Path) -> tuple[list[str], dict[str, str]]:
    """The command (and extra environment) that writes the sample case into ``folder`` (run it with a ProcessRunner)."""
    engine_path = str(Path(nslfcore.__file__).resolve().parents[1])
    args = [python_executable(), "-m", "nslfcore.cli", "phantom", "--out", str(folder), "--n", "1", "--seed", str(SEED),
            "--overwrite"]  # its own folder: a half-written earlier try is replaced
    return args, {"PYTHONPATH": engine_path}


def load_sample_case(context: Any, folder: str | Path) -> dict[str, Any]:
    """Load the generated case's four volumes through storage nodes (the reference labels stay on disk).

    Returns ``{"t1": node, "t1ce": ..., "t2": ..., "flair": ...}``; raises ``FileNotFoundError`` if not generated.
    """
    if not is_generated(folder):
        raise FileNotFoundError(f"The sample case is not in {folder} yet; generate it first.")
    nodes = load_case_folder(context, case_folder(folder))
    return {m: nodes[m] for m in ("t1", "t1ce", "t2", "flair")}
