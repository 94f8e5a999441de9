"""Normal-brain anatomy for the phantom: CSF / GM / WM fractions on the output grid.

* :func:`ellipsoid_anatomy` (tiny mode, numpy + torch only): a procedural brain -- a perturbed
  ellipsoid with a folded cortical ribbon, sulcal and outer CSF, two lateral ventricles and two
  deep grey-matter nuclei.
* :func:`template_anatomy` (realistic mode, needs scipy): the MNI ICBM152 2009 nonlinear
  symmetric template (three files shipped in ``nslfcore/data/mni152``, see its ``NOTICE.md``;
  the copies nilearn's wheel carries are byte-for-byte the same): its grey- and white-matter
  probability maps (1 mm, 197 x 233 x 189), CSF = brain - GM - WM, brain = template T1 > 0,
  placed in the BraTS grid with a random affine (rotation, scale) and a smooth elastic
  deformation, and optionally a further displacement (tumour mass effect).

Fractions are float32 ``(z, y, x)`` in [0, 1] with ``csf + gm + wm == brain``. Physical
coordinates are LPS mm; voxel coordinates ``(k, j, i)`` = ``(z, y, x)``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore.data.case import Geometry
from nslfcore.data.phantom_fields import gaussian_blur, sample, sigmoid, smooth_noise
from nslfcore.data.templates import PACKAGED_TEMPLATE_DIR, TEMPLATE_DIR_ENV, TEMPLATE_FILES  # noqa: F401  (re-exported)


def _fractions(brain: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> dict[str, np.ndarray]:
    brain = np.clip(brain, 0, 1).astype(np.float32)
    gm = np.clip(gm, 0, 1)
    wm = np.clip(wm, 0, 1)
    tissue = gm + wm
    over = tissue > 1
    gm = np.where(over, gm / np.maximum(tissue, 1e-6), gm)
    wm = np.where(over, wm / np.maximum(tissue, 1e-6), wm)
    csf = np.clip(1 - gm - wm, 0, 1)
    return {"csf": (csf * brain).astype(np.float32), "gm": (gm * brain).astype(np.float32),
            "wm": (wm * brain).astype(np.float32), "brain": brain}  # fmt: skip


def ellipsoid_anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A procedural brain filling about 85 % of ``shape`` (z, y, x), 1 mm voxels assumed."""
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    semi = np.array([0.40, 0.44, 0.38]) * np.asarray(shape) * (1 + 0.04 * rng.standard_normal(3))
    center = (np.asarray(shape) - 1) / 2 + rng.normal(0, 0.5, 3)
    u = [(g - c) / s for g, c, s in zip(grids, center, semi)]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2) * (1 + 0.04 * smooth_noise(rng, shape, 3))
    size = float(semi.mean())
    depth = (1 - rho) * size  # ~mm below the brain surface
    brain = sigmoid(depth / 0.5)
    folds = smooth_noise(rng, shape, np.asarray(shape) / 7.0)
    cortex = max(2.5, 0.16 * size)
    wm = sigmoid((depth - cortex * (1 + 0.6 * folds)) / 0.6)
    sulci = sigmoid((smooth_noise(rng, shape, np.asarray(shape) / 5.0) - 1.1) / 0.25) * (depth < 2 * cortex)
    csf = np.maximum(sigmoid((1.0 - depth) / 0.5), sulci)
    for side in (-1, 1):  # lateral ventricles and deep grey nuclei
        v = [(g - c - o * s) / (f * s) for g, c, s, o, f in
             zip(grids, center, semi, (0.1, 0.0, side * 0.12), (0.16, 0.38, 0.07))]  # fmt: skip
        csf = np.maximum(csf, sigmoid((1 - np.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)) * 4))
        n = [(g - c - o * s) / (0.14 * s) for g, c, s, o in zip(grids, center, semi, (-0.05, 0.05, side * 0.3))]
        nucleus = sigmoid((1 - np.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2)) * 4)
        wm = wm * (1 - nucleus)
    csf = np.clip(csf, 0, 1)
    gm = (1 - csf) * (1 - wm)
    return _fractions(brain, gm, (1 - csf) * wm)


def _template_dir() -> Path:
    """``$NSLF_MNI_TEMPLATE_DIR`` when set, else the copy shipped in ``nslfcore/data/mni152``."""
    override = os.environ.get(TEMPLATE_DIR_ENV)
    return Path(override) if override else PACKAGED_TEMPLATE_DIR


@functools.lru_cache(maxsize=1)
def load_template() -> tuple[np.ndarray, Geometry]:
    """The MNI ICBM152 2009c maps stacked ``(3, z, y, x)`` float32 as (GM, WM, brain) in [0, 1], and their grid (LPS)."""
    folder = _template_dir()
    arrays, geometry = [], None
    for key in ("gm", "wm", "t1"):
        path = folder / TEMPLATE_FILES[key]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; reinstall nslfcore (or fix ${TEMPLATE_DIR_ENV}).")
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        arrays.append((array > 0).astype(np.float32) if key == "t1" else array / 255.0)
        geometry = Geometry.from_image(image)
    assert geometry is not None
    return np.stack(arrays), geometry


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def template_coords(rng: np.random.Generator, geometry: Geometry) -> np.ndarray:
    """For each voxel of ``geometry`` the template voxel coordinates ``(3, z, y, x)`` (k, j, i) it shows.

    The template brain's top is placed 5 mm below the grid's top slice and centred in x and y;
    random rotation (+-4 deg per axis), scale (0.93 x (1 +- 6 %) per axis), shift (+-3 mm) and a
    smooth elastic displacement (about 2.5 mm RMS, ~35 mm wavelength) make each brain different.
    """
    stack, tgeom = load_template()
    brain = stack[2] > 0
    zyx = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo = np.array([zyx[2][0], zyx[1][0], zyx[0][0]], float)
    hi = np.array([zyx[2][-1], zyx[1][-1], zyx[0][-1]], float)
    t_ijk_to_lps = tgeom.ijk_to_lps()
    corners = np.array([[i, j, k, 1.0] for i in (lo[0], hi[0]) for j in (lo[1], hi[1]) for k in (lo[2], hi[2])])
    lps = (t_ijk_to_lps @ corners.T).T[:, :3]
    anchor_template = np.array([lps[:, 0].mean(), lps[:, 1].mean(), lps[:, 2].max()])
    m = geometry.ijk_to_lps()
    top = m @ np.array([(geometry.size[0] - 1) / 2, (geometry.size[1] - 1) / 2, geometry.size[2] - 1, 1.0])
    anchor_out = top[:3] - np.array([0, 0, 5.0])
    scale = 0.93 * (1 + rng.uniform(-0.06, 0.06, 3))
    forward = _rotation(np.deg2rad(rng.uniform(-4, 4, 3))) @ np.diag(scale)  # template mm -> output mm
    inverse = np.linalg.inv(forward)
    shift = rng.uniform(-3, 3, 3)
    # output voxel -> template LPS -> template voxel, as one affine map
    out_to_tmpl = np.eye(4)
    out_to_tmpl[:3, :3] = inverse
    out_to_tmpl[:3, 3] = anchor_template - inverse @ (anchor_out + shift)
    affine = np.linalg.inv(t_ijk_to_lps) @ out_to_tmpl @ m  # (i, j, k, 1) -> (i_t, j_t, k_t, 1)
    shape = geometry.shape
    ijk = [np.arange(n, dtype=np.float32) for n in (shape[2], shape[1], shape[0])]
    coords = np.empty((3, *shape), np.float32)
    for row, axis in ((0, 2), (1, 1), (2, 0)):  # template i -> coords[2], j -> [1], k -> [0]
        a = affine[row].astype(np.float32)
        coords[axis] = (a[0] * ijk[0][None, None, :] + a[1] * ijk[1][None, :, None] + a[2] * ijk[2][:, None, None] + a[3])
    extent = np.asarray(shape) * np.abs(np.asarray(geometry.spacing)[::-1])
    for axis in range(3):
        coords[axis] += 2.5 * smooth_noise(rng, shape, extent / 35.0) / float(tgeom.spacing[2 - axis])
    return coords


def template_anatomy(template_voxels: np.ndarray) -> dict[str, np.ndarray]:
    """Tissue fractions ``(z, y, x)`` sampling the template at ``template_voxels`` ``(3, z, y, x)`` (k, j, i)."""
    stack, _ = load_template()
    gm, wm, brain = sample(stack, template_voxels)
    brain = gaussian_blur(brain, 0.5)
    return _fractions(brain, gm, wm)
