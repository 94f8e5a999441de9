"""MR contrasts of the phantom from tissue fractions.

Each voxel mixes seven tissues (partial volume): CSF, grey matter (GM), white matter (WM), and
the tumour tissues NCR (necrosis), NET (non-enhancing solid tumour; labelled NCR too), ED
(edema), ET (enhancing tumour). Its
intensity in modality ``m`` is ``sum_t fraction_t * CONTRAST[m][t] * (1 + texture_t)`` -- edema
is a mix of WM and the full edema value, weighted by a smooth per-voxel edema strength (mean 0.58) in
[0.3, 1] -- followed by a mild blur (point-spread), a smooth multiplicative bias field, a
per-case scanner scale, Rician noise, and skull stripping (0 outside the brain).

Relative intensities (WM on T1 = 0.88; orderings from the usual appearance of gliomas):

======  =====  =====  =====  =====  =====  =====  =====
        CSF    GM     WM     NCR    NET    ED     ET
======  =====  =====  =====  =====  =====  =====  =====
T1      0.30   0.66   0.88   0.34   0.52   0.60   0.62
T1ce    0.32   0.70   0.90   0.36   0.55   0.62   1.45
T2      1.00   0.62   0.42   0.92   0.80   0.84   0.66
FLAIR   0.12   0.66   0.48   0.40   0.82   1.00   0.80
======  =====  =====  =====  =====  =====  =====  =====

So T1: WM > GM > CSF, tumour dark; T1ce: like T1 plus a bright enhancing rim; T2: CSF
brightest, WM darker than GM, necrosis and edema bright; FLAIR: CSF dark, edema brightest,
GM > WM. No single modality separates the whole tumour from normal tissue: T2 confuses it with
CSF, FLAIR misses the necrotic core and faint edema, T1ce sees only the rim.

Arrays are ``(z, y, x)``; ``spacing`` is ``(z, y, x)`` mm.
"""

from __future__ import annotations

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.labels import ED, ET, NCR
from nslfcore.data.phantom_fields import gaussian_blur, smooth_noise
from nslfcore.data.phantom_tumour import TumourFractions

TISSUES: tuple[str, ...] = ("csf", "gm", "wm", "ncr", "net", "ed", "et")
CONTRAST: dict[str, dict[str, float]] = {
    "t1": {"csf": 0.30, "gm": 0.66, "wm": 0.88, "ncr": 0.34, "net": 0.52, "ed": 0.60, "et": 0.62},
    "t1ce": {"csf": 0.32, "gm": 0.70, "wm": 0.90, "ncr": 0.36, "net": 0.55, "ed": 0.62, "et": 1.45},
    "t2": {"csf": 1.00, "gm": 0.62, "wm": 0.42, "ncr": 0.92, "net": 0.80, "ed": 0.84, "et": 0.66},
    "flair": {"csf": 0.12, "gm": 0.66, "wm": 0.48, "ncr": 0.40, "net": 0.82, "ed": 1.00, "et": 0.80},
}
#: Per-case scanner scale (uniform range) by modality: the stored value of a tissue with relative intensity 1.
SCANNER_SCALE: dict[str, tuple[float, float]] = {
    "t1": (500.0, 1100.0), "t1ce": (500.0, 1200.0), "t2": (900.0, 2400.0), "flair": (350.0, 900.0),
}  # fmt: skip
TEXTURE: dict[str, float] = {"csf": 0.02, "gm": 0.04, "wm": 0.03, "ncr": 0.10, "net": 0.08, "ed": 0.06, "et": 0.12}


def labels_from_fractions(brain: np.ndarray, tumour: TumourFractions, edema: np.ndarray) -> np.ndarray:
    """Internal labels ``(z, y, x)`` uint8: ET where ET > 1/2, NCR where the rest of the mass > 1/2, ED where edema > 1/2."""
    label = np.zeros(brain.shape, np.uint8)
    inside = brain >= 0.5
    mass = tumour.core + tumour.et
    label[inside & (edema >= 0.5)] = ED
    label[inside & (mass >= 0.5)] = NCR
    label[inside & (tumour.et >= 0.5)] = ET
    return label


def synthesise(
    rng: np.random.Generator,
    anatomy: dict[str, np.ndarray],
    tumour: TumourFractions,
    spacing: tuple[float, float, float],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images (modality -> float32 ``(z, y, x)``, scanner-like values, 0 outside the brain) and internal labels.

    ``anatomy``: fractions ``csf``, ``gm``, ``wm`` (summing to ``brain``) and ``brain``, ``(z, y, x)``.
    """
    brain = anatomy["brain"]
    shape = brain.shape
    normal = anatomy["csf"] + anatomy["gm"] + anatomy["wm"]
    share = np.where(normal > 1e-4, (anatomy["gm"] + anatomy["wm"]) / np.maximum(normal, 1e-4), 0.0).astype(np.float32)
    mass = np.minimum(tumour.core + tumour.et, 1.0)
    edema = tumour.edema * share
    keep = np.clip(1.0 - mass - edema, 0.0, 1.0)
    fractions = {
        "csf": anatomy["csf"] * keep, "gm": anatomy["gm"] * keep, "wm": anatomy["wm"] * keep,
        "ncr": brain * tumour.ncr, "net": brain * tumour.net, "ed": brain * edema, "et": brain * tumour.et,
    }  # fmt: skip
    extent = np.asarray(shape) * np.asarray(spacing)
    strength = np.clip(0.58 + 0.25 * smooth_noise(rng, shape, extent / 25.0), 0.3, 1.0)
    textures = {t: TEXTURE[t] * smooth_noise(rng, shape, extent / 6.0) for t in TISSUES}
    stack = np.zeros((len(MODALITIES), *shape), np.float32)
    for c, modality in enumerate(MODALITIES):
        table = {t: v * (1 + 0.025 * rng.standard_normal()) for t, v in CONTRAST[modality].items()}
        for tissue in TISSUES:
            value: float | np.ndarray = table[tissue]
            if tissue == "ed":
                value = table["wm"] + strength * (table["ed"] - table["wm"])
            stack[c] += fractions[tissue] * value * (1 + textures[tissue])
    stack = gaussian_blur(stack, [0.55 / s for s in spacing])
    images = {}
    inside = brain >= 0.5
    for c, modality in enumerate(MODALITIES):
        bias = np.exp(0.18 * smooth_noise(rng, shape, extent / 120.0))
        scale = rng.uniform(*SCANNER_SCALE[modality])
        sigma = rng.uniform(0.015, 0.04) * scale * CONTRAST[modality]["wm"]
        clean = stack[c] * bias * scale
        noisy = np.sqrt((clean + sigma * rng.standard_normal(shape, dtype=np.float32)) ** 2
                        + (sigma * rng.standard_normal(shape, dtype=np.float32)) ** 2)  # fmt: skip
        images[modality] = np.where(inside, noisy, 0.0).astype(np.float32)
    return images, labels_from_fractions(brain, tumour, edema)
