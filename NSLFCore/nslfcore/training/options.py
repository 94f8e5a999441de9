"""Training options of a run (stored as JSON in every checkpoint, so a resume continues the same run)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class TrainingOptions:
    """How to train, with the paper's values as defaults.

    Attributes:
        stages: stages to run, in order (1 CU-Net, 2 FCD + GMN, 3 FSD).
        epochs: maximum epochs per stage (early stopping may end a stage sooner).
        lr: learning rate of the parts a stage trains (Adam; SGD for the GMN).
        fine_tune_lr: learning rate of the parts a stage fine-tunes (CU-Net in 2 and 3, FCD in 3).
        min_lr: floor of the cosine schedule.
        weight_decay: Adam/SGD weight decay.
        warmup_epochs: linear warm-up length (may be fractional).
        patience: early-stopping patience in epochs on the validation loss.
        batch_size: crops per step per process.
        fusion_crop: crop size ``(z, y, x)`` for stages 1 and 2 (paper: 80 x 80 x 64 in-plane x slices).
        segmentation_crop: crop size ``(z, y, x)`` for stage 3 (paper: 160 x 160 x 64).
        tumour_fraction: fraction of training crops centred on a tumour voxel.
        et_fraction: fraction of all training crops centred on an enhancing-tumour voxel (within
            ``tumour_fraction``; a case without ET gives a tumour-centred crop instead).
        augmentation: training augmentation level, ``"none"``, ``"light"`` (the default, what
            training always used), ``"strong"`` (per-modality bias field, gamma, blur, noise,
            lower resolution, larger rotations and scaling) or ``"strong-bright"`` (``strong`` and
            structures brighter than the tumour); see :mod:`nslfcore.data.augmentation`.
        samples_per_case: random crops of each training case per epoch (more makes epochs longer
            without more cases: fewer validations and data-loader start-ups per sample).
        contrastive: stage-1 contrastive term on (``False`` is the ablation without it).
        seed: the seed of everything random (sampling, crops, augmentation, initialisation).
        num_workers: data-loading worker processes.
        amp: bf16 autocast on CUDA (ignored on CPU).
        compile: ``torch.compile`` the training step (opt-in).
        deterministic: deterministic algorithms (exact resume on CPU).
        max_steps_per_epoch: cap on the steps of one epoch (``None``: the whole training set).
        stop_after_epochs: stop gracefully after this many epochs of a stage in this process
            (used to emulate an interruption; ``None``: never).
        time_limit_s: wall-clock seconds each stage may train in this process (``None``: no
            limit). Once past it, the epoch in progress ends early, is validated, and the stage
            finishes as if its epochs were done (best weights kept, the next stage starts); the
            learning-rate schedule is cut short, so set ``epochs`` to what the time allows.
        case_validation_every: stage 3 also runs whole-case validation every this many epochs and
            at its last one (:mod:`nslfcore.training.case_validation`: the inference engine on whole
            validation cases, Dice ET / TC / WT) and selects its best epoch on the mean of the three
            (higher is better); ``None``: neither, stage 3 selects on the validation loss.
        case_validation_max_cases: the first this many validation cases are scored whole.
        loss_weights: ``(("stage2.ssim", 2.0), ...)`` overrides of the loss-term weights
            (names ``stageN.term`` as in :mod:`nslfcore.losses`' ``StageNLossWeights``).
        dice_average: stage-3 soft Dice over the foreground classes: ``"pooled"`` (public code: one
            Dice over NCR, edema and ET together, dominated by the large edema) or ``"class"`` (one
            Dice per class, averaged: small classes such as ET weigh as much as edema); see
            :class:`nslfcore.losses.ForegroundDiceLoss`.
        sequence_dropout: probability that a training crop loses one modality, drawn at random
            (an all-zero channel, as a missing sequence reaches the network), so that the model
            works on any three of the four (:class:`nslfcore.data.augmentation.RandDropSequenced`).
    """

    stages: tuple[int, ...] = (1, 2, 3)
    epochs: int = 30
    lr: float = 1e-4
    fine_tune_lr: float = 1e-5
    min_lr: float = 1e-5
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    patience: int = 10
    batch_size: int = 1
    fusion_crop: tuple[int, int, int] = (64, 80, 80)
    segmentation_crop: tuple[int, int, int] = (64, 160, 160)
    tumour_fraction: float = 0.5
    samples_per_case: int = 1
    contrastive: bool = True
    seed: int = 0
    num_workers: int = 0
    amp: bool = True
    compile: bool = False
    deterministic: bool = False
    max_steps_per_epoch: int | None = None
    stop_after_epochs: int | None = None
    time_limit_s: float | None = None
    et_fraction: float = 0.0
    augmentation: Literal["none", "light", "strong", "strong-bright"] = "light"
    case_validation_every: int | None = None
    case_validation_max_cases: int = 8
    loss_weights: tuple[tuple[str, float], ...] = ()
    dice_average: Literal["pooled", "class"] = "pooled"
    sequence_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.stages or any(s not in (1, 2, 3) for s in self.stages) or list(self.stages) != sorted(set(self.stages)):
            raise ValueError(f"stages must be an increasing selection of 1, 2, 3; got {self.stages}.")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.samples_per_case < 1:
            raise ValueError("epochs, batch_size, patience and samples_per_case must be at least 1.")
        for name in ("lr", "fine_tune_lr", "min_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}.")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}.")
        bad = [(n, w) for n, w in self.loss_weights if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)]
        if bad:
            raise ValueError(f"Loss weights must be finite and >= 0; got {', '.join(f'{n}={w}' for n, w in bad)}.")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be a positive number of seconds, got {self.time_limit_s}.")
        if not 0.0 <= self.et_fraction <= 1.0:
            raise ValueError(f"et_fraction must lie in [0, 1], got {self.et_fraction}.")
        from nslfcore.data.augmentation import AUGMENTATION_LEVELS

        if self.augmentation not in AUGMENTATION_LEVELS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATION_LEVELS)}; got {self.augmentation!r}.")
        if self.case_validation_every is not None and not self.case_validation_every >= 1:
            raise ValueError(f"case_validation_every must be at least 1 epoch, got {self.case_validation_every}.")
        if not self.case_validation_max_cases >= 1:
            raise ValueError(f"case_validation_max_cases must be at least 1, got {self.case_validation_max_cases}.")
        if not 0.0 <= self.sequence_dropout <= 1.0:
            raise ValueError(f"sequence_dropout must lie in [0, 1], got {self.sequence_dropout}.")
        if not 0.0 <= self.tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction must lie in [0, 1], got {self.tumour_fraction}.")
        from nslfcore.losses import Stage1LossWeights, Stage2LossWeights, Stage3LossWeights

        terms = {f"stage{i}.{f.name}" for i, w in enumerate((Stage1LossWeights, Stage2LossWeights, Stage3LossWeights), 1)
                 for f in dataclasses.fields(w)}  # fmt: skip
        unknown = sorted(name for name, _ in self.loss_weights if name not in terms)
        if unknown:
            raise ValueError(f"Unknown loss terms {unknown}; known: {sorted(terms)}.")
        if self.dice_average not in ("pooled", "class"):
            raise ValueError(f'dice_average must be "pooled" or "class", got {self.dice_average!r}.')
        for crop in (self.fusion_crop, self.segmentation_crop):
            if len(crop) != 3 or any(c < 16 or c % 16 for c in crop):
                raise ValueError(f"crop sizes must be three multiples of 16 (z, y, x), got {crop}.")

    def weights_for_stage(self, stage: int) -> dict[str, float]:
        """The loss-weight overrides of ``stage`` as ``{term: weight}``."""
        prefix = f"stage{stage}."
        return {name[len(prefix) :]: value for name, value in self.loss_weights if name.startswith(prefix)}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainingOptions:
        data: dict[str, Any] = json.loads(text)
        data["loss_weights"] = tuple(tuple(pair) for pair in data.get("loss_weights", ()))
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}  # JSON lists -> tuples
        return cls(**fields)

    def replace(self, **changes: Any) -> TrainingOptions:
        return dataclasses.replace(self, **changes)
