"""The segmentation baselines of the paper's comparison, one network class per architecture.

Each is a segmentation-only :class:`~nslfcore.models.interface.Network`: the four normalised
modalities stacked as channels, ``(B, 4, D, H, W)`` in ``nslfcore.MODALITIES`` order, intensities
in ``[0, 1]``, to logits ``(B, 4, D, H, W)`` of the same four classes as NSLF's FSD (background,
NCR, edema, ET), spatial axes ``(z, y, x)``. They are trained the same way
(:func:`nslfcore.baseline.train_baseline`) and scored by the same inference path as NSLF.

Sizes are chosen so that each has within a factor 1.5 of the parameters of the ``compact`` NSLF
(3,407,898) where the architecture allows it (:data:`PARAMETERS`, checked by the tests):

==================  =======================  ============================  ==========  ======
``--arch``          class                    widths                        parameters  x NSLF
==================  =======================  ============================  ==========  ======
``unet``            MONAI BasicUNet          16-32-64-128-128, decoder 16   3,472,132    1.02
``vnet``            MONAI VNet               16-32-64-128-256 (fixed)      45,611,916    13.4
``attention_unet``  MONAI AttentionUnet      16-32-64-128-128               3,697,852    1.09
``unetplusplus``    MONAI BasicUNetPlusPlus  16-32-64-128-128, decoder 16   4,411,908    1.29
``segresnet``       MONAI SegResNet          16 initial filters             4,702,244    1.38
``voxresnet``       VoxResNet                32, 64 (the paper's)           2,833,808    0.83
==================  =======================  ============================  ==========  ======

* ``unet`` is the classic 3-D U-Net layout (two Conv3d + BatchNorm + ReLU per level, four
  down-samplings, transposed-convolution up-sampling; Ronneberger et al. 2015, Cicek et al. 2016),
  MONAI's ``BasicUNet``. (MONAI's ``UNet`` class is a residual-unit, strided-convolution variant;
  ``BasicUNet`` is the plain one, and files written before the architectures became a choice hold it.)
* ``unetplusplus`` is U-Net++ (Zhou et al. 2018), MONAI's ``BasicUNetPlusPlus`` with the same
  widths, activation and normalisation as ``unet``: the two differ only in the nested skip
  connections (no deep supervision: MONAI's three unused deep-supervision heads are replaced by identities).
* ``attention_unet`` is Attention U-Net (Oktay et al. 2018), four down-samplings.
* ``segresnet`` is SegResNet (Myronenko 2018) without its variational auto-encoder branch.
* ``vnet`` is V-Net (Milletari et al. 2016) with MONAI's defaults (ELU, dropout 0.5); its widths are
  fixed by the architecture (MONAI's ``VNet`` has no width argument), hence 13x NSLF's parameters.
* ``voxresnet`` is :class:`nslfcore.voxresnet.VoxResNet` (Chen et al. 2018) at the paper's widths.

Networks that need spatial sizes divisible by ``2^levels`` zero-pad their input symmetrically to
:attr:`SegmentationBaseline.size_multiple` and crop the logits back, so whole-volume inference
works on any brain box (BasicUNet and BasicUNetPlusPlus handle any size themselves).

A model file (:func:`nslfcore.model_store.save_model`) stores ``kind`` ``"baseline"``, ``arch``
(the ``--arch`` name), ``architecture`` (the class) and ``features`` (the widths, as in the table);
:func:`baseline_from_fields` rebuilds the network. A file without ``arch`` is a ``unet`` one.

Example:
    >>> net = build_baseline("voxresnet").eval()
    >>> tuple(net(torch.rand(1, 4, 32, 32, 32)).shape)
    (1, 4, 32, 32, 32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus, SegResNet, VNet
from torch import nn

from nslfcore.config import SegmentationOutput
from nslfcore.models.nslf import _crop, _pad_to_multiple
from nslfcore.voxresnet import PAPER_WIDTHS, VoxResNet

#: The ``kind`` of a segmentation-baseline model file (an NSLF model file has ``"weights"``).
KIND = "baseline"


class SegmentationBaseline(nn.Module):
    """What every baseline adds to its network: the :class:`~nslfcore.models.interface.Network` interface.

    Subclasses list this class first and the network class second, so the weights keep the
    network's own names. Class attributes: ``arch`` (the ``--arch`` name), ``architecture`` (the
    network class, stored in model files), ``title`` (the paper's row name), ``size_multiple`` (input
    sizes are zero-padded to multiples of it), ``bytes_per_feature`` (activation memory of one
    whole-volume pass per voxel and unit of the first width: the peak resident memory of a
    64^3 pass on a CPU, measured, times 1.5; the U-Net keeps the bound of earlier versions, so its
    files choose the same inference mode as before).
    """

    arch: ClassVar[str]
    architecture: ClassVar[str]
    title: ClassVar[str]
    size_multiple: ClassVar[int] = 1
    bytes_per_feature: ClassVar[int] = 32
    fuses = False
    segments = True
    sequential = False
    segmentation_output: SegmentationOutput = "classes"
    features: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 4, D, H, W)`` of ``x`` ``(B, 4, D, H, W)``, on ``x``'s grid."""
        padded, crop = _pad_to_multiple(x, self.size_multiple)
        logits = super().forward(padded)
        if isinstance(logits, (list, tuple)):  # BasicUNetPlusPlus: a list of outputs, the last one is the network's
            logits = logits[-1]
        return _crop(logits, crop)

    def predict(
        self, x: torch.Tensor, segment: bool = True, sequential: bool = False, present: torch.Tensor | None = None
    ) -> tuple[None, torch.Tensor]:
        """``(None, logits (B, 4, D, H, W))``: no fused volume; the logits whatever ``segment`` and ``sequential`` say.

        ``present`` is not used: a missing sequence reaches the network as the all-zero channel it is in ``x``.
        """
        return None, self(x)

    def inference_bytes_per_voxel(self, sequential: bool = False) -> int:
        """A safe upper bound of the float32 activation memory of one whole-volume pass per voxel."""
        first = self.features[0] if self.features else 16
        return self.bytes_per_feature * first + 64

    def checkpoint_fields(self) -> dict[str, Any]:
        """``kind``, ``arch``, ``architecture`` and ``features``: what a model file stores besides the weights."""
        return {"kind": KIND, "arch": self.arch, "architecture": self.architecture, "features": list(self.features)}


class _BasicUNetFamily(SegmentationBaseline):
    """MONAI's ``BasicUNet`` and ``BasicUNetPlusPlus`` as baselines: ReLU, BatchNorm, transposed-convolution up-sampling.

    ``features``: five encoder widths and the last decoder width.
    """

    def __init__(self, features: tuple[int, ...] = (16, 32, 64, 128, 128, 16)) -> None:
        super().__init__(
            spatial_dims=3, in_channels=4, out_channels=4, features=tuple(features), act="relu", norm="batch", upsample="deconv"
        )
        self.features = tuple(int(f) for f in features)


class BaselineUNet(_BasicUNetFamily, BasicUNet):
    """The plain 3-D U-Net (MONAI ``BasicUNet``)."""

    arch, architecture, title = "unet", "BasicUNet", "U-Net"
    bytes_per_feature = 32


class BaselineUNetPlusPlus(_BasicUNetFamily, BasicUNetPlusPlus):
    """U-Net++ (MONAI ``BasicUNetPlusPlus``, the U-Net's widths, activation and normalisation; no deep supervision)."""

    arch, architecture, title = "unetplusplus", "BasicUNetPlusPlus", "U-Net++"
    bytes_per_feature = 176

    def __init__(self, features: tuple[int, ...] = (16, 32, 64, 128, 128, 16)) -> None:
        super().__init__(features)
        # MONAI runs its three deep-supervision heads even without deep supervision and drops their outputs.
        self.final_conv_0_1 = self.final_conv_0_2 = self.final_conv_0_3 = nn.Identity()


class BaselineAttentionUNet(SegmentationBaseline, AttentionUnet):
    """Attention U-Net (MONAI ``AttentionUnet``; ``features``: the widths of its five levels, stride 2 between them)."""

    arch, architecture, title = "attention_unet", "AttentionUnet", "Attention U-Net"
    size_multiple = 16
    bytes_per_feature = 64

    def __init__(self, features: tuple[int, ...] = (16, 32, 64, 128, 128)) -> None:
        super().__init__(
            spatial_dims=3, in_channels=4, out_channels=4, channels=tuple(features), strides=(2,) * (len(features) - 1)
        )
        self.features = tuple(int(f) for f in features)


class BaselineVNet(SegmentationBaseline, VNet):
    """V-Net (MONAI ``VNet``, its default activation and dropout; fixed widths, so ``features`` is empty)."""

    arch, architecture, title = "vnet", "VNet", "V-Net"
    size_multiple = 16
    bytes_per_feature = 52

    def __init__(self, features: tuple[int, ...] = ()) -> None:
        if tuple(features):
            raise ValueError(f"V-Net's widths are fixed (16-32-64-128-256); got features {tuple(features)}.")
        super().__init__(spatial_dims=3, in_channels=4, out_channels=4)
        self.features = ()


class BaselineSegResNet(SegmentationBaseline, SegResNet):
    """SegResNet (MONAI ``SegResNet``, its default blocks and group norm; ``features``: the initial filters)."""

    arch, architecture, title = "segresnet", "SegResNet", "SegResNet"
    size_multiple = 8
    bytes_per_feature = 48

    def __init__(self, features: tuple[int, ...] = (16,)) -> None:
        (init_filters,) = features
        super().__init__(spatial_dims=3, in_channels=4, out_channels=4, init_filters=int(init_filters))
        self.features = (int(init_filters),)


class BaselineVoxResNet(SegmentationBaseline, VoxResNet):
    """VoxResNet (:class:`nslfcore.voxresnet.VoxResNet`; ``features``: the stem and residual widths)."""

    arch, architecture, title = "voxresnet", "VoxResNet", "VoxResNet"
    size_multiple = 8
    bytes_per_feature = 24

    def __init__(self, features: tuple[int, ...] = PAPER_WIDTHS) -> None:
        stem, width = features
        super().__init__(4, 4, (int(stem), int(width)))
        self.features = (int(stem), int(width))


#: The baselines by ``--arch`` name, in the paper's order of its comparison table, SegResNet added.
BASELINES: dict[str, type[SegmentationBaseline]] = {
    cls.arch: cls
    for cls in (BaselineUNet, BaselineVoxResNet, BaselineVNet, BaselineAttentionUNet, BaselineUNetPlusPlus, BaselineSegResNet)
}
#: The ``--arch`` names.
ARCHITECTURES: tuple[str, ...] = tuple(BASELINES)
#: Parameters of each baseline at its default widths (the table above).
PARAMETERS: dict[str, int] = {
    "unet": 3_472_132,
    "vnet": 45_611_916,
    "attention_unet": 3_697_852,
    "unetplusplus": 4_411_908,
    "segresnet": 4_702_244,
    "voxresnet": 2_833_808,
}


def build_baseline(arch: str, features: tuple[int, ...] | None = None) -> SegmentationBaseline:
    """The untrained baseline ``arch`` (:data:`ARCHITECTURES`) with ``features`` (default: the table's widths)."""
    if arch not in BASELINES:
        raise ValueError(f"Unknown baseline architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    cls = BASELINES[arch]
    return cls() if features is None else cls(tuple(features))


def baseline_from_fields(fields: Mapping[str, Any]) -> SegmentationBaseline:
    """The untrained baseline a model file describes (``arch``, default ``"unet"``; ``architecture``; ``features``).

    Raises ``ValueError`` (one sentence) when ``arch`` is unknown or ``architecture`` is not its class.
    """
    arch = fields.get("arch", "unet")  # files written before the architectures became a choice
    if arch not in BASELINES:
        raise ValueError(f"it holds an unknown baseline architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    if fields.get("architecture") != BASELINES[arch].architecture:
        raise ValueError(f"it holds a {fields.get('architecture')!r} network, not the {BASELINES[arch].architecture} of {arch!r}")
    return build_baseline(arch, tuple(fields["features"]))
