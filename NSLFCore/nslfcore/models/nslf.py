"""NSLF: CU-Net + FCD + GMN + FSD composed (the paper's nested framework).

Input ``x`` is ``(B, 4, D, H, W)``: batch, the four modalities in the configuration's order
(default ``("t1", "t1ce", "t2", "flair")``), and spatial axes ``(z, y, x)`` as in a SimpleITK
array (``D`` = slices). Intensities are expected normalised to ``[0, 1]`` (see
:mod:`nslfcore.data.transforms`). Spatial sizes that are not multiples of 16 are zero-padded
symmetrically inside the model and every voxel-wise output is cropped back to the input size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nslfcore.config import NSLFConfig
from nslfcore.models.cunet import CUNet, CUNetOutput
from nslfcore.models.fcd import FusionDecoder, FusionOutput
from nslfcore.models.fsd import SegmentationDecoder
from nslfcore.models.gmn import GeometricMatchingNetwork, GMNOutput


class NSLFOutput(NamedTuple):
    """Everything the three training stages' losses need; voxel-wise tensors have the input's size.

    Attributes:
        sources: CU-Net outputs of the four modalities (``M = 4``). Global features keep the padded
            size / 16.
        fusion: fused volume ``(B, 1, D, H, W)`` and weights ``(B, 4, D, H, W)``.
        fused_features: CU-Net outputs of the fused volume (``M = 1``), or ``None`` without GMN.
        registration: GMN outputs (warped fused volume, affine, DVF), or ``None`` without GMN.
        logits: FSD class logits ``(B, num_classes, D, H, W)``, or ``None`` when not requested.
    """

    sources: CUNetOutput
    fusion: FusionOutput
    fused_features: CUNetOutput | None
    registration: GMNOutput | None
    logits: torch.Tensor | None


def check_input(x: torch.Tensor, num_modalities: int = 4) -> None:
    """Raise ``ValueError`` with one clear sentence unless ``x`` is a finite ``(B, 4, D, H, W)`` float tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"NSLF expects a torch.Tensor of shape (B, {num_modalities}, D, H, W), got {type(x).__name__}.")
    if x.ndim != 5:
        raise ValueError(
            f"NSLF expects a 5-D tensor (B, {num_modalities}, D, H, W) with spatial axes (z, y, x), "
            f"got {x.ndim}-D shape {tuple(x.shape)}."
        )
    if x.shape[1] != num_modalities:
        raise ValueError(
            f"NSLF expects {num_modalities} modalities on axis 1 (T1, T1ce, T2, FLAIR), got {x.shape[1]} "
            f"(shape {tuple(x.shape)})."
        )
    if not x.is_floating_point():
        raise ValueError(f"NSLF expects a floating-point tensor, got {x.dtype}.")
    if min(x.shape[2:]) < 1 or x.shape[0] < 1:
        raise ValueError(f"NSLF got an empty tensor of shape {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("NSLF input contains NaN or Inf voxels; clean or mask the images first.")


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
    """Zero-pad the spatial axes of ``x`` (B, C, D, H, W) symmetrically to multiples of ``multiple``.

    Returns the padded tensor and the slices (over D, H, W) that crop it back.
    """
    pads: list[tuple[int, int]] = []  # (before, after) per axis D, H, W
    crop: list[slice] = []
    for size in x.shape[2:]:
        total = -size % multiple
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + size))
    slices = (crop[0], crop[1], crop[2])
    if not any(before + after for before, after in pads):
        return x, slices
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants the last axis first
    return F.pad(x, flat), slices


def _crop(t: torch.Tensor, crop: tuple[slice, slice, slice]) -> torch.Tensor:
    return t[(..., *crop)]


class NSLF(nn.Module):
    """The NSLF model; a :class:`~nslfcore.models.interface.Network` that fuses and segments.

    Example:
        >>> from nslfcore.config import PRESETS
        >>> model = NSLF(PRESETS["compact"]).eval()
        >>> x = torch.rand(1, 4, 20, 33, 30)
        >>> model.fuse(x).fused.shape, model.segment(x).shape
        (torch.Size([1, 1, 20, 33, 30]), torch.Size([1, 4, 20, 33, 30]))
    """

    fuses = True
    segments = True
    sequential = True

    def __init__(self, config: NSLFConfig) -> None:
        super().__init__()
        self.config = config
        m = len(config.modalities)
        self.cunet = CUNet(config.cunet_widths, m, per_modality=config.cunet_weights == "per_modality")
        self.fcd = FusionDecoder(config.cunet_widths, eps=config.fusion_eps)
        self.gmn = (
            GeometricMatchingNetwork(
                config.global_width, config.local_width, m, scales=config.gmn_scales, flow_width=config.gmn_flow_width
            )
            if config.use_gmn
            else None
        )
        self.fsd = SegmentationDecoder(
            config.local_width,
            m,
            widths=config.fsd_widths,
            num_classes=config.num_classes,
            fused_only=config.segmenter_input == "fused_only",
        )

    def _prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
        check_input(x, len(self.config.modalities))
        return _pad_to_multiple(x, self.config.size_multiple)

    def _encode_and_fuse(self, padded: torch.Tensor) -> tuple[CUNetOutput, FusionOutput]:
        sources = self.cunet(padded)
        return sources, self.fcd(sources.global_features, sources.local_features, padded)

    def fuse(self, x: torch.Tensor) -> FusionOutput:
        """Fused volume ``(B, 1, D, H, W)`` and normalised weights ``(B, 4, D, H, W)`` for ``x`` ``(B, 4, D, H, W)``."""
        padded, crop = self._prepare(x)
        _, fusion = self._encode_and_fuse(padded)
        return FusionOutput(*(_crop(t, crop) for t in fusion))

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes, D, H, W)`` (background, NCR, ED, ET) for ``x`` ``(B, 4, D, H, W)``."""
        padded, crop = self._prepare(x)
        sources, fusion = self._encode_and_fuse(padded)
        return _crop(self.fsd(sources.local_features, fusion.fused), crop)

    def fuse_and_segment(self, x: torch.Tensor) -> tuple[FusionOutput, torch.Tensor]:
        """Both :meth:`fuse` and :meth:`segment` from one pass through CU-Net and FCD."""
        padded, crop = self._prepare(x)
        sources, fusion = self._encode_and_fuse(padded)
        logits = self.fsd(sources.local_features, fusion.fused)
        return FusionOutput(*(_crop(t, crop) for t in fusion)), _crop(logits, crop)

    def fuse_and_segment_sequential(
        self, x: torch.Tensor, segment: bool = True, unets: list[CUNet] | None = None
    ) -> tuple[FusionOutput, torch.Tensor | None]:
        """:meth:`fuse_and_segment` with one modality at a time through CU-Net and the FCD (inference).

        The same computation (BatchNorm in eval mode acts per image), but only one modality's
        full-resolution CU-Net decoder is alive at a time, so the peak memory is about half of the
        batched pass: whole volumes fit where the batched pass would need windows. This is also the
        public code's procedure (one CU-Net call per modality). ``unets`` are
        :meth:`CUNet.split_modalities` (made here when not given; pass them to reuse across calls).
        Returns the fusion and the logits (``None`` unless ``segment``).
        """
        padded, crop = self._prepare(x)
        unets = unets if unets is not None else self.cunet.split_modalities()
        b, m = padded.shape[:2]
        local = padded.new_empty((b, m, self.config.local_width, *padded.shape[2:]))
        raw = padded.new_empty(padded.shape)
        for index, unet in enumerate(unets):
            out = unet(padded[:, index : index + 1])
            local[:, index] = out.local_features[:, 0]
            raw[:, index] = self.fcd.raw_weight(out.global_features[:, 0], out.local_features[:, 0])[:, 0]
            del out
        fusion = self.fcd.combine(raw, padded)
        logits = _crop(self.fsd(local, fusion.fused), crop) if segment else None
        return FusionOutput(*(_crop(t, crop) for t in fusion)), logits

    def predict(
        self, x: torch.Tensor, segment: bool = True, sequential: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused volume ``(B, 1, D, H, W)`` and logits ``(B, num_classes, D, H, W)`` (``None`` unless ``segment``).

        One pass: :meth:`fuse` alone (the FSD is skipped) without ``segment``, else
        :meth:`fuse_and_segment`; ``sequential``: :meth:`fuse_and_segment_sequential`.
        """
        if sequential:
            fusion, logits = self.fuse_and_segment_sequential(x, segment)
            return fusion.fused, logits
        if segment:
            fusion, logits = self.fuse_and_segment(x)
            return fusion.fused, logits
        return self.fuse(x).fused, None

    def inference_bytes_per_voxel(self, sequential: bool = False) -> int:
        """Rough peak float32 activation memory of one whole-volume :meth:`predict`, per padded voxel.

        Batched: about six full-resolution tensors of ``4 modalities x w0`` channels are alive at
        the CU-Net's last decoder level (skip, up-sampled, concatenation, two convolutions, the
        output), plus the four local features the FCD and FSD read, the FSD's first width and ~16
        channels of inputs and outputs: ``4 bytes x (28 w0 + fsd0 + 16)``, i.e. 1024 B/voxel for
        ``compact`` and 3904 for ``paper`` (measured peak RSS on the CPU, torch 2.13: about 900 and
        2930). ``sequential`` (:meth:`fuse_and_segment_sequential`): the four stored local
        features, one modality's decoder and the FSD's two first-width tensors,
        ``4 bytes x (10 w0 + 2 fsd0 + 16)``: 512 B/voxel for ``compact``, 1856 for ``paper``.
        """
        w0, fsd0 = self.config.local_width, self.config.fsd_widths[0]
        return 4 * (10 * w0 + 2 * fsd0 + 16) if sequential else 4 * (6 * 4 * w0 + 4 * w0 + fsd0 + 16)

    def checkpoint_fields(self) -> dict[str, Any]:
        """``kind`` ``"weights"`` and the configuration as JSON: what a model file stores besides the weights."""
        return {"kind": "weights", "config": self.config.to_json()}

    def forward(self, x: torch.Tensor, with_gmn: bool = True, with_fsd: bool = True) -> NSLFOutput:
        """Training-time pass returning everything the stage losses need (see :class:`NSLFOutput`).

        Args:
            x: ``(B, 4, D, H, W)``, spatial ``(z, y, x)``, intensities in ``[0, 1]``.
            with_gmn: run the GMN (stage 2); ignored when the configuration has no GMN.
            with_fsd: run the FSD (stage 3).
        """
        padded, crop = self._prepare(x)
        sources, fusion = self._encode_and_fuse(padded)
        fused_features = registration = logits = None
        if with_gmn and self.gmn is not None:
            fused_features = self.cunet.extract_single(fusion.fused)
            registration = self.gmn(
                sources.global_features,
                sources.local_features,
                fused_features.global_features,
                fused_features.local_features,
                fusion.fused,
            )
            fused_features = CUNetOutput(
                fused_features.global_features,
                _crop(fused_features.local_features, crop),
                _crop(fused_features.reconstruction, crop),
            )
            registration = GMNOutput(
                _crop(registration.warped, crop), registration.theta, _crop(registration.dvf, crop), registration.affine
            )
        if with_fsd:
            logits = _crop(self.fsd(sources.local_features, fusion.fused), crop)
        return NSLFOutput(
            sources=CUNetOutput(
                sources.global_features, _crop(sources.local_features, crop), _crop(sources.reconstruction, crop)
            ),
            fusion=FusionOutput(*(_crop(t, crop) for t in fusion)),
            fused_features=fused_features,
            registration=registration,
            logits=logits,
        )
