"""NSLF: CU-Net + FCD + GMN + FSD composed (the paper's nested framework).

Input ``x`` is ``(B, 4, D, H, W)``: batch, the four modalities in the configuration's order
(default ``("t1", "t1ce", "t2", "flair")``), and spatial axes ``(z, y, x)`` as in a SimpleITK
array (``D`` = slices). Intensities are expected normalised to ``[0, 1]`` (see
:mod:`nslfcore.data.transforms`). Spatial sizes that are not multiples of 16 are zero-padded
symmetrically inside the model and every voxel-wise output is cropped back to the input size.

With ``config.feature_stride == 2`` CU-Net sees the 2x average-pooled volume: its local features
(and the FSD's first blocks) live on that coarser grid, while the fusion weights, the
reconstruction, the GMN's displacements and the logits are brought back to the input grid (see
:class:`~nslfcore.config.NSLFConfig`). Local features are then returned on the padded coarse grid.

Every pass takes ``present``, a ``(B, 4)`` boolean mask of the modalities each case has (``None``:
all four, bit-identical to a pass without it): a missing sequence is an all-zero channel of ``x``
and gets fusion weight exactly 0 (:meth:`~nslfcore.models.fcd.FusionDecoder.combine`), so the fused
volume, and the FSD that reads it, use the other three.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nslfcore.config import NSLFConfig, SegmentationOutput
from nslfcore.models.cunet import CUNet, CUNetOutput
from nslfcore.models.fcd import FusionDecoder, FusionOutput, check_present
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
        logits: FSD logits ``(B, config.output_channels, D, H, W)`` (classes or regions), or ``None`` when not requested.
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

    @property
    def segmentation_output(self) -> SegmentationOutput:
        """What the FSD's channels are (``config.segmentation_output``; see :mod:`nslfcore.models.outputs`)."""
        return self.config.segmentation_output

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
            num_classes=config.output_channels,
            fused_only=config.segmenter_input == "fused_only",
            stride=config.feature_stride,
        )

    def _prepare(self, x: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
        check_input(x, len(self.config.modalities))
        check_present(present, x.shape[0], x.shape[1])
        return _pad_to_multiple(x, self.config.size_multiple)

    def _to_feature_grid(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` on the (padded) input grid to CU-Net's grid (average pooling by the feature stride)."""
        stride = self.config.feature_stride
        return F.avg_pool3d(x, stride) if stride > 1 else x

    @staticmethod
    def _to_input_grid(t: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """``(B, C, d, h, w)`` on CU-Net's grid to the input grid ``size`` (trilinear; the identity at stride 1)."""
        return t if t.shape[2:] == size else F.interpolate(t, size=size, mode="trilinear", align_corners=False)

    def _features(self, padded: torch.Tensor, reconstruct: bool = True) -> CUNetOutput:
        """CU-Net outputs of ``padded`` ``(B, M, D, H, W)``: local features on CU-Net's grid.

        The reconstruction is brought to the input grid only when ``reconstruct`` (training needs
        it, inference does not read it).
        """
        out = self.cunet(self._to_feature_grid(padded))
        if not reconstruct:
            return out
        return out._replace(reconstruction=self._to_input_grid(out.reconstruction, padded.shape[2:]))

    def _crop_features(self, out: CUNetOutput, crop: tuple[slice, slice, slice]) -> CUNetOutput:
        """Crop the voxel-wise outputs back to the input size (local features only on the input grid)."""
        local = _crop(out.local_features, crop) if self.config.feature_stride == 1 else out.local_features
        return CUNetOutput(out.global_features, local, _crop(out.reconstruction, crop))

    def extract_features(self, x: torch.Tensor) -> CUNetOutput:
        """CU-Net outputs of ``x`` ``(B, M, D, H, W)`` (stage 1): padded, on CU-Net's grid, reconstruction cropped back."""
        padded, crop = _pad_to_multiple(x, self.config.size_multiple)
        return self._crop_features(self._features(padded), crop)

    def _encode_and_fuse(
        self, padded: torch.Tensor, reconstruct: bool = False, present: torch.Tensor | None = None
    ) -> tuple[CUNetOutput, FusionOutput]:
        sources = self._features(padded, reconstruct)
        b, m = padded.shape[:2]
        raw = self.fcd.raw_weight(sources.global_features.flatten(0, 1), sources.local_features.flatten(0, 1))
        raw = self._to_input_grid(raw.reshape(b, m, *raw.shape[2:]), padded.shape[2:])
        return sources, self.fcd.combine(raw, padded, present)

    def _segment(self, sources: CUNetOutput, fusion: FusionOutput, padded: torch.Tensor) -> torch.Tensor:
        return self.fsd(sources.local_features, fusion.fused, padded)

    def fuse(self, x: torch.Tensor, present: torch.Tensor | None = None) -> FusionOutput:
        """Fused volume ``(B, 1, D, H, W)`` and normalised weights ``(B, 4, D, H, W)`` for ``x`` ``(B, 4, D, H, W)``.

        ``present``: ``(B, 4)`` bool, the modalities each case has (``None``: all; see the module docstring).
        """
        padded, crop = self._prepare(x, present)
        _, fusion = self._encode_and_fuse(padded, present=present)
        return FusionOutput(*(_crop(t, crop) for t in fusion))

    def segment(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """FSD logits ``(B, config.output_channels, D, H, W)`` for ``x`` ``(B, 4, D, H, W)`` (``present``: see :meth:`fuse`)."""
        padded, crop = self._prepare(x, present)
        sources, fusion = self._encode_and_fuse(padded, present=present)
        return _crop(self._segment(sources, fusion, padded), crop)

    def fuse_and_segment(self, x: torch.Tensor, present: torch.Tensor | None = None) -> tuple[FusionOutput, torch.Tensor]:
        """Both :meth:`fuse` and :meth:`segment` from one pass through CU-Net and FCD."""
        padded, crop = self._prepare(x, present)
        sources, fusion = self._encode_and_fuse(padded, present=present)
        logits = self._segment(sources, fusion, padded)
        return FusionOutput(*(_crop(t, crop) for t in fusion)), _crop(logits, crop)

    def fuse_and_segment_sequential(
        self, x: torch.Tensor, segment: bool = True, unets: list[CUNet] | None = None, present: torch.Tensor | None = None
    ) -> tuple[FusionOutput, torch.Tensor | None]:
        """:meth:`fuse_and_segment` with one modality at a time through CU-Net and the FCD (inference).

        The same computation (BatchNorm in eval mode acts per image), but only one modality's
        full-resolution CU-Net decoder is alive at a time, so the peak memory is about half of the
        batched pass: whole volumes fit where the batched pass would need windows. This is also the
        public code's procedure (one CU-Net call per modality). ``unets`` are
        :meth:`CUNet.split_modalities` (made here when not given; pass them to reuse across calls).
        Returns the fusion and the logits (``None`` unless ``segment``); ``present``: see :meth:`fuse`.
        """
        padded, crop = self._prepare(x, present)
        unets = unets if unets is not None else self.cunet.split_modalities()
        low = self._to_feature_grid(padded)
        b, m = low.shape[:2]
        local = low.new_empty((b, m, self.config.local_width, *low.shape[2:]))
        raw = low.new_empty(low.shape)
        for index, unet in enumerate(unets):
            out = unet(low[:, index : index + 1])
            local[:, index] = out.local_features[:, 0]
            raw[:, index] = self.fcd.raw_weight(out.global_features[:, 0], out.local_features[:, 0])[:, 0]
            del out
        fusion = self.fcd.combine(self._to_input_grid(raw, padded.shape[2:]), padded, present)
        logits = _crop(self.fsd(local, fusion.fused, padded), crop) if segment else None
        return FusionOutput(*(_crop(t, crop) for t in fusion)), logits

    def predict(
        self, x: torch.Tensor, segment: bool = True, sequential: bool = False, present: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused volume ``(B, 1, D, H, W)`` and logits ``(B, config.output_channels, D, H, W)`` (``None`` unless ``segment``).

        One pass: :meth:`fuse` alone (the FSD is skipped) without ``segment``, else
        :meth:`fuse_and_segment`; ``sequential``: :meth:`fuse_and_segment_sequential`. ``present``
        ``(B, 4)`` bool: the modalities each case has (``None``: all four; see :meth:`fuse`).
        """
        if sequential:
            fusion, logits = self.fuse_and_segment_sequential(x, segment, present=present)
            return fusion.fused, logits
        if segment:
            fusion, logits = self.fuse_and_segment(x, present)
            return fusion.fused, logits
        return self.fuse(x, present).fused, None

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
        With ``feature_stride`` 2 that part shrinks 8x and the input-grid tensors are added.
        """
        w0, fsd0 = self.config.local_width, self.config.fsd_widths[0]
        coarse = 4 * (10 * w0 + 2 * fsd0 + 16) if sequential else 4 * (6 * 4 * w0 + 4 * w0 + fsd0 + 16)
        if self.config.feature_stride == 1:
            return coarse
        # The same on the coarse grid (1/8 of the voxels at stride 2), plus what lives on the input
        # grid: sources, raw and normalised weights, fused (13), the up-sampled FSD features, the
        # refinement's input and output (3 fsd1 + 5), the classifier's input and the logits (fsd1 + 5).
        fsd1 = self.config.fsd_widths[1]
        return coarse // self.config.feature_stride**3 + 4 * (4 * fsd1 + 24)

    def checkpoint_fields(self) -> dict[str, Any]:
        """``kind`` ``"weights"`` and the configuration as JSON: what a model file stores besides the weights."""
        return {"kind": "weights", "config": self.config.to_json()}

    def forward(
        self, x: torch.Tensor, with_gmn: bool = True, with_fsd: bool = True, present: torch.Tensor | None = None
    ) -> NSLFOutput:
        """Training-time pass returning everything the stage losses need (see :class:`NSLFOutput`).

        Args:
            x: ``(B, 4, D, H, W)``, spatial ``(z, y, x)``, intensities in ``[0, 1]``.
            with_gmn: run the GMN (stage 2); ignored when the configuration has no GMN.
            with_fsd: run the FSD (stage 3).
            present: ``(B, 4)`` bool, the modalities each crop has (``None``: all four). With
                sequence dropout, :func:`~nslfcore.models.fcd.present_channels` of the crops.
        """
        padded, crop = self._prepare(x, present)
        sources, fusion = self._encode_and_fuse(padded, reconstruct=True, present=present)
        fused_features = registration = logits = None
        if with_gmn and self.gmn is not None:
            fused_features = self.cunet.extract_single(self._to_feature_grid(fusion.fused))
            fused_features = fused_features._replace(
                reconstruction=self._to_input_grid(fused_features.reconstruction, padded.shape[2:])
            )
            registration = self.gmn(
                sources.global_features,
                sources.local_features,
                fused_features.global_features,
                fused_features.local_features,
                fusion.fused,
            )
            fused_features = self._crop_features(fused_features, crop)
            registration = GMNOutput(
                _crop(registration.warped, crop), registration.theta, _crop(registration.dvf, crop), registration.affine
            )
        if with_fsd:
            logits = _crop(self._segment(sources, fusion, padded), crop)
        return NSLFOutput(
            sources=self._crop_features(sources, crop),
            fusion=FusionOutput(*(_crop(t, crop) for t in fusion)),
            fused_features=fused_features,
            registration=registration,
            logits=logits,
        )
