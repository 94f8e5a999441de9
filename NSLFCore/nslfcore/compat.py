"""Load the NSLF authors' released checkpoints into our ``paper`` model.

The authors' public code (github ImZhangyYing/NLSF) saves PyTorch files holding a state dict under
``'model'``, ``'unet'`` or ``'fusenet'`` (plus optimiser states) for three classes:

* ``UNet(1)`` -> our CU-Net (``inc``, ``down1..4``, ``up1..4``, ``outc``);
* ``FuseNet`` -> our FCD (``up1`` up-sampler and ``d_conv`` weight head; its ``F_conv`` branch is
  never run and is skipped);
* ``SegNet`` -> our FSD (``inc1``, ``inc2``, ``outc``; its full U-Net ``inc``/``down*``/``up*`` is
  never run and is skipped).

Which class a state dict belongs to is read from its keys, since ``'model'`` is used for all three.
Skipped keys are reported (returned and logged), never dropped silently; any other key left over,
or any of our tensors left without a value, is an error.

Two layout differences are converted, so that with the same weights our model computes exactly
what the authors' forward pass computes:

* **Axis order.** The authors' arrays are ``SimpleITK_array.transpose(1, 2, 0)``, i.e. spatial
  axes ``(y, x, z)``; ours are SimpleITK's ``(z, y, x)``. Every 3-D kernel's spatial axes are
  permuted the same way as the data: ``ours = theirs.permute(0, 1, 4, 2, 3)``.
* **Modality order.** The authors stack ``(flair, t1ce, t1, t2)``; ours is
  ``config.modalities`` (default ``(t1, t1ce, t2, flair)``). CU-Net (shared) and FCD treat every
  modality alike; the FSD's first convolution sees the modalities' features concatenated, so its
  input-channel blocks are reordered.

Shared CU-Net weights load into a per-modality CU-Net by copying them into every modality's
U-Net (identical computation). The GMN has no released weights and keeps its identity start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from nslfcore.config import PRESETS
from nslfcore.models import NSLF

logger = logging.getLogger(__name__)

#: Modality order of the channel axis in the authors' code.
AUTHORS_MODALITIES: tuple[str, str, str, str] = ("flair", "t1ce", "t1", "t2")

Network = Literal["unet", "fusenet", "segnet"]

# (authors' key pattern, our key template); groups of the pattern fill the template.
_KEY_RULES: dict[Network, list[tuple[str, str]]] = {
    "unet": [
        (r"inc\.conv\.conv\.(.+)", "cunet.encoder.0.{0}"),
        (r"down([1-4])\.mpconv\.1\.conv\.(.+)", "cunet.encoder.{0}.{1}"),
        (r"up([1-4])\.up\.(.+)", "cunet.decoder.{0-1}.up.{1}"),
        (r"up([1-4])\.conv\.conv\.(.+)", "cunet.decoder.{0-1}.conv.{1}"),
        (r"outc\.conv\.(.+)", "cunet.reconstruction_head.{0}"),
    ],
    "fusenet": [
        (r"up1\.(.+)", "fcd.upsample.{0}"),
        (r"d_conv\.0\.(.+)", "fcd.weight_head.0.{0}"),
    ],
    "segnet": [
        (r"inc1\.conv\.conv\.(.+)", "fsd.blocks.0.{0}"),
        (r"inc2\.conv\.conv\.(.+)", "fsd.blocks.1.{0}"),
        (r"outc\.conv\.(.+)", "fsd.classifier.{0}"),
    ],
}

# Branches the authors' classes hold but never run in their forward pass.
_UNUSED_BRANCHES: dict[Network, str] = {
    "unet": r"$^",
    "fusenet": r"F_conv\.",
    "segnet": r"(inc|down[1-4]|up[1-4])\.",
}

_OUR_PREFIX: dict[Network, str] = {"unet": "cunet.", "fusenet": "fcd.", "segnet": "fsd."}


@dataclass
class CompatReport:
    """What :func:`load_authors_checkpoints` did.

    Attributes:
        loaded: per authors' network, the authors' keys copied into our model.
        skipped: the authors' keys of never-run branches that were not loaded.
    """

    loaded: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def identify_network(state_dict: Mapping[str, torch.Tensor]) -> Network:
    """Which of the authors' classes (``unet``, ``fusenet``, ``segnet``) ``state_dict`` belongs to."""
    if "d_conv.0.weight" in state_dict:
        return "fusenet"
    if "inc1.conv.conv.0.weight" in state_dict:
        return "segnet"
    if "inc.conv.conv.0.weight" in state_dict and "outc.conv.weight" in state_dict:
        return "unet"
    raise ValueError(
        "The state dict is none of the NSLF authors' UNet, FuseNet or SegNet "
        f"(first keys: {list(state_dict)[:4]})."
    )


def authors_to_ours_spatial(t: torch.Tensor) -> torch.Tensor:
    """A 5-D tensor with the authors' spatial axes ``(y, x, z)`` to ours ``(z, y, x)``."""
    return t.permute(0, 1, 4, 2, 3)


def ours_to_authors_spatial(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`authors_to_ours_spatial`."""
    return t.permute(0, 1, 3, 4, 2)


def _our_key(network: Network, key: str) -> str | None:
    for pattern, template in _KEY_RULES[network]:
        match = re.fullmatch(pattern, key)
        if match:
            groups = match.groups()
            # "{0-1}" in a template means "first group minus one" (authors count blocks from 1).
            if "{0-1}" in template:
                template = template.replace("{0-1}", str(int(groups[0]) - 1))
            return template.format(*groups)
    return None


def _extract_state_dicts(obj: object, origin: str) -> list[tuple[str, Mapping[str, torch.Tensor]]]:
    """The state dicts inside one loaded checkpoint (a state dict itself, or a dict of them)."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return [(origin, obj)]
    found = []
    if isinstance(obj, Mapping):
        for name in ("model", "unet", "fusenet"):
            value = obj.get(name)
            if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
                found.append((f"{origin}['{name}']", value))
    if not found:
        raise ValueError(f"{origin} holds no state dict under 'model', 'unet' or 'fusenet'; is it an NSLF checkpoint?")
    return found


def _convert(
    network: Network, our_key: str, tensor: torch.Tensor, target: torch.Tensor, model: NSLF
) -> torch.Tensor:
    t = tensor.detach().to(dtype=target.dtype)
    if t.ndim == 5:
        t = authors_to_ours_spatial(t)
    if network == "segnet" and our_key == "fsd.blocks.0.0.weight":
        t = _reorder_modality_blocks(t, model.config.modalities)
    if network == "unet" and model.cunet.per_modality and t.ndim >= 1:
        t = torch.cat([t] * model.cunet.groups, dim=0)  # the shared U-Net copied into every modality's
    if t.shape != target.shape:
        raise ValueError(
            f"The authors' tensor for {our_key} has shape {tuple(t.shape)} after conversion but the model expects "
            f"{tuple(target.shape)}; build the model with the 'paper' configuration."
        )
    return t


def _reorder_modality_blocks(weight: torch.Tensor, modalities: tuple[str, ...]) -> torch.Tensor:
    """Reorder the input-channel blocks of the FSD's first convolution from the authors' modality order to ours."""
    blocks = weight.chunk(len(AUTHORS_MODALITIES), dim=1)
    try:
        return torch.cat([blocks[AUTHORS_MODALITIES.index(m)] for m in modalities], dim=1)
    except ValueError as error:
        raise ValueError(f"Cannot map modalities {modalities} onto the authors' {AUTHORS_MODALITIES}.") from error


def load_authors_checkpoints(model: NSLF, *checkpoints: str | Path | Mapping) -> CompatReport:
    """Copy the weights of the authors' checkpoint files (or already-loaded dicts) into ``model``.

    Args:
        model: an :class:`NSLF` with the ``paper`` widths (shared or per-modality CU-Net).
        checkpoints: paths to ``.pth`` files (read with ``torch.load(weights_only=True)``) or loaded
            objects; together they may hold the UNet, FuseNet and SegNet in any order.

    Returns:
        A :class:`CompatReport`; skipped keys of unused branches are also logged as a warning.

    Raises:
        ValueError: an unknown network, a key we cannot place, a shape mismatch, the same network
            given twice, or a network whose tensors do not cover our part completely.
    """
    if model.config.segmenter_input != "features_and_fused":
        raise ValueError("The authors' SegNet sees the modalities' features; use segmenter_input='features_and_fused'.")
    targets = model.state_dict()
    new_values: dict[str, torch.Tensor] = {}
    report = CompatReport()
    for index, item in enumerate(checkpoints):
        origin = str(item) if isinstance(item, (str, Path)) else f"checkpoint #{index + 1}"
        obj = torch.load(item, map_location="cpu", weights_only=True) if isinstance(item, (str, Path)) else item
        for where, state_dict in _extract_state_dicts(obj, origin):
            network = identify_network(state_dict)
            if network in report.loaded:
                raise ValueError(f"{where} holds a second {network}; give each network once.")
            unused = re.compile(_UNUSED_BRANCHES[network])
            loaded: list[str] = []
            for key, tensor in state_dict.items():
                our_key = _our_key(network, key)
                if our_key is None:
                    if unused.match(key):
                        report.skipped.append(f"{network}:{key}")
                        continue
                    raise ValueError(f"{where}: the key {key!r} of the authors' {network} has no place in NSLF.")
                if our_key not in targets:
                    raise ValueError(f"{where}: {key!r} maps to {our_key!r}, which this model does not have.")
                new_values[our_key] = _convert(network, our_key, tensor, targets[our_key], model)
                loaded.append(key)
            missing = [k for k in targets if k.startswith(_OUR_PREFIX[network]) and k not in new_values]
            if missing:
                raise ValueError(f"{where}: the authors' {network} leaves {len(missing)} tensors unset, e.g. {missing[:3]}.")
            report.loaded[network] = loaded
    if report.skipped:
        logger.warning(
            "Skipped %d tensors of branches the authors' forward pass never runs: %s",
            len(report.skipped),
            sorted({k.split(":")[0] + ":" + k.split(":")[1].split(".")[0] for k in report.skipped}),
        )
    model.load_state_dict(new_values, strict=False)
    return report


def nslf_from_authors(*checkpoints: str | Path | Mapping, cunet_weights: str = "shared") -> NSLF:
    """A ``paper`` :class:`NSLF` in eval mode holding the authors' weights (see :func:`load_authors_checkpoints`)."""
    model = NSLF(PRESETS["paper"].replace(cunet_weights=cunet_weights))
    load_authors_checkpoints(model, *checkpoints)
    return model.eval()
