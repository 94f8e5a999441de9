"""Training augmentation for structures brighter than the tumour (vessels, dura, choroid plexus).

The default normalisation is the paper's min-max (``robust`` only ignores isolated extremes), so on
a scan whose brightest structure is not the tumour -- on T1ce usually enhancing vessels and dura,
thousands of voxels -- every intensity of that modality is divided by a larger maximum. After
normalisation this is, to the voxel, a multiplication of the channel by ``old max / new max`` plus
the bright structure itself at 1. The phantoms have no such structures, and the v3 model lost
ET Dice 0.92 -> 0.71 and WT 0.91 -> 0.66 when they were added to T1ce at 2x the enhancement
(``benchmarks/enhancement_contrast.py``). :class:`RandBrightStructuresd` simulates exactly that
on normalised training crops, per modality, so that a model learns to read a compressed channel.

Arrays are ``(C, z, y, x)``, intensities in [0, 1] (``robust``/``paper`` normalisation).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.transforms import Randomizable
from monai.transforms.transform import MapTransform


class RandBrightStructuresd(Randomizable, MapTransform):
    """Per channel, with probability ``prob``: scale it by ``compression`` and paint bright tubes at 1.

    Args:
        image_key: the ``(C, z, y, x)`` normalised image.
        label_key: the ``(1, z, y, x)`` labels; tubes only go where it is 0 (and inside the brain:
            any channel > 0), so no tumour voxel changes class meaning. Optional.
        prob: probability per channel.
        compression: range of the factor applied to the channel (``old max / new max``).
        tubes: range of the number of tubes per affected channel.
        length: steps of each tube's random walk (1 voxel per step along a random axis).
        radius: half-width of the tube's square cross-section, voxels (1: 3 x 3 x 3 per step).
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        prob: float = 0.25,
        compression: tuple[float, float] = (0.35, 0.9),
        tubes: tuple[int, int] = (1, 6),
        length: int = 40,
        radius: int = 1,
    ) -> None:
        MapTransform.__init__(self, [image_key], allow_missing_keys=False)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob {prob} must lie in [0, 1].")
        if not 0.0 < compression[0] <= compression[1] <= 1.0:
            raise ValueError(f"compression {compression} must be a range within (0, 1].")
        self.image_key, self.label_key = image_key, label_key
        self.prob, self.compression, self.tubes = float(prob), compression, tubes
        self.length, self.radius = int(length), int(radius)

    def randomize(self, data: Any = None) -> None:  # draws happen per channel in __call__
        return None

    def _tube_mask(self, allowed: np.ndarray) -> np.ndarray:
        """Random-walk tubes starting at allowed voxels, kept only where ``allowed``."""
        mask = np.zeros(allowed.shape, dtype=bool)
        starts = np.flatnonzero(allowed)
        if not len(starts):
            return mask
        shape = np.array(allowed.shape)
        r = self.radius
        steps = np.eye(3, dtype=np.int64)
        for _ in range(int(self.R.randint(self.tubes[0], self.tubes[1] + 1))):
            point = np.array(np.unravel_index(starts[self.R.randint(len(starts))], allowed.shape))
            for _ in range(self.length):
                point = np.clip(point + steps[self.R.randint(3)] * (1 if self.R.rand() < 0.5 else -1), 0, shape - 1)
                low, high = np.maximum(point - r, 0), point + r + 1
                mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = True
        return mask & allowed

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = np.array(d[self.image_key], dtype=np.float32, copy=True)
        label = np.asarray(d[self.label_key])[0] if self.label_key in d else None
        allowed = np.any(image > 0, axis=0)
        if label is not None:
            allowed &= label == 0
        for c in range(image.shape[0]):
            if self.R.rand() >= self.prob:
                continue
            image[c] *= np.float32(self.R.uniform(*self.compression))
            image[c][self._tube_mask(allowed)] = 1.0
        d[self.image_key] = image
        return d
