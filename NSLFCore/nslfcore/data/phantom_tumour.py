"""Synthetic brain tumours for the phantom generator: shape, tumour classes, edema and mass effect.

A lesion is a lobulated (noise-perturbed) mass, mostly in white matter: for high-grade-like
lesions a necrotic core inside an enhancing rim (ET) of variable, sometimes patchy thickness;
for low-grade-like lesions (about 15 % of cases) a solid non-enhancing mass. Necrosis and
non-enhancing tumour are both labelled NCR but differ in contrast; edema (ED) spreads around it,
further along white matter. The mass pushes the surrounding anatomy outward: a point at distance ``r`` from the centre came from
``(r^3 - k R^3)^(1/3)`` (an inflating sphere of radius ``k^(1/3) R`` in an incompressible medium),
a displacement that decays like ``k R^3 / (3 r^2)``.

Arrays are ``(z, y, x)``; centres are voxel indices ``(z, y, x)``; lengths in mm (``spacing`` is
``(z, y, x)`` mm here, the reverse of SimpleITK's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nslfcore.data.phantom_fields import gaussian_blur, sigmoid, smooth_noise


@dataclass(frozen=True)
class Lesion:
    """One lesion; lengths in mm, ``center`` in voxels ``(z, y, x)``."""

    center: tuple[float, float, float]
    radius: float
    rim: float  # enhancing rim thickness; 0 = non-enhancing (low-grade-like)
    lobulation: float  # relative radius perturbation amplitude
    edema_reach: float  # how far edema extends beyond the mass in white matter
    mass_effect: float  # k in (r^3 - k R^3)^(1/3)
    rim_gaps: float  # share of the rim left out (patchy enhancement), 0..0.5


def sample_lesions(
    rng: np.random.Generator, wm: np.ndarray, brain: np.ndarray, spacing: tuple[float, float, float], scale: float = 1.0
) -> list[Lesion]:
    """Draw one (85 %) or two lesions centred in white matter; ``scale`` shrinks sizes for small phantoms.

    ``wm``, ``brain``: fractions ``(z, y, x)``; ``spacing``: mm ``(z, y, x)``.
    """
    count = 1 if rng.random() < 0.85 else 2
    enhancing = rng.random() < 0.85  # otherwise a low-grade-like case without ET
    candidates = np.flatnonzero((wm > 0.7).ravel())
    if len(candidates) == 0:
        candidates = np.flatnonzero((brain > 0.5).ravel())
    lesions: list[Lesion] = []
    sp = np.asarray(spacing)
    for index in range(count):
        radius = scale * (rng.uniform(10, 23) if index == 0 else rng.uniform(6, 12))
        center = None
        for _ in range(200):
            c = np.array(np.unravel_index(candidates[rng.integers(len(candidates))], wm.shape), dtype=float)
            probes = [c + sign * 0.75 * radius / sp[a] * np.eye(3)[a] for a in range(3) for sign in (-1, 1)]
            inside = [
                all(0 <= p[a] < wm.shape[a] for a in range(3)) and brain[tuple(np.round(p).astype(int))] > 0.5
                for p in probes
            ]
            far = all(np.linalg.norm((c - np.array(o.center)) * sp) > 1.3 * (radius + o.radius) for o in lesions)
            if all(inside) and far:
                center = c
                break
        if center is None:
            continue
        rim = scale * rng.uniform(1.8, 6.0) if enhancing else 0.0
        lesions.append(
            Lesion(
                center=tuple(float(v) for v in center),  # type: ignore[arg-type]
                radius=float(radius),
                rim=float(max(rim, 1.6 * float(sp.min())) if enhancing else 0.0),
                lobulation=float(rng.uniform(0.12, 0.32)),
                edema_reach=float(scale * rng.uniform(12, 35)),
                mass_effect=float(rng.uniform(0.25, 0.7)),
                rim_gaps=float(rng.choice([0.0, 0.0, rng.uniform(0.1, 0.4)])),
            )
        )
    return lesions


def _grid_mm(
    shape: tuple[int, ...], spacing: tuple[float, float, float], center: tuple[float, float, float], box: tuple[slice, ...]
) -> list[np.ndarray]:
    return [
        ((np.arange(box[a].start, box[a].stop, dtype=np.float32) - center[a]) * spacing[a]).reshape(
            [-1 if b == a else 1 for b in range(3)]
        )
        for a in range(3)
    ]


def mass_effect_coords(lesions: list[Lesion], shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Where each output voxel's anatomy comes from after the masses pushed it: voxel coords ``(3, z, y, x)``."""
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    sp = np.asarray(spacing, dtype=np.float32).reshape(3, 1, 1, 1)
    for lesion in lesions:
        c = np.asarray(lesion.center, dtype=np.float32).reshape(3, 1, 1, 1)
        offset = (coords - c) * sp  # mm
        r = np.sqrt((offset**2).sum(axis=0)) + 1e-3
        k_r3 = lesion.mass_effect * lesion.radius**3
        r_src = np.cbrt(np.maximum(r**3 - k_r3, 0.0))
        coords = c + offset * (r_src / r) / sp
    return coords.astype(np.float32)


@dataclass
class TumourFractions:
    """Per-voxel fractions ``(z, y, x)`` in [0, 1].

    ``ncr`` (necrosis) + ``net`` (non-enhancing solid tumour, both labelled NCR) + ``et`` = the
    mass; ``edema`` is relative to the non-mass part.
    """

    ncr: np.ndarray
    net: np.ndarray
    et: np.ndarray
    edema: np.ndarray

    @property
    def core(self) -> np.ndarray:
        """NCR-labelled fraction: necrosis plus non-enhancing tumour."""
        return self.ncr + self.net


def tumour_fractions(
    rng: np.random.Generator, lesions: list[Lesion], wm: np.ndarray, spacing: tuple[float, float, float]
) -> TumourFractions:
    """Render the lesions on the grid of ``wm`` (white-matter fraction ``(z, y, x)``, after mass effect)."""
    shape = wm.shape
    ncr = np.zeros(shape, np.float32)
    net = np.zeros(shape, np.float32)
    et = np.zeros(shape, np.float32)
    edema = np.zeros(shape, np.float32)
    min_sp = float(min(spacing))
    wm_smooth = gaussian_blur(wm, [2.0 / s for s in spacing])
    for lesion in lesions:
        reach = lesion.radius * (1 + 2 * lesion.lobulation) + 2.0 * lesion.edema_reach + 4 * min_sp
        box = tuple(
            slice(max(0, int(np.floor(c - reach / s))), min(n, int(np.ceil(c + reach / s)) + 1))
            for c, s, n in zip(lesion.center, spacing, shape)
        )
        box_shape = tuple(b.stop - b.start for b in box)
        z, y, x = _grid_mm(shape, spacing, lesion.center, box)
        r = np.sqrt(z**2 + y**2 + x**2)
        extent_mm = np.asarray(box_shape) * np.asarray(spacing)
        lobes = smooth_noise(rng, box_shape, extent_mm / max(lesion.radius * 0.9, 2 * min_sp))
        radius = lesion.radius * np.clip(1 + lesion.lobulation * lobes, 0.45, 2.0)
        soft = 0.6 * min_sp
        mass = sigmoid((radius - r) / soft)
        if lesion.rim > 0:
            rim_noise = smooth_noise(rng, box_shape, extent_mm / max(lesion.radius * 0.6, 2 * min_sp))
            rim = lesion.rim * np.clip(1 + 0.45 * rim_noise, 0.35, 2.2)
            if lesion.rim_gaps > 0:
                gaps = smooth_noise(rng, box_shape, extent_mm / max(lesion.radius * 0.5, 2 * min_sp))
                rim = np.where(gaps < np.quantile(gaps, lesion.rim_gaps), 0.0, rim)
            et_box = mass * sigmoid((r - (radius - rim)) / soft) * (rim > 0)
        else:
            et_box = np.zeros_like(mass)
        ncr_box = mass - et_box
        reach_noise = smooth_noise(rng, box_shape, extent_mm / max(lesion.edema_reach, 3 * min_sp))
        reach_local = lesion.edema_reach * (0.2 + 1.2 * wm_smooth[box]) * np.clip(1 + 0.4 * reach_noise, 0.3, 2.0)
        edema_box = sigmoid((reach_local - np.maximum(r - radius, 0)) / (3.0 * min_sp)) * (1 - mass)
        if lesion.rim > 0:
            ncr[box] = np.maximum(ncr[box], ncr_box)
        else:
            net[box] = np.maximum(net[box], ncr_box)
        et[box] = np.maximum(et[box], et_box)
        edema[box] = np.maximum(edema[box], edema_box)
    total = ncr + net + et
    over = total > 1
    if over.any():
        for part in (ncr, net, et):
            part[over] /= total[over]
    edema = np.minimum(edema, 1 - np.minimum(ncr + net + et, 1))
    return TumourFractions(ncr, net, et, edema)
