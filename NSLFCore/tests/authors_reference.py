"""An independent re-statement of the NSLF authors' UNet / FuseNet / SegNet forward passes.

Used only by the tests of :mod:`nslfcore.compat`: state-dict key names and shapes as the authors'
checkpoints hold them, random weights in that format, and their forward pass written with
``torch.nn.functional`` on their array layout (spatial axes ``(y, x, z)``, modalities stacked
``(flair, t1ce, t1, t2)``), in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WIDTHS = (32, 64, 128, 256, 256)


def _conv(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (cout, cin, k, k, k), f"{prefix}.bias": (cout,)}


def _convt(prefix: str, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (cin, cout, 2, 2, 2), f"{prefix}.bias": (cout,)}


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def _double(prefix: str, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    return _conv(f"{prefix}.0", cin, cout, 3) | _bn(f"{prefix}.1", cout) | _conv(f"{prefix}.3", cout, cout, 3) | _bn(
        f"{prefix}.4", cout
    )


def _unet_body(in_ch: int) -> dict[str, tuple[int, ...]]:
    w = WIDTHS
    shapes = _double("inc.conv.conv", in_ch, w[0])
    for i in range(1, 5):
        shapes |= _double(f"down{i}.mpconv.1.conv", w[i - 1], w[i])
    coarse = w[4]
    for k in range(1, 5):
        out = w[max(3 - k, 0)]
        shapes |= _convt(f"up{k}.up", coarse, coarse) | _double(f"up{k}.conv.conv", coarse + w[4 - k], out)
        coarse = out
    return shapes


def unet_shapes() -> dict[str, tuple[int, ...]]:
    return _unet_body(1) | _conv("outc.conv", 32, 1, 1)


def fusenet_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    chans = [256, 128, 64, 32, 32]
    for s in range(4):
        i = 4 * s
        shapes |= _convt(f"up1.{i}", chans[s], chans[s]) | _conv(f"up1.{i + 1}", chans[s], chans[s + 1], 3)
        shapes |= _bn(f"up1.{i + 2}", chans[s + 1])
    shapes |= _conv("d_conv.0", 64, 1, 3)
    # The unused branch: Conv3d(128, 64) + GroupNorm(16, 64) + Conv3d(64, 1).
    shapes |= _conv("F_conv.0", 128, 64, 3) | {"F_conv.1.weight": (64,), "F_conv.1.bias": (64,)}
    shapes |= _conv("F_conv.3", 64, 1, 3)
    return shapes


def segnet_shapes() -> dict[str, tuple[int, ...]]:
    return _unet_body(4) | _conv("outc.conv", 33, 4, 1) | _double("inc1.conv.conv", 128, 64) | _double(
        "inc2.conv.conv", 64, 32
    )


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors in the given shapes: He-scaled convolutions, non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            out[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # BatchNorm / GroupNorm weight
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = shape[1] * (shape[2] * shape[3] * shape[4] if len(shape) == 5 else 1)
            if "up.weight" in key or (key.startswith("up1.") and shape[-1] == 2):  # transposed convs
                fan_in = shape[0]
            out[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return out


def _bn_eval(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False)


def _double_fwd(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    x = F.relu(_bn_eval(F.conv3d(x, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"], padding=1), sd, f"{p}.1"))
    return F.relu(_bn_eval(F.conv3d(x, sd[f"{p}.3.weight"], sd[f"{p}.3.bias"], padding=1), sd, f"{p}.4"))


def unet_forward(sd: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The authors' ``UNet.forward``: returns (bottleneck, last decoder feature, sigmoid reconstruction)."""
    x1 = _double_fwd(x, sd, "inc.conv.conv")
    feats = [x1]
    for i in range(1, 5):
        feats.append(_double_fwd(F.max_pool3d(feats[-1], 2), sd, f"down{i}.mpconv.1.conv"))
    h = feats[4]
    for k in range(1, 5):
        up = F.conv_transpose3d(h, sd[f"up{k}.up.weight"], sd[f"up{k}.up.bias"], stride=2)
        h = _double_fwd(torch.cat([feats[4 - k], up], dim=1), sd, f"up{k}.conv.conv")
    recon = torch.sigmoid(F.conv3d(h, sd["outc.conv.weight"], sd["outc.conv.bias"]))
    return feats[4], h, recon


def fusenet_forward(sd: dict, globals_: list[torch.Tensor], locals_: list[torch.Tensor]) -> list[torch.Tensor]:
    """The authors' ``FuseNet.forward``: normalised weights wA..wD (eps 1e-7)."""
    raw = []
    for g, loc in zip(globals_, locals_):
        h = g
        for s in range(4):
            i = 4 * s
            h = F.conv_transpose3d(h, sd[f"up1.{i}.weight"], sd[f"up1.{i}.bias"], stride=2)
            h = F.conv3d(h, sd[f"up1.{i + 1}.weight"], sd[f"up1.{i + 1}.bias"], padding=1)
            h = F.relu(_bn_eval(h, sd, f"up1.{i + 2}"))
        raw.append(torch.sigmoid(F.conv3d(torch.cat((h, loc), 1), sd["d_conv.0.weight"], sd["d_conv.0.bias"], padding=1)))
    total = sum(raw) + 1e-7
    return [w / total for w in raw]


def segnet_forward(sd: dict, locals_: list[torch.Tensor], fused: torch.Tensor) -> torch.Tensor:
    """The authors' ``SegNet.forward(x1l, x2l, x3l, x4l, f)``."""
    x = _double_fwd(torch.cat(locals_, dim=1), sd, "inc1.conv.conv")
    x = _double_fwd(x, sd, "inc2.conv.conv")
    return F.conv3d(torch.cat((x, fused), 1), sd["outc.conv.weight"], sd["outc.conv.bias"])


def authors_pipeline(unet: dict, fusenet: dict, segnet: dict, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Their test-time procedure on one window: ``images`` (1, 4, Y, X, Z) in (flair, t1ce, t1, t2) order.

    Returns (fused (1, 1, Y, X, Z), logits (1, 4, Y, X, Z)).
    """
    xs = [images[:, i : i + 1] for i in range(4)]
    outs = [unet_forward(unet, x) for x in xs]
    weights = fusenet_forward(fusenet, [o[0] for o in outs], [o[1] for o in outs])
    fused = sum(w * x for w, x in zip(weights, xs))
    return fused, segnet_forward(segnet, [o[1] for o in outs], fused)
