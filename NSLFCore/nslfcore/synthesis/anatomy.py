"""Normal anatomy and the structures that look like tumour, as a synthesis label map.

From the MNI152 tissue fractions on the output grid (:mod:`nslfcore.data.phantom_anatomy`, after
the random affine, elastic and mass-effect deformations) this module draws:

* CSF, ventricles (CSF deeper than about 12 mm below the brain surface, near the midline), cortical
  and deep grey matter (GM deeper than about 22 mm near the midline: basal ganglia, thalami), white matter;
* the choroid plexus: blobs in the posterior part of each lateral ventricle (the atria);
* vessels: random-walk tubes, 1-3 mm wide, along the cortical surface and near the midline;
* dural sinuses: a strip just outside the brain along the superior midline (superior sagittal
  sinus) and the posterior edge (transverse sinuses), where brain extraction often leaves them;
* white-matter hyperintensities: periventricular caps and bands, and deep punctate lesions;
* skull-stripping residue: patchy shells 1-3 mm thick outside the brain.

Which of the optional structures a case gets, and their extent, is random per case.

Arrays are ``(z, y, x)`` on a 1 mm grid (distances in mm = voxels); ``x`` is the left-right axis.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from nslfcore.data.phantom_fields import smooth_noise
from nslfcore.synthesis import labels as L


def _sphere(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    z, y, x = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return (z * z + y * y + x * x) <= radius * radius


def tissue_labels(fractions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """CSF, ventricles, cortical/deep GM and WM from tissue fractions; returns ``(labels, depth_mm)``.

    ``fractions``: ``csf``, ``gm``, ``wm``, ``brain`` in [0, 1], ``(z, y, x)``; ``depth_mm``: distance
    of each brain voxel to the brain surface.
    """
    brain = fractions["brain"] >= 0.5
    depth = ndimage.distance_transform_edt(brain).astype(np.float32)
    stack = np.stack([fractions["csf"], fractions["gm"], fractions["wm"]])
    tissue = np.argmax(stack, axis=0)
    labels = np.zeros(brain.shape, np.uint8)
    labels[brain & (tissue == 0)] = L.CSF
    labels[brain & (tissue == 1)] = L.CORTICAL_GM
    labels[brain & (tissue == 2)] = L.WM
    centre_x = np.flatnonzero(brain.any(axis=(0, 1))).mean()
    x = np.arange(brain.shape[2])[None, None, :]
    deep_csf = (labels == L.CSF) & (depth > 12) & (np.abs(x - centre_x) < 32)
    components, count = ndimage.label(deep_csf)
    if count:
        sizes = ndimage.sum_labels(deep_csf, components, index=np.arange(1, count + 1))
        keep = np.flatnonzero(sizes >= max(200.0, 0.05 * sizes.max())) + 1
        labels[np.isin(components, keep)] = L.VENTRICLE
    labels[(labels == L.CORTICAL_GM) & (depth > 22) & (np.abs(x - centre_x) < 35)] = L.DEEP_GM
    return labels, depth


def add_choroid_plexus(rng: np.random.Generator, labels: np.ndarray) -> None:
    """Blobs of 3-6 mm in the posterior third of each lateral ventricle (in place)."""
    ventricle = labels == L.VENTRICLE
    if ventricle.sum() < 100:
        return
    zz, yy, xx = np.nonzero(ventricle)
    centre_x = xx.mean()
    # LPS: y grows towards posterior, so the atria are at the largest y of the ventricles.
    back = np.quantile(yy, 0.66)
    for side in (xx < centre_x, xx >= centre_x):
        pick = np.flatnonzero(side & (yy >= back))
        if not len(pick) or rng.random() < 0.15:
            continue
        for _ in range(int(rng.integers(1, 3))):
            i = pick[rng.integers(len(pick))]
            _paint(labels, (zz[i], yy[i]), xx[i], rng.uniform(3.0, 6.0), L.CHOROID_PLEXUS, ventricle)


def _paint(labels: np.ndarray, zy: tuple[int, int], x: int, radius: float, value: int, where: np.ndarray) -> None:
    ball = _sphere(radius)
    r = ball.shape[0] // 2
    centre = (int(zy[0]), int(zy[1]), int(x))
    box = tuple(slice(max(0, c - r), min(n, c + r + 1)) for c, n in zip(centre, labels.shape))
    sub = tuple(slice(b.start - (c - r), b.stop - (c - r)) for b, c in zip(box, centre))
    mask = ball[sub] & where[box]
    labels[box][mask] = value


def _walk(rng: np.random.Generator, start: np.ndarray, steps: int, shape: tuple[int, ...], direction: np.ndarray) -> np.ndarray:
    """Points of a smooth random walk (1 mm steps) from ``start``; ``direction`` is the initial heading."""
    points = np.empty((steps, 3))
    point, heading = start.astype(float), direction / np.linalg.norm(direction)
    for k in range(steps):
        heading = heading + 0.35 * rng.standard_normal(3)
        heading /= np.linalg.norm(heading)
        point = np.clip(point + heading, 0, np.asarray(shape) - 1)
        points[k] = point
    return points


def add_vessels(rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray, count: int) -> None:
    """``count`` tubes of 1-3 mm outside the tumour: cortical vessels along the surface, deep ones near the midline (in place)."""
    if count <= 0:
        return
    brain = labels > 0
    shape = labels.shape
    surface = np.flatnonzero((brain & (depth < 6) & (depth > 1)).ravel())
    centre_x = np.flatnonzero(brain.any(axis=(0, 1))).mean()
    ventricle = np.argwhere(labels == L.VENTRICLE)
    tubes = np.zeros(shape, bool)
    for k in range(count):
        deep = k % 4 == 3 and len(ventricle)
        if deep:  # internal cerebral veins / pericallosal arteries: near the midline above the ventricles
            base = ventricle[rng.integers(len(ventricle))].astype(float)
            start = np.array([base[0] + rng.uniform(2, 10), base[1], centre_x + rng.uniform(-3, 3)])
            heading = np.array([0.0, rng.choice([-1.0, 1.0]), 0.0])
        elif len(surface):
            start = np.array(np.unravel_index(surface[rng.integers(len(surface))], shape), float)
            heading = rng.standard_normal(3)
        else:
            return
        points = _walk(rng, start, int(rng.integers(15, 60)), shape, heading)
        radius = rng.uniform(0.5, 1.5)
        index = np.round(points).astype(int)
        tubes[tuple(index.T)] = True
        if radius > 0.8:
            for axis in range(3):
                shifted = np.clip(index + np.eye(3, dtype=int)[axis], 0, np.asarray(shape) - 1)
                tubes[tuple(shifted.T)] = True
    tubes &= brain & ~np.isin(labels, [L.VENTRICLE, *L.TARGET_CLASS])  # never through the tumour
    labels[tubes] = L.VESSEL


def add_white_matter_hyperintensities(rng: np.random.Generator, labels: np.ndarray, burden: float) -> None:
    """Periventricular caps and bands and deep punctate lesions in white matter; ``burden`` in [0, 1] (in place)."""
    if burden <= 0:
        return
    wm = labels == L.WM
    ventricle = labels == L.VENTRICLE
    if ventricle.any():
        distance = ndimage.distance_transform_edt(~ventricle).astype(np.float32)
        reach = 2.0 + 6.0 * burden
        patchy = smooth_noise(rng, labels.shape, np.asarray(labels.shape) / 12.0)
        cap = wm & (distance < reach * (1.0 + 0.5 * patchy)) & (patchy > 0.8 - 1.6 * burden)
        labels[cap] = L.WMH
    candidates = np.argwhere(wm)
    if len(candidates):
        for _ in range(int(rng.integers(0, 4 + int(30 * burden)))):
            z, y, x = candidates[rng.integers(len(candidates))]
            _paint(labels, (z, y), x, rng.uniform(1.0, 2.5 + 4.0 * burden), L.WMH, wm)


def add_extracerebral(rng: np.random.Generator, labels: np.ndarray, sinus: bool, residue: float) -> None:
    """Dural sinuses (``sinus``) and skull-stripping residue outside the brain (in place).

    ``residue`` in [0, 1] is the share of a 1-3 mm shell around the brain that the residue covers.
    """
    brain = labels > 0
    if not brain.any():
        return
    outside = ndimage.binary_dilation(brain, _sphere(3.0)) & ~brain
    if sinus:
        zz, yy, xx = np.nonzero(brain)
        centre_x = xx.mean()
        z = np.arange(labels.shape[0])[:, None, None]
        y = np.arange(labels.shape[1])[None, :, None]
        x = np.arange(labels.shape[2])[None, None, :]
        superior = (np.abs(x - centre_x) < rng.uniform(2.5, 5.0)) & (z > np.quantile(zz, 0.55))
        posterior = (y > np.quantile(yy, 0.93)) & (z < np.quantile(zz, 0.45)) & (z > np.quantile(zz, 0.2))
        labels[outside & (superior | posterior)] = L.SINUS
    if residue > 0:
        shell = ndimage.binary_dilation(brain, _sphere(rng.uniform(1.0, 3.0))) & ~brain & (labels == 0)
        patchy = smooth_noise(rng, labels.shape, np.asarray(labels.shape) / 20.0)
        labels[shell & (patchy > np.quantile(patchy, 1.0 - residue))] = L.RESIDUE
