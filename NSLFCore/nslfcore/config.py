"""Network configurations of NSLF, serialisable to JSON (stored in every checkpoint).

Two presets:

``paper``
    The published shapes: CU-Net widths 32-64-128-256-256 (four downsamplings), FCD up-sampling
    256->128->64->32->32, GMN hidden width 256 (affine) and 16 (deformable), FSD 64-32.
    Parameter counts with shared CU-Net weights equal the authors' public code for the parts
    its forward pass uses (CU-Net 10,739,873; FCD 1,888,161; FSD 415,432).
``compact``
    A CPU-friendly width 8-16-32-64-64 at full resolution (the default models up to v2, and the tests).
``fast``
    The compact widths on a 2x coarser grid (``feature_stride=2``): CU-Net, FCD and FSD work on the
    average-pooled volume, the fusion weights and the segmentation features are up-sampled, and a
    full-resolution refinement block sees the sources again. About 1/8 of the operations and
    memory of ``compact`` (issue 14); the default model from v3 on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from nslfcore import MODALITIES

CUNetWeights = Literal["shared", "per_modality"]
SegmenterInput = Literal["features_and_fused", "fused_only"]
SegmentationOutput = Literal["classes", "regions"]


@dataclass(frozen=True)
class NSLFConfig:
    """Shapes and switches of the four NSLF networks.

    Attributes:
        name: preset name or a user label.
        cunet_widths: channels at the five CU-Net levels, full resolution first. The first is the
            "local" feature width, the last the "global" (bottleneck, 1/16 resolution) width.
        cunet_weights: ``"per_modality"`` ("a group of U-Nets", the paper) or ``"shared"`` (one
            U-Net for all modalities, the public code).
        gmn_scales: down-sampling factors at which the GMN's deformable branch predicts
            displacements, coarse to fine; each must divide 16. ``(1,)`` is the public code's
            single-scale alignment, ``(2, 1)`` the paper's multi-scale alignment.
        gmn_flow_width: hidden channels of each deformable head (16 in the public code).
        fsd_widths: channels of the FSD's two double-convolution blocks.
        num_classes: output classes of the FSD (background, NCR, ED, ET).
        modalities: names of the four input channels, in order.
        use_gmn: ablation switch: ``False`` drops the GMN (no registration term in stage 2).
        segmenter_input: ablation switch: ``"fused_only"`` feeds the FSD only the fused volume.
        fusion_eps: the epsilon of the weight normalisation ``w_i / (sum_j w_j + eps)``.
        feature_stride: voxel stride of the grid CU-Net, the FCD and the FSD work on, relative to
            the input: ``1`` (the paper) is the input grid; ``2`` is the 2x average-pooled grid, with
            the fusion weight maps and the GMN's displacements up-sampled trilinearly to the input
            grid (the fused volume stays a voxel-wise convex combination of the full-resolution
            sources), and an FSD refinement block (one 3x3x3 convolution on the up-sampled
            features, the fused volume and the sources) before the classifier.
        segmentation_output: what the FSD's channels are: ``"classes"`` (the paper) ``num_classes``
            softmax logits (background, NCR, ED, ET); ``"regions"`` (as nnU-Net trains BraTS) three
            sigmoid logits of the nested regions WT, TC, ET (:data:`nslfcore.data.labels.REGION_CHANNELS`),
            turned into labels by :mod:`nslfcore.models.outputs`. Configurations stored without it
            (every model file before it) are ``"classes"``.
    """

    name: str = "paper"
    cunet_widths: tuple[int, int, int, int, int] = (32, 64, 128, 256, 256)
    cunet_weights: CUNetWeights = "per_modality"
    gmn_scales: tuple[int, ...] = (2, 1)
    gmn_flow_width: int = 16
    fsd_widths: tuple[int, int] = (64, 32)
    num_classes: int = 4
    modalities: tuple[str, ...] = field(default=MODALITIES)
    use_gmn: bool = True
    segmenter_input: SegmenterInput = "features_and_fused"
    fusion_eps: float = 1e-7
    feature_stride: int = 1
    segmentation_output: SegmentationOutput = "classes"

    def __post_init__(self) -> None:
        if len(self.cunet_widths) != 5 or any(w <= 0 for w in self.cunet_widths):
            raise ValueError(f"cunet_widths must be five positive channel counts, got {self.cunet_widths}.")
        if self.cunet_weights not in ("shared", "per_modality"):
            raise ValueError(f"cunet_weights must be 'shared' or 'per_modality', got {self.cunet_weights!r}.")
        if not self.gmn_scales or any(s not in (1, 2, 4, 8, 16) for s in self.gmn_scales):
            raise ValueError(f"gmn_scales must be powers of two dividing 16, got {self.gmn_scales}.")
        if list(self.gmn_scales) != sorted(self.gmn_scales, reverse=True) or len(set(self.gmn_scales)) != len(
            self.gmn_scales
        ):
            raise ValueError(f"gmn_scales must be distinct and ordered coarse to fine, got {self.gmn_scales}.")
        if self.segmenter_input not in ("features_and_fused", "fused_only"):
            raise ValueError(f"segmenter_input must be 'features_and_fused' or 'fused_only', got {self.segmenter_input!r}.")
        if len(self.modalities) != 4:
            raise ValueError(f"NSLF fuses exactly four modalities, got {self.modalities}.")
        if self.feature_stride not in (1, 2):
            raise ValueError(f"feature_stride must be 1 (the paper's full resolution) or 2, got {self.feature_stride!r}.")
        if self.segmentation_output not in ("classes", "regions"):
            raise ValueError(f"segmentation_output must be 'classes' or 'regions', got {self.segmentation_output!r}.")
        if self.cunet_widths[4] % 8:
            raise ValueError("cunet_widths[4] (the global width) must be a multiple of 8 for the GMN's GroupNorm.")

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (the feature stride, then four 2x down-samplings); inputs are padded to it."""
        return 16 * self.feature_stride

    @property
    def output_channels(self) -> int:
        """Channels of the FSD's output: ``num_classes`` for ``"classes"``, 3 (WT, TC, ET) for ``"regions"``."""
        return self.num_classes if self.segmentation_output == "classes" else 3

    @property
    def local_width(self) -> int:
        """Channels of the CU-Net "local" feature (full resolution)."""
        return self.cunet_widths[0]

    @property
    def global_width(self) -> int:
        """Channels of the CU-Net "global" feature (bottleneck, 1/16 resolution)."""
        return self.cunet_widths[4]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dictionary (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NSLFConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused so a typo is never ignored."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown NSLF configuration keys {unknown}; known keys are {sorted(known)}.")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> NSLFConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> NSLFConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


PRESETS: dict[str, NSLFConfig] = {
    "paper": NSLFConfig(name="paper"),
    "compact": NSLFConfig(name="compact", cunet_widths=(8, 16, 32, 64, 64), fsd_widths=(16, 8), gmn_flow_width=8),
    "fast": NSLFConfig(
        name="fast", cunet_widths=(8, 16, 32, 64, 64), fsd_widths=(16, 8), gmn_flow_width=8, feature_stride=2
    ),
}


def get_config(name_or_path: str) -> NSLFConfig:
    """A preset by name (``paper``, ``compact``) or a configuration read from a JSON file."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    from pathlib import Path

    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        try:
            return NSLFConfig.from_json(path.read_text())
        except Exception as error:  # malformed JSON, a list, wrong field types: say which file
            raise ValueError(f"Configuration file {path} is not a valid NSLF configuration ({error}); "
                             "start from a preset's JSON (NSLFConfig.to_json).") from None  # fmt: skip
    raise ValueError(f"Unknown configuration {name_or_path!r}: use one of {sorted(PRESETS)} or a path to a .json file.")
