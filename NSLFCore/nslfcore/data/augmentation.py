"""Training augmentation levels (MONAI dictionary transforms), applied to a training crop after it is cut.

Arrays are ``(C, z, y, x)``: ``image`` the four normalised modalities (``[0, 1]`` with the default
``robust`` and the ``paper`` normalisation), ``label`` one channel of internal labels (0-3);
spatial transforms move both together, labels by nearest neighbour (no new label values).

Levels (:data:`AUGMENTATION_LEVELS`):

``none``
    The crop as cut.
``light``
    What training always used before the levels existed (the default, unchanged): flips along each
    axis (p 0.5 each); a small affine (p 0.2: rotation +-10 deg, scale +-10 %); intensity scale
    (+-10 %, p 0.5) and shift (+-0.05, p 0.5) per modality; one gamma 0.7-1.5 for all modalities
    (p 0.3); Gaussian noise (sd 0.02, p 0.2).
``strong``
    The recipe of the shipped model from v3 (issue 15: robust to scanners and generators it was not
    tuned on): flips (p 0.5 per axis); affine (p 0.35: rotation +-15 deg, scale +-15 %); a
    simulated lower resolution (p 0.15, zoom 0.5-1, all modalities together, as an acquisition);
    then **per modality, each with its own draw**: bias field (p 0.3, degree 3, coefficients up
    to 0.3), gamma 0.65-1.6 (p 0.35), intensity scale +-15 % (p 0.5) and shift +-0.08 (p 0.5),
    Gaussian blur sigma 0.4-1.0 voxel (p 0.2), Gaussian noise sd up to 0.04 (p 0.25).
``strong-bright``
    ``strong``, then structures brighter than the tumour per modality
    (:class:`~nslfcore.data.bright_structures.RandBrightStructuresd`, p 0.25 each: the channel
    compressed by 0.35-0.9 as a brighter maximum does under min-max normalisation, and 1-6
    random-walk tubes at 1 in healthy brain): the recipe proposed for the next default, because
    v3 (``strong``) loses Dice when real-scan-like vessels brighten T1ce.

Cost on this project's 2-core CPU, one thread, one 4 x 64 x 160 x 160 crop (what a data-loading
worker does; ``benchmarks/cpu_training_speed.py --augmentation`` times it with
:func:`training_augmentation`): ``strong`` about 0.3 s on average over seeds (mean 343 ms, median
314 ms over 25 seeds; 0.9 s when every transform fires, two thirds of it the per-modality blur and
noise), ``light`` about 0.2 s. An elastic deformation (``Rand3DElasticd``, sigma 9-13, magnitude
up to 300) alone took 2.4 s, eight times the whole ``strong`` level, so no level uses it.

Every random draw comes from the transforms' own generators, which the dataset seeds per item
(:class:`~nslfcore.data.dataset.BratsCropDataset`), so an augmented crop is a pure function of the
seed, epoch and index, and resumed training sees the same crops.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAdjustContrastd,
    RandAffined,
    RandBiasField,
    RandFlipd,
    RandGaussianNoise,
    RandGaussianNoised,
    RandGaussianSmooth,
    Randomizable,
    RandScaleIntensity,
    RandScaleIntensityd,
    RandShiftIntensity,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)
from monai.transforms.transform import MapTransform

from nslfcore.data.bright_structures import RandBrightStructuresd

AugmentationLevel = Literal["none", "light", "strong", "strong-bright"]
AUGMENTATION_LEVELS: tuple[str, ...] = ("none", "light", "strong", "strong-bright")


class RandPerModalityd(Randomizable, MapTransform):
    """Apply array transforms to every channel of ``keys`` separately, each channel with its own random draws.

    MONAI's intensity transforms draw one set of parameters per call for all channels (a gamma, a
    bias field); MR modalities come from separate acquisitions, so here each ``(1, z, y, x)``
    channel is one call. The inner transforms share this transform's seed (:meth:`set_random_state`).
    """

    def __init__(self, keys: Sequence[Hashable], transforms: Sequence[Randomizable]) -> None:
        MapTransform.__init__(self, keys)
        self.transforms = list(transforms)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandPerModalityd:
        super().set_random_state(seed, state)
        for index, transform in enumerate(self.transforms):
            transform.set_random_state(seed=int(self.R.randint(2**31)) + index)
        return self

    def randomize(self, data: Any = None) -> None:  # the inner transforms draw their own parameters
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            channels = []
            for c in range(image.shape[0]):
                channel = image[c : c + 1]
                for transform in self.transforms:
                    channel = transform(channel)  # type: ignore[operator]
                channels.append(channel)
            stacked = np.concatenate([np.asarray(ch) for ch in channels], axis=0)
            d[key] = stacked.astype(np.asarray(image).dtype, copy=False)
        return d


class RandDropSequenced(Randomizable, MapTransform):
    """Sequence dropout: with probability ``prob`` one channel of ``key``, drawn at random, becomes all zeros.

    A zero channel is how a missing sequence reaches the network (the normalisation maps a
    constant channel to zeros, and the fusion gives it no weight), so a model trained with this
    works on any three of the four sequences. Applied last, after clipping.
    """

    def __init__(self, key: str = "image", prob: float = 0.0) -> None:
        MapTransform.__init__(self, [key])
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"sequence dropout {prob} must lie in [0, 1].")
        self.key, self.prob = key, float(prob)

    def randomize(self, data: Any = None) -> None:  # one draw per call in __call__
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.R.rand() < self.prob:
            image = np.array(d[self.key], copy=True)
            image[self.R.randint(image.shape[0])] = 0
            d[self.key] = image
        return d


def augmentation_transforms(level: str, keys: Sequence[str] = ("image", "label")) -> list[Any]:
    """The MONAI transforms of augmentation ``level`` (:data:`AUGMENTATION_LEVELS`), in order."""
    if level not in AUGMENTATION_LEVELS:
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATION_LEVELS)}; got {level!r}.")
    keys = list(keys)
    if level == "none":
        return []
    flips = [RandFlipd(keys, prob=0.5, spatial_axis=axis, allow_missing_keys=True) for axis in range(3)]
    if level == "light":
        return [
            *flips,
            RandAffined(
                keys, prob=0.2, rotate_range=(np.pi / 18,) * 3, scale_range=(0.1,) * 3,
                mode=("bilinear", "nearest"), padding_mode="zeros", allow_missing_keys=True,
            ),  # fmt: skip
            RandScaleIntensityd("image", factors=0.1, prob=0.5, channel_wise=True),
            RandShiftIntensityd("image", offsets=0.05, prob=0.5, channel_wise=True),
            RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3, retain_stats=True),
            RandGaussianNoised("image", prob=0.2, std=0.02),
        ]
    bright = [RandBrightStructuresd("image", "label")] if level == "strong-bright" else []
    return [
        *flips,
        RandAffined(
            keys, prob=0.35, rotate_range=(np.pi / 12,) * 3, scale_range=(0.15,) * 3,
            mode=("bilinear", "nearest"), padding_mode="zeros", allow_missing_keys=True,
        ),  # fmt: skip
        RandSimulateLowResolutiond("image", prob=0.15, zoom_range=(0.5, 1.0)),
        RandPerModalityd(
            ["image"],
            [
                RandBiasField(prob=0.3, degree=3, coeff_range=(0.0, 0.3)),
                RandAdjustContrast(prob=0.35, gamma=(0.65, 1.6), retain_stats=True),
                RandScaleIntensity(factors=0.15, prob=0.5),
                RandShiftIntensity(offsets=0.08, prob=0.5),
                RandGaussianSmooth(prob=0.2, sigma_x=(0.4, 1.0), sigma_y=(0.4, 1.0), sigma_z=(0.4, 1.0)),
                RandGaussianNoise(prob=0.25, std=0.04),
            ],
        ),
        *bright,
    ]


def training_augmentation(level: str) -> Compose:
    """Augmentation ``level`` alone, as one :class:`~monai.transforms.Compose` over ``{"image", "label"}`` crops.

    Training applies the same transforms inside :func:`~nslfcore.data.transforms.train_transforms`,
    after the crop; this is for applying (or timing) them on a crop cut elsewhere.
    """
    return Compose(augmentation_transforms(level))
