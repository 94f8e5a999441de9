"""On-the-fly training crops: a fresh synthesised case per item, from a label-map bank, on the training device.

:class:`SynthesisCropDataset` is the synthesis counterpart of
:class:`~nslfcore.data.dataset.BratsCropDataset` (same items, same trainer). Item ``index`` of
epoch seed ``e`` (:meth:`~SynthesisCropDataset.set_epoch`):

1. takes label map ``index % len(positions)`` of the bank (:mod:`~nslfcore.synthesis.bank`),
   padded by ``warp_margin`` voxels so that the warp does not cut the head at the box's faces;
2. synthesises a case from it with ``torch_generator(seed, e, index)`` and ``warp=True``
   (:func:`~nslfcore.synthesis.generator.synthesise_images`: a random warp, contrast and
   acquisition) on ``device``;
3. preprocesses it exactly as inference preprocesses a real exam (:mod:`~nslfcore.synthesis.preprocess`:
   brain = any sequence > 0, the brain box, ``"robust"`` normalisation), target classes 0-3 of the
   warped map (:func:`~nslfcore.synthesis.labels.target_classes`);
4. draws a crop of ``crop_size`` the way :class:`~nslfcore.data.transforms.RandTumourCropd` does
   (zero-padded symmetrically when the brain box is smaller; centred on an enhancing-tumour voxel
   with probability ``et_fraction``, on any tumour voxel with probability ``tumour_fraction``,
   otherwise on a brain voxel outside the tumour), flips it along each axis with probability 0.5,
   clips it to [0, 1] and, with probability ``sequence_dropout``, zeroes one sequence.

No further intensity or spatial augmentation: the synthesis randomises contrast, resolution,
artefacts and shape already. Every random draw after the label map comes from the one CPU
generator of the item, so an item is a pure function of ``(seed, e, index)`` on a given device
and torch version (the warp is computed on ``device``, so CPU and CUDA items may differ).

Items are ``{"image": float32 (4, z, y, x) in nslfcore.MODALITIES order, "label": int64 (z, y, x)
(internal classes 0-3), "name": "labels-XXXXX"}``, always CPU tensors: a DataLoader pins and
collates CPU tensors, and a crop is small to move back. With ``device="cuda"`` use no DataLoader
workers (CUDA does not run in forked workers); with workers, generate on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from nslfcore.data.labels import ET
from nslfcore.data.transforms import FUSION_CROP
from nslfcore.synthesis.bank import LabelBank
from nslfcore.synthesis.generator import synthesise_images, torch_generator
from nslfcore.synthesis.labels import TARGET_CLASS
from nslfcore.synthesis.preprocess import preprocess

#: Voxels of background added around a bank's box before the random warp.
WARP_MARGIN = 16


def target_lookup(device: torch.device | str) -> torch.Tensor:
    """Synthesis label -> internal class: a 256-entry int64 table on ``device`` (as
    :func:`~nslfcore.synthesis.labels.target_classes`)."""
    table = torch.zeros(256, dtype=torch.int64)
    for label, cls in TARGET_CLASS.items():
        table[label] = cls
    return table.to(device)


def _pick(candidates: torch.Tensor, generator: torch.Generator) -> tuple[int, int, int]:
    """One row of ``candidates`` ``(n, 3)``, drawn uniformly."""
    row = int(torch.randint(0, candidates.shape[0], (), generator=generator))
    return tuple(int(v) for v in candidates[row])  # type: ignore[return-value]


def crop_centre(image: torch.Tensor, label: torch.Tensor, crop_size: Sequence[int], tumour_fraction: float,
                et_fraction: float, generator: torch.Generator) -> tuple[tuple[int, int, int], bool]:  # fmt: skip
    """The centre ``(z, y, x)`` of a tumour-biased crop and whether it is tumour-centred (as ``RandTumourCropd``).

    ``image`` ``(4, z, y, x)`` and ``label`` ``(z, y, x)`` are already padded to at least ``crop_size``;
    the centre is shifted inwards so that the crop lies inside.
    """
    draw = float(torch.rand((), generator=generator))
    tumour = label.new_zeros((0, 3))
    if draw < et_fraction:
        tumour = torch.nonzero(label == ET)  # empty without ET: any tumour voxel below
    if draw < max(tumour_fraction, et_fraction) and not len(tumour):
        tumour = torch.nonzero(label)
    shape = tuple(label.shape)
    if len(tumour):
        centre = _pick(tumour, generator)
    else:
        pool = torch.nonzero((image > 0).any(dim=0) & (label == 0))
        centre = _pick(pool, generator) if len(pool) else tuple(n // 2 for n in shape)  # type: ignore[assignment]
    half = [r // 2 for r in crop_size]
    inside = tuple(int(min(max(c, h), n - (r - h))) for c, h, r, n in zip(centre, half, crop_size, shape))
    return inside, bool(len(tumour))  # type: ignore[return-value]


def pad_to(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last three axes ``(z, y, x)`` symmetrically to at least ``size`` (as MONAI's ``SpatialPad``)."""
    pads: list[int] = []
    for have, want in zip(reversed(tensor.shape[-3:]), reversed(tuple(size))):
        extra = max(0, int(want) - int(have))
        pads += [extra // 2, extra - extra // 2]
    if not any(pads):
        return tensor
    return F.pad(tensor, pads)


class SynthesisCropDataset(Dataset):
    """Training crops synthesised on the fly from a label bank (see the module docstring).

    Args:
        bank: the :class:`~nslfcore.synthesis.bank.LabelBank`.
        crop_size: crop ``(z, y, x)`` voxels.
        positions: the bank positions this dataset draws from (default: all), e.g. without the maps
            held out for validation.
        tumour_fraction: share of crops centred on a tumour voxel.
        et_fraction: share of crops centred on an enhancing-tumour voxel (within ``tumour_fraction``).
        sequence_dropout: probability that a crop loses one sequence (all zeros).
        samples_per_case: items per label map per epoch.
        seed: base seed; item ``i`` of epoch seed ``e`` is a pure function of ``(seed, e, i)``.
        device: where the synthesis and preprocessing run (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        warp_margin: background voxels added around a map's box before the warp.
    """

    def __init__(self, bank: LabelBank, crop_size: Sequence[int] = FUSION_CROP, positions: Sequence[int] | None = None,
                 tumour_fraction: float = 0.5, et_fraction: float = 0.0, sequence_dropout: float = 0.0,
                 samples_per_case: int = 1, seed: int = 0, device: str | torch.device = "cpu",
                 warp_margin: int = WARP_MARGIN) -> None:  # fmt: skip
        self.positions = list(range(len(bank))) if positions is None else [int(p) for p in positions]
        if not self.positions:
            raise ValueError(f"SynthesisCropDataset got no label maps of the bank in {bank.folder}.")
        for name, value in (("tumour_fraction", tumour_fraction), ("et_fraction", et_fraction),
                            ("sequence_dropout", sequence_dropout)):  # fmt: skip
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value} must lie in [0, 1].")
        self.bank = bank
        self.crop_size = tuple(int(s) for s in crop_size)
        self.tumour_fraction, self.et_fraction = float(tumour_fraction), float(et_fraction)
        self.sequence_dropout = float(sequence_dropout)
        self.samples_per_case = int(samples_per_case)
        self.seed = int(seed)
        self.epoch_seed = 0
        self.device = torch.device(device)
        self.warp_margin = int(warp_margin)

    def __len__(self) -> int:
        return len(self.positions) * self.samples_per_case

    @property
    def names(self) -> list[str]:
        """The label maps' names (``labels-XXXXX``) in dataset order."""
        return [self.bank.entries[p].name for p in self.positions]

    def set_epoch(self, epoch_seed: int) -> None:
        """Re-seed the synthesis and crops (e.g. with the epoch number)."""
        self.epoch_seed = int(epoch_seed)

    def preload(self) -> None:
        """Nothing to do: label maps are memory-mapped per item (forked workers share the page cache)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = self.positions[index % len(self.positions)]
        generator = torch_generator(self.seed, self.epoch_seed, index)
        m = self.warp_margin
        labels = torch.from_numpy(np.pad(self.bank.labels(position), m))
        images, warped = synthesise_images(labels, generator, self.device, warp=True)
        image, label = preprocess(images, target_lookup(self.device)[warped])
        image, label = pad_to(image, self.crop_size), pad_to(label, self.crop_size)
        centre, _ = crop_centre(image, label, self.crop_size, self.tumour_fraction, self.et_fraction, generator)
        box = tuple(slice(c - r // 2, c - r // 2 + r) for c, r in zip(centre, self.crop_size))
        image, label = image[(slice(None), *box)], label[box]
        flips = [axis for axis in range(3) if float(torch.rand((), generator=generator)) < 0.5]
        if flips:
            image, label = image.flip([1 + a for a in flips]), label.flip(flips)
        image = image.clamp(0.0, 1.0)
        if float(torch.rand((), generator=generator)) < self.sequence_dropout:
            image[int(torch.randint(0, image.shape[0], (), generator=generator))] = 0.0
        return {"image": image.float().cpu().contiguous(), "label": label.to(torch.int64).cpu().contiguous(),
                "name": self.bank.entries[position].name}  # fmt: skip
