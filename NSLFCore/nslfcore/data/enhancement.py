"""Is enhancing tumour still distinguishable on T1ce after normalisation? (issue 15 point 2)

Enhancing tumour (ET) is defined by T1ce: it is brighter than the rest of the tumour and than
healthy brain. The default ``robust`` normalisation is the paper's min-max, so a structure brighter
than ET (vessels, dura, choroid plexus: real T1ce has them, in thousands of voxels) sets the
maximum and compresses everything below it. Rank-based separability survives any monotonic
normalisation; what moves is where ET lies in [0, 1], i.e. the absolute values the network learnt.
:func:`enhancement_contrast` measures both, and :func:`add_bright_vessels` makes the stress case.

Arrays are ``(z, y, x)``; ``label`` holds internal labels (0 background, 1 NCR, 2 ED, 3 ET).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from nslfcore.data.labels import ET

#: Voxels drawn (at most) from each group for the rank statistics (a regular subsample, deterministic).
MAX_SAMPLE = 200_000


@dataclass(frozen=True)
class EnhancementContrast:
    """T1ce contrast of ET against healthy brain and against the rest of the tumour, in the image's own units.

    Attributes:
        et_median: median T1ce of ET voxels.
        healthy_median: median T1ce of non-tumour brain voxels.
        healthy_p99: 99th percentile of non-tumour brain voxels.
        gap: ``et_median - healthy_p99`` (> 0: most ET is brighter than almost all healthy brain).
        auc_vs_healthy: probability that an ET voxel is brighter than a healthy brain voxel (ties 1/2).
        auc_vs_other_tumour: the same against NCR and edema voxels.
        et_voxels: how many ET voxels there are (0: the other fields are NaN).
    """

    et_median: float
    healthy_median: float
    healthy_p99: float
    gap: float
    auc_vs_healthy: float
    auc_vs_other_tumour: float
    et_voxels: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _subsample(values: np.ndarray) -> np.ndarray:
    return values[:: max(1, values.size // MAX_SAMPLE)]


def brighter_probability(a: np.ndarray, b: np.ndarray) -> float:
    """P(x > y) + P(x = y) / 2 for x from ``a`` and y from ``b``: the ROC AUC of ``a`` against ``b``
    (the Mann-Whitney U statistic divided by ``len(a) * len(b)``); NaN if either is empty."""
    if a.size == 0 or b.size == 0:
        return float("nan")
    ordered = np.sort(b.ravel())
    below = np.searchsorted(ordered, a.ravel(), side="left")
    not_above = np.searchsorted(ordered, a.ravel(), side="right")
    return float((below + not_above).sum() / (2.0 * a.size * b.size))


def enhancement_contrast(t1ce: np.ndarray, label: np.ndarray, brain: np.ndarray) -> EnhancementContrast:
    """How T1ce separates ET from healthy brain and from the rest of the tumour.

    Args:
        t1ce: T1ce ``(z, y, x)``, raw or normalised.
        label: internal labels ``(z, y, x)`` (3 = ET, 1-2 the rest of the tumour).
        brain: brain mask ``(z, y, x)`` (healthy brain = brain and label 0).
    """
    t1ce = np.asarray(t1ce, dtype=np.float32)
    et = t1ce[label == ET]
    healthy = _subsample(t1ce[brain & (label == 0)])
    other = _subsample(t1ce[(label > 0) & (label != ET)])
    if et.size == 0 or healthy.size == 0:
        nan = float("nan")
        return EnhancementContrast(nan, nan, nan, nan, nan, nan, int(et.size))
    et_median, p99 = float(np.median(et)), float(np.percentile(healthy, 99))
    return EnhancementContrast(
        et_median=et_median, healthy_median=float(np.median(healthy)), healthy_p99=p99, gap=et_median - p99,
        auc_vs_healthy=brighter_probability(_subsample(et), healthy),
        auc_vs_other_tumour=brighter_probability(_subsample(et), other), et_voxels=int(et.size),
    )  # fmt: skip


def add_bright_vessels(t1ce: np.ndarray, label: np.ndarray, brain: np.ndarray, factor: float, voxels: int = 3000,
                       seed: int = 0) -> np.ndarray:  # fmt: skip
    """A copy of ``t1ce`` with enhancing vessels: random-walk tubes in healthy brain at ``factor`` x ET's 99th percentile.

    Real T1ce shows vessels, dura and choroid plexus brighter than tumour enhancement; the
    phantoms have none. ``voxels`` (about 0.2 % of a brain) is set so that they are not the isolated
    extremes the ``robust`` normalisation ignores: they set the maximum, as real vessels do.
    Walks of 1-voxel steps along random axes from random healthy-brain voxels, 3 x 3 x 3 thick,
    only where the brain is healthy. Needs ET in ``label`` (the intensity reference).
    """
    rng = np.random.default_rng(seed)
    healthy = brain & (label == 0)
    reference = float(np.percentile(np.asarray(t1ce)[label == ET], 99))
    out = np.array(t1ce, dtype=np.float32, copy=True)
    vessel = np.zeros(out.shape, dtype=bool)
    starts = np.argwhere(healthy)
    shape = np.array(out.shape)
    while vessel.sum() < voxels:
        point = starts[rng.integers(len(starts))].copy()
        for _ in range(60):
            point = np.clip(point + np.eye(3, dtype=int)[rng.integers(3)] * rng.choice((-1, 1)), 1, shape - 2)
            z, y, x = point
            vessel[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] = True
    vessel &= healthy
    out[vessel] = factor * reference
    return out
