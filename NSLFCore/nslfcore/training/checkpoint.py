"""Training checkpoints: one file per stage, written atomically, read with ``weights_only=True``.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts (nothing that
needs full pickle):

=================  ===========================================================================
``format``         ``"nslf-checkpoint"``; ``format_version`` 1
``version``        the nslfcore version that wrote it
``config``         the :class:`~nslfcore.config.NSLFConfig` as a JSON string
``kind``           ``"weights"`` (a model file: ``stageN_best.pt``, the shipped models) or
                   ``"training-state"`` (``stageN.pt``, what ``--resume`` reads)
``stage``          1, 2 or 3; weights files also hold ``epoch`` (completed epochs) and ``best_metric``
``model``          the model's state dict (all four networks)
``progress``       training state only: the stage's :class:`~nslfcore.training.progress.StageProgress`
                   as a dict (epoch, step, position in the epoch, best metric and epoch, patience,
                   finished); files written before it held these fields at the top level and still resume
``optimizers``     name -> optimiser state dict; ``schedulers`` likewise; ``scaler`` or ``None``
``rng``            RNG states: ``torch``, ``cuda`` (list), ``numpy`` (as tensors and ints), ``python``
``split``          the data split: ``{"train": [...], "valid": [...]}`` case names
``training``       the training options (JSON string) so a resume continues the same run
=================  ===========================================================================

Writing goes to a temporary file in the same folder, is flushed and ``fsync``-ed, then renamed
over the target, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nslfcore import __version__

FORMAT = "nslf-checkpoint"
FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read an NSLF checkpoint with ``torch.load(weights_only=True)``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt, truncated, or needs full pickle
        # torch's own text advises weights_only=False, i.e. running whatever the file contains: never pass it on.
        if "unsupported global" in str(error).lower():
            why = "it holds Python objects that only full (unsafe) unpickling could load; use a file written by nslf train"
        else:
            why = "it is truncated or damaged; copy or download it again"
        raise ValueError(f"Checkpoint {path} cannot be read safely: {why}.") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an NSLF checkpoint (no format marker {FORMAT!r}).")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer nslfcore (format {data['format_version']}); upgrade nslfcore.")
    return data


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state a training step may touch, as weights-only-loadable values."""
    np_state = np.random.get_state(legacy=True)  # (name, keys, pos, has_gauss, cached_gaussian)
    assert isinstance(np_state, tuple)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _python_state_to_lists(random.getstate()),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _python_state_to_lists(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def new_checkpoint(**fields: Any) -> dict[str, Any]:
    """A checkpoint dictionary with the format markers and the package version filled in."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__, **fields}
