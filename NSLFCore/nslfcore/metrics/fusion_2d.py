"""The paper's 2-D fusion evaluation: FSIM, VIFP, NMI and IFC on axial slice pairs.

The paper scores fused images on 120 axial slice pairs (a fused slice against the same slice of
each source). Here :func:`select_axial_slices` makes the choice explicit and reproducible, and
:func:`fusion_metrics_2d` averages each metric over the sources (as
:func:`nslfcore.metrics.fusion_metrics` does in 3-D) and then over the slices.

Per pair (fused slice ``F``, source slice ``S``, both ``(y, x)`` in ``[0, 1]``; the source is the reference):

* ``fsim``: feature similarity (Zhang et al. 2011, grey-level FSIM, in ``[0, 1]``), ``piq.fsim``.
* ``vifp``: pixel-domain visual information fidelity (Sheikh & Bovik 2006, ``sigma_n^2 = 2`` on
  the 0-255 scale, 4 scales), ``piq.vif_p`` with the source as the reference.
* ``nmi_2d``: Studholme's normalised mutual information, 256 bins over each slice's range
  (:func:`nslfcore.metrics.nmi` on the slice; equals ``skimage.metrics.normalized_mutual_information``).
* ``ifc``: information fidelity criterion in bits (Sheikh, Bovik & de Veciana 2005) on a
  wavelet decomposition: :func:`nslfcore.metrics.ifc.ifc` (written here: no maintained Python
  implementation exists; a documented variant, see its module).

``piq`` and PyWavelets come with ``pip install nslfcore[metrics2d]``; they are imported when a
metric is called, and nslfcore imports without them. ``piq`` imports torchvision for metrics not
used here; where torchvision cannot load (a CUDA build of it beside a CPU build of torch), only
``piq.fsim`` and ``piq.vif`` are loaded, without the package's ``__init__`` (:func:`_piq`).

Arrays: volumes are ``(z, y, x)``; slices are ``(y, x)`` at axial index ``z`` (the first axis).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nslfcore.metrics.fusion import _sources_list, nmi
from nslfcore.metrics.ifc import ifc
from nslfcore.metrics.utils import Array, _check_3d, _check_same_shape, _numpy

#: The paper's number of slice pairs.
PAPER_SLICES: int = 120
#: Columns of :func:`fusion_metrics_2d` (and of ``nslf evaluate --metrics-2d``).
METRICS_2D: tuple[str, ...] = ("fsim", "vifp", "nmi_2d", "ifc")
#: Slices with less brain than this fraction of the largest slice's are not chosen.
MIN_AREA_FRACTION: float = 0.1
_EXTRA = "install nslfcore's 2-D metrics with `pip install nslfcore[metrics2d]`"


def _piq(name: str) -> types.ModuleType:
    """``piq.<name>`` (``"fsim"`` or ``"vif"``), importable even where piq's torchvision import fails."""
    try:
        return importlib.import_module(f"piq.{name}")
    except ModuleNotFoundError as error:
        if error.name == "piq":
            raise ImportError(f"FSIM and VIFP need piq: {_EXTRA}.") from error
    except (ImportError, RuntimeError):  # torchvision present but unusable here
        pass
    spec = importlib.util.find_spec("piq")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"FSIM and VIFP need piq: {_EXTRA}.")
    package = types.ModuleType("piq")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("piq", package)
    return importlib.import_module(f"piq.{name}")


def require_metrics_2d() -> None:
    """Fail now, with the extra to install, when piq or PyWavelets is missing (before a long evaluation)."""
    from nslfcore.metrics.ifc import _pywt

    _piq("fsim"), _piq("vif"), _pywt()


def _image(array: Array) -> torch.Tensor:
    """A ``(y, x)`` slice as a float64 ``(1, 1, y, x)`` tensor in ``[0, 1]`` (clipped: piq checks the range)."""
    return torch.as_tensor(np.asarray(_numpy(array), dtype=np.float64)).clamp(0.0, 1.0)[None, None]


def _check_pair(image: Array, reference: Array) -> None:
    if image.ndim != 2 or tuple(image.shape) != tuple(reference.shape):
        raise ValueError(f"2-D metrics need two (y, x) slices of one shape, got {tuple(image.shape)}, {tuple(reference.shape)}.")


def fsim(image: Array, reference: Array) -> float:
    """Grey-level FSIM of two ``(y, x)`` slices in ``[0, 1]`` (``piq.fsim``, ``chromatic=False``); in ``[0, 1]``.

    Symmetric. piq averages 2x2 blocks first when the shorter side is 384 pixels or more (its
    ``round(min(H, W) / 256)`` rule); a 240 x 240 BraTS slice is used as it is.
    """
    _check_pair(image, reference)
    return float(_piq("fsim").fsim(_image(image), _image(reference), data_range=1.0, chromatic=False))


def vifp(image: Array, reference: Array) -> float:
    """Pixel-domain VIF (``piq.vif_p``) of ``image`` against ``reference``, ``(y, x)`` in ``[0, 1]``.

    Not symmetric: ``reference`` is the undistorted image. At least 41 x 41 pixels (piq's limit).
    """
    _check_pair(image, reference)
    return float(_piq("vif").vif_p(_image(image), _image(reference), data_range=1.0))


def nmi_2d(image: Array, reference: Array) -> float:
    """Studholme NMI of two ``(y, x)`` slices (:func:`nslfcore.metrics.nmi`, 256 bins), in ``[1, 2]``."""
    _check_pair(image, reference)
    return nmi(_numpy(image)[None], _numpy(reference)[None])


def select_axial_slices(mask: Array, count: int = PAPER_SLICES, min_area_fraction: float = MIN_AREA_FRACTION) -> list[int]:
    """Axial slice indices ``z`` (the first axis of a ``(z, y, x)`` mask) for the 2-D evaluation.

    Deterministic: the candidates are the slices whose brain area (voxels of ``mask`` in the slice)
    is at least ``min_area_fraction`` of the largest slice's, i.e. the slices with the most brain
    (the thin caps at the top and bottom of the head are left out); of these, ``count`` evenly
    spaced ones (``numpy.linspace`` over the candidates in increasing ``z``, rounded to the
    nearest), or every candidate when there are ``count`` or fewer. Returned in increasing ``z``.

    Args:
        mask: ``(z, y, x)`` brain mask (non-zero = brain), e.g.
            :func:`nslfcore.data.transforms.brain_mask` of the case's stack.
        count: number of slices (the paper's 120).
        min_area_fraction: the area threshold above (0.1).

    Example::

        >>> select_axial_slices(mask, 120)  # mask (155, 240, 240): up to 120 z indices
    """
    _check_3d(mask, "mask")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}.")
    area = (_numpy(mask) != 0).reshape(mask.shape[0], -1).sum(axis=1)
    if area.max() == 0:
        raise ValueError("The brain mask is empty: no axial slice to evaluate.")
    candidates = np.flatnonzero(area >= min_area_fraction * area.max())
    if len(candidates) <= count:
        return [int(z) for z in candidates]
    picks = np.unique(np.rint(np.linspace(0, len(candidates) - 1, count)).astype(int))
    return [int(z) for z in candidates[picks]]


def fusion_metrics_2d(
    fused: Array, sources: Array | Sequence[Array], slices: Sequence[int]
) -> dict[str, Any]:
    """FSIM, VIFP, NMI and IFC of a fused volume's axial slices against each source's.

    Args:
        fused: ``(z, y, x)`` fused volume in ``[0, 1]``.
        sources: ``(S, z, y, x)`` stack (``(t1, t1ce, t2, flair)`` for nslfcore) or ``S`` ``(z, y, x)``
            volumes, same range (not rescaled; values outside ``[0, 1]`` are clipped for FSIM and VIFP).
        slices: axial indices ``z`` (:func:`select_axial_slices`).

    Returns:
        ``{"fsim", "vifp", "nmi_2d", "ifc"}``: per slice the mean over the sources, then the mean
        over the slices; ``"slices"``: the indices used; ``"per_source"``: ``{metric: [...]}``, one
        mean over the slices per source, in source order.
    """
    items = _sources_list(sources)
    for i, source in enumerate(items):
        _check_same_shape(fused, source, "fused", f"source {i}")
    if not slices:
        raise ValueError("No slices to evaluate; give at least one axial index.")
    f = _numpy(fused)
    per = {name: np.zeros((len(slices), len(items))) for name in METRICS_2D}
    for row, z in enumerate(slices):
        fused_slice = np.asarray(f[z], dtype=np.float64)
        for col, source in enumerate(items):
            s = np.asarray(_numpy(source)[z], dtype=np.float64)
            per["fsim"][row, col] = fsim(fused_slice, s)
            per["vifp"][row, col] = vifp(fused_slice, s)
            per["nmi_2d"][row, col] = nmi_2d(fused_slice, s)
            per["ifc"][row, col] = ifc(s, fused_slice)
    return {
        **{name: float(values.mean()) for name, values in per.items()},
        "slices": [int(z) for z in slices],
        "per_source": {name: [float(v) for v in values.mean(axis=0)] for name, values in per.items()},
    }
