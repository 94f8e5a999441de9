"""Intensities of a synthesised case: one random contrast per sequence, texture and partial volume (torch).

For each sequence every label gets a mean drawn either around a typical appearance
(:data:`TYPICAL`, each value scaled by 0.6-1.5) or uniformly in (0.03, 1) -- half the cases
each -- and then the orderings of :data:`nslfcore.synthesis.labels.ORDERINGS` are imposed
(:func:`impose_orderings`); everything else is left to chance, so WM may be darker than GM on T1 or
CSF brighter than tumour on T2, as long as oedema stays brighter than WM on T2 and FLAIR,
enhancing tumour brighter than WM on T1ce, necrosis dark on T1ce, and CSF dark on FLAIR.
Vessels, sinuses and the choroid plexus may reach 1.2-4x the WM value on T1ce (real maxima are up
to 4x the 99th percentile). The ventricles take the CSF mean (within 5 %).

Inside each label a voxel's value is ``mean * (1 + a * field) + s * noise``: a smooth random field
(texture, amplitude ``a`` per label) and, for tumour labels, a mixture of two means joined by a
smooth field (heterogeneous tumour); then a Gaussian blur of 0.3-1.0 voxel (partial volume at
label borders).

Tensors: label maps ``(z, y, x)`` int64, images ``(4, z, y, x)`` float32 in
:data:`nslfcore.MODALITIES` order, relative intensities around [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d

from nslfcore import MODALITIES
from nslfcore.synthesis import labels as L

#: A typical appearance per sequence (relative, WM about 0.4-0.8): the centre of half the draws.
TYPICAL: dict[str, dict[int, float]] = {
    "t1": {L.CSF: 0.25, L.VENTRICLE: 0.25, L.CORTICAL_GM: 0.6, L.DEEP_GM: 0.65, L.WM: 0.8, L.CHOROID_PLEXUS: 0.55,
           L.VESSEL: 0.5, L.SINUS: 0.45, L.WMH: 0.68, L.RESIDUE: 0.9, L.NECROSIS: 0.3, L.NON_ENHANCING: 0.5,
           L.OEDEMA: 0.55, L.ENHANCING: 0.62},
    "t1ce": {L.CSF: 0.25, L.VENTRICLE: 0.25, L.CORTICAL_GM: 0.6, L.DEEP_GM: 0.65, L.WM: 0.75, L.CHOROID_PLEXUS: 1.2,
             L.VESSEL: 1.5, L.SINUS: 1.4, L.WMH: 0.65, L.RESIDUE: 0.9, L.NECROSIS: 0.3, L.NON_ENHANCING: 0.5,
             L.OEDEMA: 0.55, L.ENHANCING: 1.2},
    "t2": {L.CSF: 1.0, L.VENTRICLE: 1.0, L.CORTICAL_GM: 0.55, L.DEEP_GM: 0.5, L.WM: 0.35, L.CHOROID_PLEXUS: 0.8,
           L.VESSEL: 0.15, L.SINUS: 0.25, L.WMH: 0.75, L.RESIDUE: 0.6, L.NECROSIS: 0.95, L.NON_ENHANCING: 0.8,
           L.OEDEMA: 0.85, L.ENHANCING: 0.6},
    "flair": {L.CSF: 0.1, L.VENTRICLE: 0.1, L.CORTICAL_GM: 0.6, L.DEEP_GM: 0.55, L.WM: 0.45, L.CHOROID_PLEXUS: 0.5,
              L.VESSEL: 0.3, L.SINUS: 0.35, L.WMH: 0.9, L.RESIDUE: 0.7, L.NECROSIS: 0.45, L.NON_ENHANCING: 0.85,
              L.OEDEMA: 1.0, L.ENHANCING: 0.8},
}  # fmt: skip
#: Range of the partial-volume blur at label borders, voxels.
PARTIAL_VOLUME_SIGMA: tuple[float, float] = (0.3, 1.0)
#: Labels whose T1ce mean may exceed the range: structures that enhance more than tumour.
BRIGHT_ON_T1CE: tuple[int, ...] = (L.VESSEL, L.SINUS, L.CHOROID_PLEXUS)
TUMOUR_LABELS: tuple[int, ...] = (L.NECROSIS, L.NON_ENHANCING, L.OEDEMA, L.ENHANCING)


def _uniform(generator: torch.Generator, low: float, high: float, size: tuple[int, ...] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator)


def impose_orderings(means: torch.Tensor) -> torch.Tensor:
    """Make ``means`` ``(4, NUM_LABELS)`` keep every ordering of :data:`~nslfcore.synthesis.labels.ORDERINGS`.

    A brighter label below ``ORDER_RATIO * darker + ORDER_MARGIN`` is lifted to that value. Lifting
    never lowers anything and the rules form no cycle, so passes in any order settle (within the
    depth of the longest chain, such as enhancing > WM > necrosis). Returns a new tensor.
    """
    out = means.clone()
    for _ in range(len(L.ORDERINGS)):
        changed = False
        for sequence, brighter, darker in L.ORDERINGS:
            c = MODALITIES.index(sequence)
            needed = L.ORDER_RATIO * float(out[c, darker]) + L.ORDER_MARGIN
            if float(out[c, brighter]) < needed - 1e-5:  # float32 storage rounds a lifted value
                out[c, brighter] = needed
                changed = True
        if not changed:
            return out
    raise RuntimeError("the intensity orderings of nslfcore.synthesis.labels.ORDERINGS contain a cycle.")


def sample_contrast(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label means and within-label spreads, each ``(4, NUM_LABELS)`` (relative units).

    Background keeps mean 0. Ventricles follow CSF. See the module docstring for the draws.
    """
    means = torch.zeros(len(MODALITIES), L.NUM_LABELS)
    for c, sequence in enumerate(MODALITIES):
        typical = torch.zeros(L.NUM_LABELS)
        for label, value in TYPICAL[sequence].items():
            typical[label] = value
        if float(torch.rand((), generator=generator)) < 0.5:
            row = typical * _uniform(generator, 0.6, 1.5, (L.NUM_LABELS,))
        else:
            row = _uniform(generator, 0.03, 1.0, (L.NUM_LABELS,))
        if sequence == "t1ce":
            for label in BRIGHT_ON_T1CE:
                if float(torch.rand((), generator=generator)) < 0.7:
                    row[label] = typical[L.WM] * float(_uniform(generator, 1.2, 4.0))
        row[L.VENTRICLE] = row[L.CSF] * float(_uniform(generator, 0.95, 1.05))
        row[L.BACKGROUND] = 0.0
        means[c] = row
    means = impose_orderings(means)
    means[:, L.BACKGROUND] = 0.0
    spreads = means * _uniform(generator, 0.01, 0.08, (len(MODALITIES), L.NUM_LABELS))
    return means, spreads


def smooth_field(generator: torch.Generator, shape: tuple[int, ...], cells: int, channels: int = 1,
                 device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """``(channels, z, y, x)`` smooth random fields with about ``cells`` lobes per axis, unit spread (trilinear up-sampling)."""
    coarse = torch.randn((1, channels, *(max(2, cells + 1) for _ in shape)), generator=generator)
    field = F.interpolate(coarse.to(device), size=tuple(shape), mode="trilinear", align_corners=True)[0]
    return field / field.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)


def gaussian_blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, z, y, x)`` with ``sigma`` ``(C, 3)`` voxels per channel and axis (z, y, x).

    MONAI's sampled Gaussian (truncated at 3 sigma) and separable filtering; edges replicate. A sigma
    under 0.1 voxel leaves that axis as it is.
    """
    rows = []
    for c in range(image.shape[0]):
        sigmas = [float(s) for s in sigma[c]]
        if max(sigmas) < 0.1:
            rows.append(image[c])
            continue
        kernels = [gaussian_1d(torch.tensor(max(s, 0.1)), truncated=3.0, approx="sampled", normalize=True) if s >= 0.1
                   else torch.ones(1) for s in sigmas]  # fmt: skip
        rows.append(separable_filtering(image[c][None, None], [k.to(image) for k in kernels], mode="replicate")[0, 0])
    return torch.stack(rows)


def render(labels: torch.Tensor, means: torch.Tensor, spreads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images ``(4, z, y, x)`` from a label map ``(z, y, x)`` int64 (see the module docstring), before the partial-volume blur.

    The blur (:data:`PARTIAL_VOLUME_SIGMA`) is left to :func:`nslfcore.synthesis.acquisition.acquire`, which
    merges it with the acquisition's own blur into one pass.
    """
    shape = tuple(labels.shape)
    device = labels.device
    channels = len(MODALITIES)
    means, spreads = means.to(device), spreads.to(device)
    amplitude = _uniform(generator, 0.0, 0.12, (channels, L.NUM_LABELS)).to(device)
    texture = smooth_field(generator, shape, int(_uniform(generator, 6, 24)), channels, device)
    image = means[:, labels] * (1 + amplitude[:, labels] * texture)
    tumour = torch.zeros(L.NUM_LABELS, dtype=torch.bool)
    tumour[list(TUMOUR_LABELS)] = True
    second = means * _uniform(generator, 0.85, 1.15, (channels, L.NUM_LABELS)).to(device)  # the other component
    mix = torch.sigmoid(3 * smooth_field(generator, shape, int(_uniform(generator, 8, 30)), 1, device))
    is_tumour = tumour.to(device)[labels]
    image = torch.where(is_tumour, image * (1 - mix) + second[:, labels] * mix, image)
    noise = torch.randn((channels, *shape), generator=generator).to(device)
    return (image + spreads[:, labels] * noise).clamp_min(0).float()
