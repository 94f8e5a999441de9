"""Training and loading the segmentation baselines (the paper's U-Net, VoxResNet, V-Net, ... comparison rows).

The networks are in :mod:`nslfcore.segmentation_baselines` (one class per ``--arch``, with a table of
their sizes); this module trains one and reads its file back. Every baseline is trained on the
same crops with the same loss as NSLF's stage 3 (:class:`nslfcore.data.dataset.BratsCropDataset`'s
tumour-biased, augmented crops; :class:`nslfcore.losses.Stage3Loss`: 0.5 weighted CE + 0.5 soft
Dice) and the same optimiser and schedule (Adam, weight decay 5e-4, one epoch of warm-up + cosine
to 1e-5), but without NSLF's self-supervised stages and without fusion.

A baseline file is a model file like NSLF's, written by :func:`nslfcore.model_store.save_model` and
read by :func:`nslfcore.model_store.load_model` (``weights_only=True``): an NSLF-format checkpoint
(:mod:`nslfcore.training.checkpoint`) with ``kind`` ``"baseline"``, ``arch``, ``architecture`` and
``features``; files written before ``arch`` existed are U-Nets and still load. The networks are
:class:`~nslfcore.models.interface.Network` s that segment only, so :func:`nslfcore.inference.run`
(``fuse=False``), ``nslf evaluate --baseline`` and ``benchmarks/accuracy.py --baseline`` score
them exactly like NSLF.

Tensors are ``(B, C, D, H, W)`` with spatial axes ``(z, y, x)``; inputs in ``nslfcore.MODALITIES``
order, intensities in ``[0, 1]``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.optimizers.lr_scheduler import WarmupCosineSchedule
from torch.utils.data import DataLoader

from nslfcore.data.brats import select_cases
from nslfcore.data.cache import CaseCache
from nslfcore.data.dataset import BratsCropDataset
from nslfcore.losses import Stage3Loss
from nslfcore.model_store import ModelError, load_model, save_model
from nslfcore.segmentation_baselines import ARCHITECTURES, KIND, BaselineUNet, SegmentationBaseline, build_baseline
from nslfcore.training.options import TrainingOptions

#: The resumable state of a baseline run, in its output folder (:func:`train_baseline`).
LAST_FILE = "baseline_last.pt"

__all__ = ["ARCHITECTURES", "KIND", "BaselineUNet", "SegmentationBaseline", "load_baseline", "train_baseline"]


def load_baseline(path: str | Path, device: str | torch.device = "cpu") -> SegmentationBaseline:
    """A baseline network in eval mode from a file written by :func:`train_baseline` (:func:`load_model`, weights only)."""
    model, _ = load_model(Path(path), device=device)
    if not isinstance(model, SegmentationBaseline):
        raise ModelError(f"{path} is not a segmentation baseline file; train one with nslf baseline.")
    return model


def train_baseline(
    data: str | Path,
    out: str | Path,
    epochs: int = 20,
    crop: tuple[int, int, int] = (48, 112, 112),
    lr: float = 1e-3,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    device: str = "auto",
    arch: str = "unet",
    log: Callable[[str], None] = print,
    recipe: TrainingOptions | None = None,
    resume: bool = False,
) -> Path:
    """Train the baseline ``arch`` (:data:`ARCHITECTURES`) on a BraTS-layout folder; returns ``<out>/baseline_best.pt``.

    The split is NSLF's (:func:`nslfcore.training.run.folder_cases`: the folder's split lists, or
    a seeded 80/20 split), so both see the same training and validation cases. One epoch visits
    every training case once (a tumour-biased random crop ``crop`` ``(z, y, x)``, augmented); the
    validation loss on centre crops after every epoch picks the best weights. ``out`` also gets
    ``baseline_log.jsonl`` (one line per epoch: optimiser steps, losses, validation Dice, seconds).

    ``recipe``: NSLF's stage-3 options (:class:`~nslfcore.training.options.TrainingOptions`), for a
    baseline with exactly the default model's stage-3 recipe: its ``epochs``, ``lr``,
    ``weight_decay``, ``segmentation_crop``, ``batch_size``, ``num_workers``, ``tumour_fraction``,
    ``et_fraction``, ``augmentation``, ``samples_per_case``, ``dice_average``, ``warmup_epochs``,
    ``min_lr``, ``time_limit_s``
    (checked after every epoch) and ``amp`` (bf16 autocast on CUDA, the losses in float32) replace
    the arguments and defaults above. Model selection stays on the centre-crop validation loss.

    After every epoch ``out`` also gets ``baseline_last.pt`` (weights, optimiser and schedule, the
    epoch, the best loss; read back weights-only). ``resume``: continue from it after the last
    completed epoch (an interrupted run loses only the epoch it was in; a finished one returns at
    once); it must be the same ``arch`` and options, else :class:`ValueError`. Each epoch's crops
    and order are seeded by ``seed`` and the epoch, so a resumed run sees the same data.
    """
    from nslfcore.inference.devices import resolve_device
    from nslfcore.training.run import folder_cases

    out = Path(out)
    cases, split = folder_cases(Path(data))
    torch.manual_seed(seed)
    torch_device = resolve_device(device)
    model = build_baseline(arch).to(torch_device)
    options = recipe or TrainingOptions(epochs=epochs, lr=lr, segmentation_crop=crop, amp=False)
    epochs, crop, batch = options.epochs, options.segmentation_crop, options.batch_size
    cache = CaseCache()
    train_set = BratsCropDataset(
        select_cases(cases, split["train"]), crop, train=True, cache=cache, seed=seed,
        tumour_fraction=options.tumour_fraction, et_fraction=options.et_fraction, augment=options.augmentation,
        samples_per_case=options.samples_per_case,
    )  # fmt: skip
    valid_set = BratsCropDataset(select_cases(cases, split["valid"]), crop, train=False, cache=cache, seed=seed)
    if options.num_workers:
        train_set.preload()
    steps = min(math.ceil(len(train_set) / batch), steps_per_epoch or math.ceil(len(train_set) / batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    # NSLF's schedule (trainer.py): linear warm-up over ``warmup_epochs``, cosine decay to ``min_lr``.
    warmup = int(round(options.warmup_epochs * steps)) if recipe is not None else steps
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=warmup, t_total=steps * epochs, end_lr=options.min_lr,
                                    warmup_multiplier=0.1)  # fmt: skip
    loss_fn = Stage3Loss(dice_average=options.dice_average)
    amp = options.amp and torch_device.type == "cuda"
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    identity = {"arch": arch, "options": options.to_json(), "seed": seed, "steps_per_epoch": steps}
    first, best = 0, math.inf
    last = out / LAST_FILE
    if resume and last.exists():
        state = torch.load(last, map_location=torch_device, weights_only=True)
        if {key: state[key] for key in identity} != identity:
            raise ValueError(f"{last} was written by another baseline run (architecture, options or seed differ); "
                             "use another output folder.")  # fmt: skip
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        first, best = int(state["epoch"]), float(state["best"])
        log(f"{model.title} baseline: resuming after epoch {first}/{epochs}")
    log_path = out / "baseline_log.jsonl"
    kept = [line for line in log_path.read_text().splitlines() if line][:first] if first else []
    log_path.write_text("".join(line + "\n" for line in kept))  # the epochs the resumed state holds
    with log_path.open("a") as log_file:
        for epoch in range(first, epochs):
            clock = time.perf_counter()
            train_set.set_epoch(epoch)
            model.train()
            loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=options.num_workers,
                                pin_memory=amp, generator=torch.Generator().manual_seed(seed + epoch))  # fmt: skip
            train_loss, done = 0.0, 0
            for step, item in enumerate(loader):
                if step >= steps:
                    break
                done += 1
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = model(item["image"].to(torch_device))
                loss = loss_fn(logits.float(), item["label"].to(torch_device))["total"]
                loss.backward()
                optimizer.step()
                schedule.step()
                train_loss += float(loss.detach()) / steps
            valid = _validate(model, valid_set, loss_fn, torch_device)
            record = {"epoch": epoch + 1, "steps": done, "train_loss": train_loss, **valid,
                      "seconds": time.perf_counter() - clock}  # fmt: skip
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if valid["loss"] < best:
                best = valid["loss"]
                save_model(model, out / "baseline_best.pt", epoch=epoch + 1, best_metric=best)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "epoch": epoch + 1, "best": best, **identity}  # fmt: skip
            torch.save(state, last.with_suffix(".tmp"))
            last.with_suffix(".tmp").replace(last)  # never a half-written file
            log(f"{model.title} baseline epoch {epoch + 1}/{epochs}: train {train_loss:.4f}, valid {valid['loss']:.4f}, "
                f"WT Dice {valid['dice_wt']:.3f} ({record['seconds']:.0f} s)")  # fmt: skip
            if options.time_limit_s is not None and time.perf_counter() - started > options.time_limit_s:
                log(f"{model.title} baseline: time limit {options.time_limit_s:.0f} s reached after epoch {epoch + 1}")
                break
    return out / "baseline_best.pt"


def _validate(
    model: SegmentationBaseline, dataset: BratsCropDataset, loss_fn: Stage3Loss, device: torch.device
) -> dict[str, float]:
    """Mean validation loss and region Dice (ET, TC, WT) over the centre crops."""
    from nslfcore.training.stages import region_dice

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
