"""CU-Net: the paper's 3-D U-Net feature extractor, applied to every modality.

Encoder: :class:`~nslfcore.models.blocks.DoubleConv` at full resolution, then four levels of
MaxPool3d(2) + DoubleConv (widths ``w0..w4``, 32-64-128-256-256 in the paper). Decoder: four
:class:`~nslfcore.models.blocks.UpBlock` back to ``w0``. Outputs:

* ``global_features``: the bottleneck (``w4`` channels, 1/16 resolution);
* ``local_features``: the last decoder feature (``w0`` channels, full resolution);
* ``reconstruction``: 1x1x1 convolution + sigmoid of the local feature (stage-1 target: the input).

All modalities go through the network in ONE call. With shared weights (the public code) the
modalities are stacked on the batch axis; with per-modality weights (the paper's "group of
U-Nets") every layer is a grouped convolution holding one U-Net per modality.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nslfcore.models.blocks import DoubleConv, UpBlock


class CUNetOutput(NamedTuple):
    """CU-Net outputs for ``M`` images per batch item; spatial axes ``(z, y, x)``.

    Attributes:
        global_features: ``(B, M, w4, D/16, H/16, W/16)``.
        local_features: ``(B, M, w0, D, H, W)``.
        reconstruction: ``(B, M, D, H, W)`` in ``[0, 1]``.
    """

    global_features: torch.Tensor
    local_features: torch.Tensor
    reconstruction: torch.Tensor


class CUNet(nn.Module):
    """The CU-Net feature extractor.

    Args:
        widths: channels of the five levels ``(w0, w1, w2, w3, w4)``, full resolution first.
        num_modalities: number of images ``M`` per batch item.
        per_modality: one U-Net per modality (grouped convolutions) instead of one shared U-Net.

    Input ``x`` is ``(B, M, D, H, W)`` (spatial ``(z, y, x)``, sizes divisible by 16). With
    per-modality weights ``M`` must equal ``num_modalities``; with shared weights any ``M`` works.

    Example:
        >>> net = CUNet((8, 16, 32, 64, 64), num_modalities=4, per_modality=True)
        >>> out = net(torch.rand(1, 4, 16, 32, 32))
        >>> tuple(out.local_features.shape)
        (1, 4, 8, 16, 32, 32)
    """

    def __init__(self, widths: tuple[int, int, int, int, int], num_modalities: int = 4, per_modality: bool = False):
        super().__init__()
        w0, w1, w2, w3, w4 = widths  # five levels, full resolution first
        self.widths = (w0, w1, w2, w3, w4)
        self.num_modalities = num_modalities
        self.per_modality = per_modality
        g = num_modalities if per_modality else 1
        self.groups = g
        w = self.widths
        self.encoder = nn.ModuleList([DoubleConv(1, w[0], g)] + [DoubleConv(w[i - 1], w[i], g) for i in range(1, 5)])
        # Decoder level k (k = 1..4) takes the coarser output, skips w[4-k] and outputs w[max(3-k, 0)].
        decoder = []
        coarse = w[4]
        for k in range(1, 5):
            out = w[max(3 - k, 0)]
            decoder.append(UpBlock(coarse, w[4 - k], out, g))
            coarse = out
        self.decoder = nn.ModuleList(decoder)
        self.reconstruction_head = nn.Conv3d(g * w[0], g, kernel_size=1, groups=g)

    def forward(self, x: torch.Tensor) -> CUNetOutput:
        b, m = x.shape[:2]
        spatial = x.shape[2:]
        if self.per_modality:
            if m != self.num_modalities:
                raise ValueError(f"This CU-Net holds {self.num_modalities} per-modality U-Nets but got {m} images.")
            h = x  # (B, M, ...) is already M groups of one channel
        else:
            h = x.reshape(b * m, 1, *spatial)  # modalities on the batch axis
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                h = F.max_pool3d(h, 2)
            h = block(h)
            skips.append(h)
        bottleneck = h
        for k, block in enumerate(self.decoder, start=1):
            h = block(h, skips[4 - k])
        recon = torch.sigmoid(self.reconstruction_head(h))
        return CUNetOutput(
            global_features=_split_images(bottleneck, b, m),
            local_features=_split_images(h, b, m),
            reconstruction=recon.reshape(b, m, *spatial),
        )

    def split_modalities(self) -> list[CUNet]:
        """This network's U-Nets as separate single-image networks, one per modality, in order.

        Shared weights: the network itself, once per modality. Per-modality weights: every
        parameter and buffer (convolution, transposed convolution, BatchNorm, reconstruction head)
        stores the groups as consecutive blocks along its first axis, so network ``i`` gets block
        ``i`` of each; applied to modality ``i`` alone it gives exactly that modality's features.
        The copies are on this network's device, with its dtype, memory format and training mode.
        """
        if not self.per_modality:
            return [self] * self.num_modalities
        state = self.state_dict()
        first = next(self.parameters())
        weight = next(p for p in self.parameters() if p.dim() == 5)  # a convolution weight: its memory format is the network's
        channels_last = weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()
        memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        nets = []
        for index in range(self.num_modalities):
            net = CUNet(self.widths, num_modalities=1, per_modality=False).to(device=first.device, dtype=first.dtype)
            net = net.to(memory_format=memory_format)  # type: ignore[call-overload]  # as fast as this network
            net.load_state_dict({k: v if v.ndim == 0 else v.chunk(self.num_modalities, dim=0)[index] for k, v in state.items()})
            nets.append(net.train(self.training))
        return nets

    def extract_single(self, image: torch.Tensor) -> CUNetOutput:
        """Features of one extra image per batch item (the fused volume in the GMN).

        ``image`` is ``(B, 1, D, H, W)``. With shared weights this is a plain call. With per-modality
        weights the image goes through every modality's U-Net in one grouped call and the
        features are averaged (the fused volume is a convex combination of all modalities).
        Returned tensors have ``M = 1``.
        """
        if not self.per_modality:
            return self(image)
        out = self(image.expand(-1, self.num_modalities, *image.shape[2:]))
        return CUNetOutput(*(t.mean(dim=1, keepdim=True) for t in out))


def _split_images(t: torch.Tensor, b: int, m: int) -> torch.Tensor:
    """``(B*M, C, ...)`` or ``(B, M*C, ...)`` (both contiguous per image) to ``(B, M, C, ...)``."""
    return t.reshape(b, m, -1, *t.shape[2:])
