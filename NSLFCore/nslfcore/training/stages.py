"""The three nested training stages: what each trains, fine-tunes and freezes, and its loss.

=====  ===========================  =============================  ==========================
stage  trains (lr, optimiser)       fine-tunes (lr 1e-5, Adam)     loss
=====  ===========================  =============================  ==========================
1      CU-Net (1e-4, Adam)          --                             reconstruction + contrastive
2      FCD (1e-4, Adam),            CU-Net                         fidelity + light + SSIM + NCC
       GMN (1e-4, SGD momentum 0.9)                                 + DVF smoothness
3      FSD (1e-4, Adam)             CU-Net, FCD                    weighted CE + soft Dice
=====  ===========================  =============================  ==========================

Everything else is frozen (``requires_grad=False``); the CU-Net's reconstruction head is trained
only in stage 1. :class:`StageStep` is the module a training step calls (and that
DistributedDataParallel wraps): ``image`` and ``label`` in, the loss terms out.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nslfcore.losses import (
    Stage1Loss,
    Stage1LossWeights,
    Stage2Loss,
    Stage2LossWeights,
    Stage3Loss,
    Stage3LossWeights,
    intensity_noise_augment,
)
from nslfcore.models import NSLF
from nslfcore.training.options import TrainingOptions

STAGE_TITLES = {1: "feature extraction (CU-Net)", 2: "fusion (FCD + GMN)", 3: "segmentation (FSD)"}


def _params(*modules: nn.Module | None) -> list[nn.Parameter]:
    return [p for m in modules if m is not None for p in m.parameters()]


def _weights(defaults: object, overrides: dict[str, float]) -> object:
    """``defaults`` (a loss-weights dataclass) with ``overrides`` applied; unknown terms are refused."""
    known = {f.name for f in dataclasses.fields(defaults)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Unknown loss terms {unknown} for {type(defaults).__name__}; known: {sorted(known)}.")
    return dataclasses.replace(defaults, **overrides)  # type: ignore[type-var]


def configure_trainable(model: NSLF, stage: int) -> None:
    """Set ``requires_grad`` for ``stage``: trained and fine-tuned parts on, everything else off."""
    for p in model.parameters():
        p.requires_grad_(False)
    on: list[nn.Module | None] = {1: [model.cunet], 2: [model.cunet, model.fcd, model.gmn], 3: [model.cunet, model.fcd, model.fsd]}[
        stage
    ]
    for p in _params(*on):
        p.requires_grad_(True)
    if stage != 1:
        model.cunet.reconstruction_head.requires_grad_(False)


def build_optimizers(model: NSLF, stage: int, options: TrainingOptions) -> dict[str, torch.optim.Optimizer]:
    """The stage's optimisers: ``"adam"`` always, ``"sgd"`` for the GMN in stage 2."""
    lr, fine, wd = options.lr, options.fine_tune_lr, options.weight_decay
    head = set(model.cunet.reconstruction_head.parameters())
    cunet_body = [p for p in model.cunet.parameters() if p not in head]
    if stage == 1:
        return {"adam": torch.optim.Adam(_params(model.cunet), lr=lr, weight_decay=wd)}
    if stage == 2:
        optimizers: dict[str, torch.optim.Optimizer] = {
            "adam": torch.optim.Adam(
                [{"params": _params(model.fcd), "lr": lr}, {"params": cunet_body, "lr": fine}], weight_decay=wd
            )
        }
        if model.gmn is not None:
            optimizers["sgd"] = torch.optim.SGD(_params(model.gmn), lr=lr, momentum=0.9, weight_decay=wd)
        return optimizers
    return {
        "adam": torch.optim.Adam(
            [{"params": _params(model.fsd), "lr": lr}, {"params": cunet_body + _params(model.fcd), "lr": fine}],
            weight_decay=wd,
        )
    }


class StageStep(nn.Module):
    """One stage's forward computation and loss, as a module (what DDP wraps).

    ``forward(image, label, generator=None)``: ``image`` ``(B, 4, D, H, W)`` (spatial ``(z, y, x)``,
    ``[0, 1]``), ``label`` int64 ``(B, D, H, W)``; returns ``{term: scalar, ..., "total": scalar}``.
    ``generator`` draws the stage-1 positive view (so a resumed run draws the same views).
    In stage 3 the last logits ``(B, 4, D, H, W)`` stay in ``last_logits`` for validation metrics.
    """

    def __init__(self, model: NSLF, stage: int, options: TrainingOptions) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        overrides = options.weights_for_stage(stage)
        if stage == 1:
            if not options.contrastive:  # ablation without contrastive pre-training
                overrides["contrastive"] = 0.0
            self.loss: nn.Module = Stage1Loss(_weights(Stage1LossWeights(), overrides))
        elif stage == 2:
            if model.gmn is None:  # ablation without GMN: no registration terms
                overrides |= {"ncc": 0.0, "smooth": 0.0}
            self.loss = Stage2Loss(_weights(Stage2LossWeights(), overrides))
        else:
            self.loss = Stage3Loss(_weights(Stage3LossWeights(), overrides), dice_average=options.dice_average)

    def _loss(self, *args: torch.Tensor | None, **kwargs: torch.Tensor | None) -> dict[str, torch.Tensor]:
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
        if self.stage == 1:
            if not self.loss.weights.contrastive:
                return self._loss(x=image, reconstruction=self.model.cunet(image).reconstruction)
            # The image and its positive view go through CU-Net in ONE call: BatchNorm then
            # normalises both with the same statistics, so the contrastive term cannot be met by
            # per-call normalisation (which eval mode, with running statistics, does not have).
            positive = intensity_noise_augment(image, generator=generator)
            both = self.model.cunet(torch.cat((image, positive)))
            b = image.shape[0]
            return self._loss(
                x=image,
                reconstruction=both.reconstruction[:b],
                features=both.global_features[:b],
                positive_features=both.global_features[b:],
            )
        if self.stage == 2:
            out = self.model(image, with_gmn=True, with_fsd=False)
            reg = out.registration
            return self._loss(
                image, out.fusion.fused, reg.warped if reg is not None else None, reg.dvf if reg is not None else None
            )
        out = self.model(image, with_gmn=False, with_fsd=True)
        self.last_logits = out.logits.detach()  # read by validation for the Dice metrics
        return self._loss(out.logits, label)
