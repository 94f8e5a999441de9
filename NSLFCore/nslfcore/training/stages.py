"""The three nested training stages as objects: what each trains, fine-tunes and freezes, its loss,
its crop and its step.

=====  ===========================  =============================  ==========================
stage  trains (lr, optimiser)       fine-tunes (lr 1e-5, Adam)     loss
=====  ===========================  =============================  ==========================
1      CU-Net (1e-4, Adam)          --                             reconstruction + contrastive
2      FCD (1e-4, Adam),            CU-Net                         fidelity + light + SSIM + NCC
       GMN (1e-4, SGD momentum 0.9)                                 + DVF smoothness
3      FSD (1e-4, Adam)             CU-Net, FCD                    weighted CE + soft Dice
=====  ===========================  =============================  ==========================

Everything else is frozen (``requires_grad=False``); the CU-Net's reconstruction head is trained
only in stage 1. A :class:`Stage` holds everything that differs between stages; the trainer
holds what is the same. An ablation is a variant of a stage (a subclass, as nnU-Net's trainer
variants), chosen by :func:`stages_for`:

* :class:`FeatureExtractionWithoutContrastive` (``--no-contrastive``): stage 1 on reconstruction only;
* :class:`FusionWithoutRegistration` (a configuration without GMN, ``--no-gmn``): stage 2 without
  the registration terms (NCC, DVF smoothness).

:class:`StageStep` is the module a training step calls (and that DistributedDataParallel wraps):
``image`` and ``label`` in, the loss terms out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nslfcore.config import SegmentationOutput
from nslfcore.losses import (
    Stage1Loss,
    Stage1LossWeights,
    Stage2Loss,
    Stage2LossWeights,
    Stage3Loss,
    Stage3LossWeights,
    intensity_noise_augment,
)
from nslfcore.models import NSLF, present_channels
from nslfcore.models.outputs import labels_from_logits
from nslfcore.training.case_validation import CASE_DICE_KEYS
from nslfcore.training.options import TrainingOptions

Optimizers = dict[str, torch.optim.Optimizer]


def _params(*modules: nn.Module | None) -> list[nn.Parameter]:
    return [p for m in modules if m is not None for p in m.parameters()]


def _two_rate_adam(trained: list[nn.Parameter], fine_tuned: list[nn.Parameter], options: TrainingOptions) -> torch.optim.Adam:
    """Adam over the parts a stage trains (``options.lr``) and those it fine-tunes (``options.fine_tune_lr``)."""
    groups = [{"params": trained, "lr": options.lr}, {"params": fine_tuned, "lr": options.fine_tune_lr}]
    return torch.optim.Adam(groups, weight_decay=options.weight_decay)


def _cunet_body(model: NSLF) -> list[nn.Parameter]:
    """CU-Net's parameters without its reconstruction head (which only stage 1 trains)."""
    head = set(model.cunet.reconstruction_head.parameters())
    return [p for p in model.cunet.parameters() if p not in head]


class Stage:
    """One training stage of NSLF (subclasses: the three stages and their ablation variants).

    Class attributes: ``number`` (1, 2 or 3, as the paper and the file names count), ``title``
    (for progress displays), ``weights_type`` (the loss-weights dataclass of the stage, whose
    fields are the ``stageN.term`` names ``--loss-weight`` accepts).

    Attributes: ``selection_mode``, which way :meth:`selection_metric` improves (``"min"``: a
    loss, lower is better; ``"max"``: a Dice, higher is better), for the best checkpoint and early
    stopping; ``case_validation_every``, the epochs between whole-case validations
    (:mod:`~nslfcore.training.case_validation`; ``None``: none, the stages without segmentation).
    """

    number: ClassVar[int]
    title: ClassVar[str]
    weights_type: ClassVar[type]
    selection_mode: Literal["min", "max"] = "min"
    case_validation_every: int | None = None

    def trained_parts(self, model: NSLF) -> list[nn.Module | None]:
        """The networks whose parameters train (or fine-tune) in this stage; the rest is frozen."""
        raise NotImplementedError

    def build_optimizers(self, model: NSLF, options: TrainingOptions) -> Optimizers:
        """The stage's optimisers by name (``"adam"`` always; the learning-rate schedule follows each)."""
        raise NotImplementedError

    def build_loss(self, model: NSLF, options: TrainingOptions) -> nn.Module:
        """The stage's composite loss with the paper's weights and ``options``' overrides."""
        raise NotImplementedError

    def compute(
        self, step: StageStep, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """The forward pass and loss terms of one step (see :class:`StageStep`)."""
        raise NotImplementedError

    def crop(self, options: TrainingOptions) -> tuple[int, int, int]:
        """The training/validation crop ``(z, y, x)`` in voxels."""
        return options.fusion_crop

    def validation_metrics(self, step: StageStep, label: torch.Tensor) -> dict[str, float]:
        """Metrics besides the loss terms for one validation batch (after ``step`` ran on it)."""
        return {}

    def needs_previous_weights(self) -> bool:
        """Whether the stage cannot start from freshly initialised networks (stage 3 needs a fusion network)."""
        return False

    def selection_metric(self, metrics: dict[str, float]) -> float | None:
        """The validation number that picks the stage's best epoch and drives early stopping
        (better as :attr:`selection_mode` says), or ``None`` for an epoch that does not select.

        ``metrics`` are the validation means (``loss`` is the weighted total). Default: ``loss``.
        """
        return metrics["loss"]

    # ------------------------------------------------------------------ shared by every stage
    def configure_trainable(self, model: NSLF) -> None:
        """Set ``requires_grad``: the parts of :meth:`trained_parts` on, everything else off."""
        model.requires_grad_(False)
        for p in _params(*self.trained_parts(model)):
            p.requires_grad_(True)
        if self.number != 1:
            model.cunet.reconstruction_head.requires_grad_(False)

    def loss_weights(self, options: TrainingOptions, **fixed: float) -> Any:
        """The stage's loss weights: the paper's, then ``options``' overrides, then ``fixed`` (a variant's, which win).

        Unknown term names are refused (``TrainingOptions`` checks them too; this guards direct use).
        """
        defaults = self.weights_type()
        overrides = options.weights_for_stage(self.number) | fixed
        known = {f.name for f in dataclasses.fields(defaults)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"Unknown loss terms {unknown} for {self.weights_type.__name__}; known: {sorted(known)}.")
        return dataclasses.replace(defaults, **overrides)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(number={self.number})"


class FeatureExtractionStage(Stage):
    """Stage 1: CU-Net learns features (reconstruction + contrastive between a crop and a noisy view)."""

    number = 1
    title = "feature extraction (CU-Net)"
    weights_type = Stage1LossWeights

    def trained_parts(self, model: NSLF) -> list[nn.Module | None]:
        return [model.cunet]

    def build_optimizers(self, model: NSLF, options: TrainingOptions) -> Optimizers:
        return {"adam": torch.optim.Adam(_params(model.cunet), lr=options.lr, weight_decay=options.weight_decay)}

    def build_loss(self, model: NSLF, options: TrainingOptions) -> nn.Module:
        return Stage1Loss(self.loss_weights(options))

    def compute(
        self, step: StageStep, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        features, loss = step.model.extract_features, step.loss
        assert isinstance(loss, Stage1Loss)
        if not loss.weights.contrastive:
            return step.fp32_loss(x=image, reconstruction=features(image).reconstruction)
        # The image and its positive view go through CU-Net in ONE call: BatchNorm then
        # normalises both with the same statistics, so the contrastive term cannot be met by
        # per-call normalisation (which eval mode, with running statistics, does not have).
        positive = intensity_noise_augment(image, generator=generator)
        both = features(torch.cat((image, positive)))
        b = image.shape[0]
        return step.fp32_loss(
            x=image,
            reconstruction=both.reconstruction[:b],
            features=both.global_features[:b],
            positive_features=both.global_features[b:],
        )


    def selection_metric(self, metrics: dict[str, float]) -> float:
        """The validation reconstruction loss, not the total.

        Stage 1 is there to give the later stages features that describe each image; how well the
        features reconstruct unseen crops measures that. The contrastive term on validation crops
        does not: it compares each crop with a noisy view of itself, its value rises while the
        features keep improving (the issue's runs chose epoch 1 on the total for that reason), and
        it would end the stage early. Falls back to the total when reconstruction is weighted 0.
        """
        return metrics.get("reconstruction", metrics["loss"])


class FeatureExtractionWithoutContrastive(FeatureExtractionStage):
    """Ablation of stage 1 (``--no-contrastive``): CU-Net trained on reconstruction alone."""

    def build_loss(self, model: NSLF, options: TrainingOptions) -> nn.Module:
        return Stage1Loss(self.loss_weights(options, contrastive=0.0))


class FusionStage(Stage):
    """Stage 2: FCD (Adam) and GMN (SGD, momentum 0.9) train, CU-Net fine-tunes."""

    number = 2
    title = "fusion (FCD + GMN)"
    weights_type = Stage2LossWeights

    def trained_parts(self, model: NSLF) -> list[nn.Module | None]:
        return [model.cunet, model.fcd, model.gmn]

    def build_optimizers(self, model: NSLF, options: TrainingOptions) -> Optimizers:
        optimizers: Optimizers = {"adam": _two_rate_adam(_params(model.fcd), _cunet_body(model), options)}
        if model.gmn is not None:
            gmn = _params(model.gmn)
            optimizers["sgd"] = torch.optim.SGD(gmn, lr=options.lr, momentum=0.9, weight_decay=options.weight_decay)
        return optimizers

    def build_loss(self, model: NSLF, options: TrainingOptions) -> nn.Module:
        return Stage2Loss(self.loss_weights(options))

    def compute(
        self, step: StageStep, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        out = step.model(image, with_gmn=True, with_fsd=False)
        reg = out.registration
        return step.fp32_loss(
            image, out.fusion.fused, reg.warped if reg is not None else None, reg.dvf if reg is not None else None
        )


class FusionWithoutRegistration(FusionStage):
    """Ablation of stage 2 for a model without GMN (``--no-gmn``): no registration terms (NCC, smoothness)."""

    def build_loss(self, model: NSLF, options: TrainingOptions) -> nn.Module:
        return Stage2Loss(self.loss_weights(options, ncc=0.0, smooth=0.0))


class SegmentationStage(Stage):
    """Stage 3: FSD trains, CU-Net and FCD fine-tune (weighted cross-entropy + soft Dice)."""

    number = 3
    title = "segmentation (FSD)"
    weights_type = Stage3LossWeights

    def __init__(self, case_validation_every: int | None = None) -> None:
        self.case_validation_every = case_validation_every
        self.selection_mode = "min" if case_validation_every is None else "max"

    def trained_parts(self, model: NSLF) -> list[nn.Module | None]:
        return [model.cunet, model.fcd, model.fsd]

    def build_optimizers(self, model: NSLF, options: TrainingOptions) -> Optimizers:
        return {"adam": _two_rate_adam(_params(model.fsd), _cunet_body(model) + _params(model.fcd), options)}

    def build_loss(self, model: NSLF, options: TrainingOptions) -> nn.Module:
        return Stage3Loss(self.loss_weights(options), dice_average=options.dice_average, output=model.segmentation_output,
                          fusion_weights=Stage2LossWeights(**options.weights_for_stage(2)))  # fmt: skip

    def compute(
        self, step: StageStep, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        # a sequence dropped by --sequence-dropout is an all-zero channel: the fusion leaves it out,
        # as inference does for a missing sequence (a crop with every sequence keeps all four)
        out = step.model(image, with_gmn=False, with_fsd=True, present=present_channels(image))
        step.last_logits = out.logits.detach()  # read by validation_metrics
        if step.loss.weights.fusion:  # type: ignore[union-attr]
            return step.fp32_loss(out.logits, label, image, out.fusion.fused)
        return step.fp32_loss(out.logits, label)

    def crop(self, options: TrainingOptions) -> tuple[int, int, int]:
        return options.segmentation_crop

    def validation_metrics(self, step: StageStep, label: torch.Tensor) -> dict[str, float]:
        assert step.last_logits is not None, "validation_metrics runs after the step"
        return region_dice(step.last_logits, label, step.model.segmentation_output)

    def needs_previous_weights(self) -> bool:
        return True

    def selection_metric(self, metrics: dict[str, float]) -> float | None:
        """The validation loss; with whole-case validation (``case_validation_every``) the mean
        whole-case Dice of ET, TC and WT (higher is better), and ``None`` on the epochs between.

        The whole-case Dice is what users get; the crop loss and crop Dice score one centre crop
        per case and are on another scale, so they never compete with it for the best epoch.
        """
        if self.case_validation_every is None:
            return metrics["loss"]
        if not all(key in metrics for key in CASE_DICE_KEYS.values()):
            return None
        return sum(metrics[key] for key in CASE_DICE_KEYS.values()) / len(CASE_DICE_KEYS)


#: The paper's stages by number (without ablations; :func:`stages_for` picks the variants).
STAGES: dict[int, type[Stage]] = {1: FeatureExtractionStage, 2: FusionStage, 3: SegmentationStage}
STAGE_TITLES = {number: cls.title for number, cls in STAGES.items()}


def stage_for(number: int, options: TrainingOptions, model: NSLF) -> Stage:
    """Stage ``number`` as ``options`` and ``model`` ask for it (the ablation variant where one applies)."""
    if number == 1 and not options.contrastive:
        return FeatureExtractionWithoutContrastive()
    if number == 2 and model.gmn is None:
        return FusionWithoutRegistration()
    if number == 3:
        return SegmentationStage(options.case_validation_every)
    try:
        return STAGES[number]()
    except KeyError:
        raise ValueError(f"There is no training stage {number}; stages are 1, 2 and 3.") from None


def stages_for(options: TrainingOptions, model: NSLF) -> list[Stage]:
    """The stages ``options.stages`` selects, in order, as variants for ``options`` and ``model``."""
    return [stage_for(number, options, model) for number in options.stages]


class StageStep(nn.Module):
    """One stage's forward computation and loss, as a module (what DDP wraps).

    ``forward(image, label, generator=None)``: ``image`` ``(B, 4, D, H, W)`` (spatial ``(z, y, x)``,
    ``[0, 1]``), ``label`` int64 ``(B, D, H, W)``; returns ``{term: scalar, ..., "total": scalar}``.
    ``generator`` draws the stage-1 positive view (so a resumed run draws the same views).
    In stage 3 the last logits ``(B, 4, D, H, W)`` stay in ``last_logits`` for validation metrics.
    ``stage`` is a :class:`Stage` or its number (then :func:`stage_for` picks the variant).
    """

    def __init__(self, model: NSLF, stage: Stage | int, options: TrainingOptions) -> None:
        super().__init__()
        self.model = model
        self.stage = stage if isinstance(stage, Stage) else stage_for(stage, options, model)
        self.loss: nn.Module = self.stage.build_loss(model, options)
        self.last_logits: torch.Tensor | None = None

    def fp32_loss(self, *args: torch.Tensor | None, **kwargs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The stage loss in float32 with autocast off: under bf16 the local variances of LNCC and SSIM
        (``E[x^2] - E[x]^2``) cancel to zero or below and the loss explodes (seen on CUDA: NCC -3e8)."""

        def fp32(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.float() if t is not None and t.is_floating_point() else t

        device_type = next(t for t in (*args, *kwargs.values()) if t is not None).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self.loss(*(fp32(a) for a in args), **{k: fp32(v) for k, v in kwargs.items()})

    def forward(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        return self.stage.compute(self, image, label, generator)


def region_dice(logits: torch.Tensor, label: torch.Tensor, output: SegmentationOutput = "classes") -> dict[str, float]:
    """Dice of ET ({3}), TC ({1, 3}) and WT ({1, 2, 3}) on one batch of crops (both empty -> 1).

    ``logits`` ``(B, 4, D, H, W)`` (``(B, 3, D, H, W)`` for ``output="regions"``), ``label`` int64
    ``(B, D, H, W)``, spatial ``(z, y, x)``; predicted labels by :func:`~nslfcore.models.outputs.labels_from_logits`.
    """
    pred = labels_from_logits(logits, output)
    out = {}
    for name, classes in (("dice_et", (3,)), ("dice_tc", (1, 3)), ("dice_wt", (1, 2, 3))):
        p = torch.isin(pred, torch.tensor(classes, device=pred.device))
        t = torch.isin(label, torch.tensor(classes, device=label.device))
        denominator = p.sum() + t.sum()
        out[name] = 1.0 if denominator == 0 else float(2 * (p & t).sum() / denominator)
    return out
