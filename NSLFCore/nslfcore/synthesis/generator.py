"""Whole synthesised cases: a label map -> four MR sequences and the tumour labels, deterministic per seed.

:func:`synthesise_images` is the torch part (on any device): an optional random warp of the label
map (:mod:`~nslfcore.synthesis.deformation`), a random contrast per sequence
(:mod:`~nslfcore.synthesis.intensities`), and the acquisition (:mod:`~nslfcore.synthesis.acquisition`).
:func:`synthesise_case` draws the label map of case ``index`` of seed ``seed``
(:mod:`~nslfcore.synthesis.label_map`) and returns a :class:`~nslfcore.data.case.Case` like a
BraTS-preprocessed exam: four volumes in scanner units on the BraTS grid (240 x 240 x 155, 1 mm,
LPS), internal labels 0-3. :func:`write_synthetic_dataset` writes cases in the BraTS 2023 layout
(``<out>/Synth-XXXXX/Synth-XXXXX-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels {0, 1, 2, 3}), which every
``nslf`` command reads.

The same ``(seed, index)`` gives the same bytes on the same device and torch version.
Arrays are ``(z, y, x)``; geometry ``(x, y, z)``, mm, LPS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nslfcore import MODALITIES
from nslfcore.data.case import Case
from nslfcore.data.io import write_image
from nslfcore.synthesis.acquisition import acquire
from nslfcore.synthesis.deformation import random_warp
from nslfcore.synthesis.intensities import render, sample_contrast
from nslfcore.synthesis.label_map import SynthesisLabels, generate_label_map
from nslfcore.synthesis.labels import target_classes

#: BraTS 2023 file suffixes of the four sequences and the labels.
FILE_SUFFIXES: dict[str, str] = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}


def torch_generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU torch generator seeded from ``(seed, *parts)`` (independent streams per case and purpose)."""
    state = np.random.SeedSequence([int(seed), *(int(p) for p in parts)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def synthesise_images(label_map: np.ndarray | torch.Tensor, generator: torch.Generator, device: str | torch.device = "cpu",
                      warp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Images ``(4, z, y, x)`` float32 in scanner units and the (warped) label map ``(z, y, x)`` int64, on ``device``.

    Random draws come from ``generator`` (a CPU generator, so that a seed gives the same case on any device).
    """
    labels = torch.as_tensor(np.asarray(label_map) if not isinstance(label_map, torch.Tensor) else label_map)
    labels = labels.to(device=device, dtype=torch.int64)
    if warp:
        labels = random_warp(labels, generator)
    means, spreads = sample_contrast(generator)
    box = _box(labels > 0, margin=6)  # the work happens on the head's box: a third of the BraTS grid
    relative = render(labels[box], means, spreads, generator)
    images = torch.zeros((relative.shape[0], *labels.shape), device=labels.device)
    images[(slice(None), *box)] = acquire(relative, labels[box] > 0, generator)
    return images, labels


def _box(mask: torch.Tensor, margin: int) -> tuple[slice, slice, slice]:
    """The bounding box ``(z, y, x)`` of ``mask`` grown by ``margin`` voxels (the whole grid when empty)."""
    if not bool(mask.any()):
        return (slice(None),) * 3
    box = []
    for axis in range(3):
        hits = torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != axis))).flatten()
        box.append(slice(max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


@dataclass
class SyntheticCase:
    """A synthesised case: ``case`` (images in scanner units, internal labels 0-3) and its synthesis labels."""

    case: Case
    synthesis: SynthesisLabels


def case_name(index: int) -> str:
    """``Synth-XXXXX`` for case ``index``."""
    return f"Synth-{int(index):05d}"


def synthesise_case(seed: int = 0, index: int = 0, device: str | torch.device = "cpu", kind: str | None = None) -> SyntheticCase:
    """Case ``index`` of the data set of ``seed`` (see the module docstring); ``kind`` forces a tumour type."""
    synthesis = generate_label_map(seed, index, kind)
    images, _ = synthesise_images(synthesis.labels, torch_generator(seed, index, 1), device)
    stack = images.cpu().numpy()
    case = Case(name=case_name(index), images={m: stack[c] for c, m in enumerate(MODALITIES)},
                label=target_classes(synthesis.labels), geometry=synthesis.geometry)  # fmt: skip
    return SyntheticCase(case, synthesis)


def write_synthetic_case(case: Case, out: str | Path) -> Path:
    """Write ``case`` in the BraTS 2023 layout under ``out``; returns the folder.

    Images are int16 when they hold integers in its range (as scanners store them), else float32.
    """
    folder = Path(out) / case.name
    for modality in MODALITIES:
        image = case.images[modality]
        whole = bool(np.all(np.round(image) == image)) and float(np.abs(image).max()) < 32767
        write_image(image, case.geometry, folder / f"{case.name}-{FILE_SUFFIXES[modality]}.nii.gz",
                    np.int16 if whole else np.float32)  # fmt: skip
    if case.label is not None:
        write_image(case.label, case.geometry, folder / f"{case.name}-{FILE_SUFFIXES['seg']}.nii.gz", np.uint8)
    return folder


def write_synthetic_dataset(out: str | Path, n: int, seed: int = 0, start: int = 0, device: str | torch.device = "cpu",
                            overwrite: bool = False,
                            progress: Callable[[int, Path], None] | None = None) -> list[Path]:  # fmt: skip
    """Synthesise and write cases ``start .. start + n - 1`` of ``seed``; returns their folders.

    A folder that already holds one of these cases is refused (``FileExistsError``, before anything
    is written) unless ``overwrite``.
    """
    taken = [case_name(i) for i in range(start, start + n) if (Path(out) / case_name(i)).exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(taken[:3])}{' ...' if len(taken) > 3 else ''}; "
                              "choose another folder or --start, or pass --overwrite to replace them.")  # fmt: skip
    folders = []
    for index in range(start, start + n):
        folders.append(write_synthetic_case(synthesise_case(seed, index, device).case, out))
        if progress is not None:
            progress(index, folders[-1])
    return folders
