"""Torch dataset of training and validation crops.

Each item is ``{"image": float32 tensor (4, z, y, x) in nslfcore.MODALITIES order,
"label": int64 tensor (z, y, x) (internal classes 0-3, see nslfcore.data.labels), "name": str}``.
Crops are ``(z, y, x)`` voxels of the brain-cropped, normalised volume (see
:mod:`nslfcore.data.transforms`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nslfcore.data.cache import CaseCache
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.transforms import FUSION_CROP, train_transforms, valid_transforms


def _item_seed(*parts: int) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class BratsCropDataset(Dataset):
    """Crops of BraTS-like cases for training (random, augmented) or validation (centre, deterministic).

    Args:
        cases: :class:`~nslfcore.data.case.CaseFiles` found by :func:`nslfcore.data.brats.find_cases`
            (read, checked and preprocessed on first use) or in-memory :class:`~nslfcore.data.case.Case` objects.
        crop_size: crop ``(z, y, x)``: ``(64, 80, 80)`` for stages 1-2, ``(64, 160, 160)`` for stage 3.
            Volumes smaller than the crop are zero-padded (symmetrically).
        train: random tumour-biased crops with augmentation (``True``) or centre crops (``False``).
        tumour_fraction: share of training crops centred on a tumour voxel (the rest on other brain voxels).
        augment: augmentation level of :func:`~nslfcore.data.transforms.train_transforms`
            (``"none"``, ``"light"``, ``"strong"``; ``True`` is ``"light"``).
        et_fraction: share of training crops centred on an enhancing-tumour voxel.
        sequence_dropout: probability that a training crop loses one modality (all zeros).
        samples_per_case: items per case per epoch.
        cache: the :class:`~nslfcore.data.cache.CaseCache` (default: in memory, ``"robust"`` normalisation).
        seed: base seed; item ``i`` of epoch seed ``e`` (see :meth:`set_epoch`) is a pure function of
            ``(seed, e, i)``, also with DataLoader worker processes.

    Call :meth:`preload` before building a DataLoader with workers so that the (forked) workers
    share the cached cases instead of each reading them again.
    """

    def __init__(
        self,
        cases: Sequence[CaseFiles | Case],
        crop_size: Sequence[int] = FUSION_CROP,
        train: bool = True,
        tumour_fraction: float = 0.5,
        augment: bool | str = True,
        samples_per_case: int = 1,
        cache: CaseCache | None = None,
        seed: int = 0,
        et_fraction: float = 0.0,
        sequence_dropout: float = 0.0,
    ) -> None:
        if not cases:
            raise ValueError("BratsCropDataset got no cases; check the data folder and the split lists.")
        self.cases = list(cases)
        self.crop_size = tuple(int(s) for s in crop_size)
        self.train = train
        self.samples_per_case = int(samples_per_case)
        self.cache = cache if cache is not None else CaseCache()
        self.seed = int(seed)
        self.epoch_seed = 0
        clip = self.cache.normalization in ("paper", "robust")  # [0, 1] intensities
        self.transform = (
            train_transforms(self.crop_size, tumour_fraction, augment, clip_to_unit=clip, et_fraction=et_fraction,
                             sequence_dropout=sequence_dropout)
            if train
            else valid_transforms(self.crop_size)
        )

    def __len__(self) -> int:
        return len(self.cases) * self.samples_per_case

    @property
    def names(self) -> list[str]:
        """Case names in dataset order."""
        return [c.name for c in self.cases]

    def set_epoch(self, epoch_seed: int) -> None:
        """Re-seed the random crops and augmentations (e.g. with the epoch number)."""
        self.epoch_seed = int(epoch_seed)

    def preload(self) -> None:
        """Preprocess (and cache) every case now."""
        for case in self.cases:
            self.cache.get(case)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cache.get(self.cases[index // self.samples_per_case])
        data: dict[str, Any] = {"image": np.asarray(case.image, dtype=np.float32)}
        if case.label is not None:
            data["label"] = np.asarray(case.label)[None].astype(np.float32)
        if self.train:
            self.transform.set_random_state(seed=_item_seed(self.seed, self.epoch_seed, index))
        out = self.transform(data)
        image = torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32).contiguous()
        if "label" in out:
            label = torch.as_tensor(np.asarray(out["label"])[0]).round().to(torch.int64).contiguous()
        else:
            label = torch.zeros(image.shape[1:], dtype=torch.int64)
        return {"image": image, "label": label, "name": case.name}
