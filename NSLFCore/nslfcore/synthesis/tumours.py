"""Tumour types of the synthesis engine and their labels.

Each case draws one type (:data:`TUMOUR_TYPES`, with :data:`TYPE_WEIGHTS`):

``glioblastoma``
    one mass (sometimes two) of 10-28 mm radius with a necrotic core inside an irregular enhancing
    ring of varying thickness, sometimes with gaps; infiltrative oedema that reaches further along
    white matter; strong mass effect.
``non_enhancing_glioblastoma``
    the same shape without any enhancement (necrosis inside non-enhancing tumour), as some
    high-grade and many treated tumours look: a case with no ET at all.
``lower_grade_glioma``
    a solid non-enhancing, FLAIR-bright mass of 12-32 mm, little or no necrosis, little oedema;
    now and then a small enhancing focus.
``metastases``
    one to four small lesions (3-12 mm): ring-enhancing with a necrotic centre, or solid
    enhancing nodules, with oedema far larger than the lesion.

Shapes come from :mod:`nslfcore.data.phantom_tumour` (lobulated masses, rims, oedema that
follows white matter, incompressible mass effect). Arrays are ``(z, y, x)``, 1 mm voxels;
centres are voxel indices ``(z, y, x)``.
"""

from __future__ import annotations

import numpy as np

from nslfcore.data.phantom_tumour import Lesion, TumourFractions

TUMOUR_TYPES: tuple[str, ...] = ("glioblastoma", "non_enhancing_glioblastoma", "lower_grade_glioma", "metastases")
TYPE_WEIGHTS: tuple[float, ...] = (0.45, 0.12, 0.2, 0.23)


def _centre(rng: np.random.Generator, candidates: np.ndarray, brain: np.ndarray, radius: float,
            others: list[Lesion]) -> tuple[float, float, float] | None:  # fmt: skip
    """A voxel of ``candidates`` with brain 0.75 ``radius`` away along every axis, not too close to ``others``."""
    for _ in range(200):
        c = candidates[rng.integers(len(candidates))].astype(float)
        probes = [c + sign * 0.75 * radius * np.eye(3)[a] for a in range(3) for sign in (-1, 1)]
        inside = all(
            all(0 <= p[a] < brain.shape[a] for a in range(3)) and brain[tuple(np.round(p).astype(int))] for p in probes
        )
        far = all(np.linalg.norm(c - np.asarray(o.center)) > 1.2 * (radius + o.radius) for o in others)
        if inside and far:
            return (float(c[0]), float(c[1]), float(c[2]))
    return None


def sample_tumour(rng: np.random.Generator, wm: np.ndarray, brain: np.ndarray,
                  kind: str | None = None) -> tuple[str, list[Lesion]]:  # fmt: skip
    """Draw a tumour type (or use ``kind``) and its lesions; ``wm``, ``brain``: fractions ``(z, y, x)``."""
    kind = kind or str(rng.choice(TUMOUR_TYPES, p=np.asarray(TYPE_WEIGHTS) / sum(TYPE_WEIGHTS)))
    if kind not in TUMOUR_TYPES:
        raise ValueError(f"tumour type {kind!r} is unknown; use one of {TUMOUR_TYPES}.")
    inside = brain >= 0.5
    candidates = np.argwhere(wm > 0.6)
    if not len(candidates):
        candidates = np.argwhere(inside)
    lesions: list[Lesion] = []
    if kind == "metastases":
        count = int(rng.choice([1, 1, 2, 3, 4]))
        cortical = np.argwhere((wm > 0.2) & (wm < 0.8))  # metastases favour the grey-white junction
        for _ in range(count):
            radius = float(rng.uniform(3.0, 12.0))
            centre = _centre(rng, cortical if len(cortical) else candidates, inside, radius, lesions)
            if centre is None:
                continue
            solid = rng.random() < 0.35 or radius < 5
            lesions.append(Lesion(centre, radius, rim=radius * 2 if solid else float(rng.uniform(1.2, 3.5)),
                                  lobulation=float(rng.uniform(0.05, 0.2)), edema_reach=float(rng.uniform(4, 20)),
                                  mass_effect=float(rng.uniform(0.1, 0.4)), rim_gaps=0.0))  # fmt: skip
        return kind, lesions
    count = 2 if kind == "glioblastoma" and rng.random() < 0.12 else 1
    for index in range(count):
        if kind == "lower_grade_glioma":
            radius, rim = float(rng.uniform(12.0, 32.0)), 0.0
            reach = float(rng.uniform(0.0, 8.0))
        else:
            radius = float(rng.uniform(10.0, 28.0) if index == 0 else rng.uniform(6.0, 12.0))
            rim = float(rng.uniform(1.5, 7.0)) if kind == "glioblastoma" else 0.0
            reach = float(rng.uniform(8.0, 35.0))
        centre = _centre(rng, candidates, inside, radius, lesions)
        if centre is None:
            continue
        lesions.append(Lesion(centre, radius, rim=rim, lobulation=float(rng.uniform(0.12, 0.4)), edema_reach=reach,
                              mass_effect=float(rng.uniform(0.2, 0.7)),
                              rim_gaps=float(rng.choice([0.0, rng.uniform(0.1, 0.45)]))))  # fmt: skip
    return kind, lesions


def lower_grade_focus(rng: np.random.Generator, kind: str, lesions: list[Lesion]) -> list[Lesion]:
    """Now and then (20 %) a small enhancing nodule inside a lower-grade glioma; otherwise ``[]``."""
    if kind != "lower_grade_glioma" or not lesions or rng.random() >= 0.2:
        return []
    host = lesions[0]
    offset = rng.standard_normal(3)
    offset *= 0.4 * host.radius / np.linalg.norm(offset)
    radius = float(rng.uniform(2.5, 5.0))
    centre = tuple(float(c + o) for c, o in zip(host.center, offset))
    return [Lesion(centre, radius, rim=2 * radius, lobulation=0.1, edema_reach=0.0, mass_effect=0.0, rim_gaps=0.0)]  # type: ignore[arg-type]


def tumour_labels(kind: str, tumour: TumourFractions, focus: TumourFractions | None) -> dict[str, np.ndarray]:
    """Boolean masks ``necrosis``, ``non_enhancing``, ``oedema``, ``enhancing`` ``(z, y, x)`` from fractions.

    A voxel belongs to the part with the largest fraction once the whole mass or the oedema is over
    one half (so partial-volume rims stay consistent with the soft shapes).
    """
    et = tumour.et if focus is None else np.maximum(tumour.et, focus.et)
    mass = tumour.ncr + tumour.net + et
    in_mass = mass >= 0.5
    enhancing = in_mass & (et >= np.maximum(tumour.ncr, tumour.net)) & (et > 0.25)
    necrosis = in_mass & ~enhancing & (tumour.ncr >= tumour.net)
    non_enhancing = in_mass & ~enhancing & ~necrosis
    oedema = ~in_mass & (tumour.edema >= 0.5)
    return {"necrosis": necrosis, "non_enhancing": non_enhancing, "oedema": oedema, "enhancing": enhancing}
