"""The plain 3-D U-Net segmentation baseline (the paper's "U-Net" comparison row).

MONAI's :class:`~monai.networks.nets.BasicUNet` (two Conv3d + BatchNorm + ReLU per level, four
down-samplings, transposed-convolution up-sampling) on the four stacked modalities, predicting
the same four classes as NSLF's FSD (background, NCR, edema, ET). Its widths
:data:`BASELINE_FEATURES` (16-32-64-128-128) give about as many parameters and operations per
voxel as the ``compact`` NSLF's four CU-Nets (8-16-32-64-64 each), so the two are compared at a
similar size. It is trained on the same crops with the same loss as NSLF's stage 3
(:class:`nslfcore.losses.Stage3Loss`: 0.5 weighted CE + 0.5 soft Dice) and the same optimiser and
schedule (Adam, weight decay 5e-4, warm-up + cosine), but without NSLF's self-supervised stages
and without fusion.

A baseline file is an NSLF-format checkpoint (:mod:`nslfcore.training.checkpoint`) with
``kind`` ``"baseline"``, ``architecture`` ``"BasicUNet"`` and ``features``; it is read with
``weights_only=True``. :func:`nslfcore.inference.run` accepts the loaded network (segmentation only).

Tensors are ``(B, C, D, H, W)`` with spatial axes ``(z, y, x)``; inputs in ``nslfcore.MODALITIES``
order, intensities in ``[0, 1]``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import BasicUNet
from monai.optimizers.lr_scheduler import WarmupCosineSchedule
from torch.utils.data import DataLoader

from nslfcore.data.brats import select_cases
from nslfcore.data.cache import CaseCache
from nslfcore.data.dataset import BratsCropDataset
from nslfcore.losses import Stage3Loss
from nslfcore.training.checkpoint import atomic_torch_save, load_checkpoint, new_checkpoint

#: BasicUNet features: five encoder widths and the last decoder width.
BASELINE_FEATURES: tuple[int, int, int, int, int, int] = (16, 32, 64, 128, 128, 16)
ARCHITECTURE = "BasicUNet"


class BaselineUNet(BasicUNet):
    """BasicUNet with NSLF's inputs and classes: ``(B, 4, D, H, W)`` -> logits ``(B, 4, D, H, W)``.

    Attributes:
        features: the BasicUNet widths.
        inference_bytes_per_voxel: a safe upper bound of the float32 activation memory of one
            whole-volume pass per voxel (used by :func:`nslfcore.inference.estimate_memory_bytes`).
    """

    def __init__(self, features: tuple[int, ...] = BASELINE_FEATURES) -> None:
        super().__init__(
            spatial_dims=3, in_channels=4, out_channels=4, features=tuple(features), act="relu", norm="batch",
            upsample="deconv",
        )  # fmt: skip
        self.features = tuple(int(f) for f in features)
        self.inference_bytes_per_voxel = 4 * (8 * self.features[0] + 16)


def save_baseline(model: BaselineUNet, path: str | Path, **fields: Any) -> Path:
    """Write ``model``'s weights as a baseline checkpoint (atomically)."""
    state = new_checkpoint(kind="baseline", architecture=ARCHITECTURE, features=list(model.features),
                           model=model.state_dict(), **fields)  # fmt: skip
    return atomic_torch_save(state, path)


def load_baseline(path: str | Path, device: str | torch.device = "cpu") -> BaselineUNet:
    """A baseline network in eval mode from a file written by :func:`train_baseline` (weights only)."""
    data = load_checkpoint(path)
    if data.get("kind") != "baseline" or data.get("architecture") != ARCHITECTURE:
        raise ValueError(f"{path} is not a U-Net baseline file; train one with nslf baseline.")
    model = BaselineUNet(tuple(data["features"]))
    model.load_state_dict(data["model"], strict=True)
    return model.to(device).eval()


def train_baseline(
    data: str | Path,
    out: str | Path,
    epochs: int = 20,
    crop: tuple[int, int, int] = (48, 112, 112),
    lr: float = 1e-3,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    """Train the baseline on a BraTS-layout folder; returns the best checkpoint ``<out>/baseline_best.pt``.

    The split is NSLF's (:func:`nslfcore.training.run.folder_cases`: the folder's split lists, or
    a seeded 80/20 split), so both see the same training and validation cases. One epoch visits
    every training case once (a tumour-biased random crop ``crop`` ``(z, y, x)``, augmented); the
    validation loss on centre crops after every epoch picks the best weights. ``out`` also gets
    ``baseline_log.jsonl`` (one line per epoch: losses, validation Dice, seconds).
    """
    from nslfcore.inference.devices import resolve_device
    from nslfcore.training.run import folder_cases

    out = Path(out)
    cases, split = folder_cases(Path(data))
    torch.manual_seed(seed)
    torch_device = resolve_device(device)
    model = BaselineUNet().to(torch_device)
    cache = CaseCache()
    train_set = BratsCropDataset(select_cases(cases, split["train"]), crop, train=True, cache=cache, seed=seed)
    valid_set = BratsCropDataset(select_cases(cases, split["valid"]), crop, train=False, cache=cache, seed=seed)
    steps = min(len(train_set), steps_per_epoch or len(train_set))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=steps, t_total=steps * epochs, end_lr=1e-5, warmup_multiplier=0.1)
    loss_fn = Stage3Loss()
    out.mkdir(parents=True, exist_ok=True)
    best = math.inf
    with (out / "baseline_log.jsonl").open("w") as log_file:
        for epoch in range(epochs):
            clock = time.perf_counter()
            train_set.set_epoch(epoch)
            model.train()
            loader = DataLoader(train_set, batch_size=1, shuffle=True, generator=torch.Generator().manual_seed(seed + epoch))
            train_loss = 0.0
            for step, batch in enumerate(loader):
                if step >= steps:
                    break
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(batch["image"].to(torch_device)), batch["label"].to(torch_device))["total"]
                loss.backward()
                optimizer.step()
                schedule.step()
                train_loss += float(loss.detach()) / steps
            valid = _validate(model, valid_set, loss_fn, torch_device)
            record = {"epoch": epoch + 1, "train_loss": train_loss, **valid, "seconds": time.perf_counter() - clock}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            log(f"baseline epoch {epoch + 1}/{epochs}: train {train_loss:.4f}, valid {valid['loss']:.4f}, "
                f"WT Dice {valid['dice_wt']:.3f} ({record['seconds']:.0f} s)")  # fmt: skip
            if valid["loss"] < best:
                best = valid["loss"]
                save_baseline(model, out / "baseline_best.pt", epoch=epoch + 1, best_metric=best)
    return out / "baseline_best.pt"


def _validate(model: BaselineUNet, dataset: BratsCropDataset, loss_fn: Stage3Loss, device: torch.device) -> dict[str, float]:
    """Mean validation loss and region Dice (ET, TC, WT) over the centre crops."""
    from nslfcore.training.trainer import region_dice

    model.eval()
    sums: dict[str, float] = {}
    with torch.inference_mode():
        for item in DataLoader(dataset, batch_size=1):
            label = item["label"].to(device)
            logits = model(item["image"].to(device))
            values = {"loss": float(loss_fn(logits, label)["total"])} | region_dice(logits, label)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value / len(dataset)
    return sums
