"""Multiply-accumulates of NSLF's configurations and the peers on the peer benchmark's brain box.

Counts the convolutions (``Conv3d``: output voxels x input channels per group x kernel volume x
output channels; ``ConvTranspose3d``: input voxels x output channels per group x kernel volume x
input channels) of one ``fuse_and_segment`` / forward pass with forward hooks on a 64^3 input and
scales them by the voxel ratio to the peer benchmark's box 155 x 181 x 139 (z, y, x; all these
networks are fully convolutional, so the count is linear in voxels up to padding). Element-wise
layers, resampling and normalisation are not counted (they cost memory traffic, not MACs).

    python benchmarks/network_macs.py     # -> benchmarks/results/network_macs.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from monai.networks.nets import SegResNet

from nslfcore.config import PRESETS
from nslfcore.models import NSLF

BOX = (155, 181, 139)
PROBE = 64
RESULTS = Path(__file__).parent / "results"


def conv_macs(model: torch.nn.Module, call) -> int:
    """MACs of the convolutions ``call()`` runs in ``model`` (batch 1)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kernel = int(torch.tensor(module.kernel_size).prod())
        if isinstance(module, torch.nn.ConvTranspose3d):
            total += inputs[0][0].numel() * (module.out_channels // module.groups) * kernel
        elif isinstance(module, torch.nn.Conv3d):
            total += output[0].numel() * (module.in_channels // module.groups) * kernel

    convolutions = (torch.nn.Conv3d, torch.nn.ConvTranspose3d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convolutions)]
    with torch.inference_mode():
        call()
    for handle in handles:
        handle.remove()
    return total


def main() -> None:
    x = torch.rand(1, 4, PROBE, PROBE, PROBE)
    scale = BOX[0] * BOX[1] * BOX[2] / PROBE**3
    result: dict[str, float] = {}
    for name in ("paper", "compact", "fast"):
        model = NSLF(PRESETS[name]).eval()
        result[f"nslf-{name}"] = conv_macs(model, lambda m=model: m.fuse_and_segment(x)) * scale / 1e9
    for init, blocks in ((16, (1, 2, 2, 4)), (32, (1, 2, 2, 4, 4))):
        net = SegResNet(spatial_dims=3, init_filters=init, in_channels=4, out_channels=3, blocks_down=blocks,
                        blocks_up=(1,) * (len(blocks) - 1)).eval()  # fmt: skip
        result[f"segresnet{init}"] = conv_macs(net, lambda n=net: n(x)) * scale / 1e9
    path = RESULTS / "network_macs.json"
    path.write_text(json.dumps({"box_zyx": BOX, "gmac": result}, indent=2))
    for name, gmac in result.items():
        print(f"{name}: {gmac:.1f} GMAC")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
