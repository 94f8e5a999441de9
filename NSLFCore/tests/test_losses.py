"""Tests of nslfcore.losses: hand-computed values, MONAI/skimage agreement, composites, real model outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from nslfcore.config import PRESETS
from nslfcore.losses import (
    BrightnessLoss,
    DVFSmoothnessLoss,
    FidelityLoss,
    ForegroundDiceLoss,
    InfoNCEContrastiveLoss,
    MarginContrastiveLoss,
    ReconstructionLoss,
    SourceLNCCLoss,
    SourceSSIMLoss,
    Stage1Loss,
    Stage1LossWeights,
    Stage2Loss,
    Stage2LossWeights,
    Stage3Loss,
    Stage3LossWeights,
    WeightedCrossEntropyLoss,
    intensity_noise_augment,
)
from nslfcore.models import NSLF


def _smooth_volume(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A random but spatially smooth volume in [0, 1] (noise blurred by a 5^3 box, min-max scaled)."""
    v = F.avg_pool3d(torch.rand(shape, generator=generator), kernel_size=5, stride=1, padding=2)
    return (v - v.min()) / (v.max() - v.min())


# ------------------------------------------------------------------------------- augmentation


def test_augment_is_deterministic_given_a_generator_and_stays_in_range():
    x = torch.rand(2, 4, 6, 7, 8)
    a = intensity_noise_augment(x, generator=torch.Generator().manual_seed(3))
    b = intensity_noise_augment(x, generator=torch.Generator().manual_seed(3))
    c = intensity_noise_augment(x, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape and not a.requires_grad
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # A mild change: same anatomy, different intensities.
    assert 0.0 < float((a - x).abs().mean()) < 0.2


def test_augment_draws_parameters_per_modality():
    x = torch.full((1, 4, 4, 4, 4), 0.5)
    y = intensity_noise_augment(x, generator=torch.Generator().manual_seed(0), noise_std=(0.0, 0.0))
    per_modality = y.flatten(2)
    assert torch.allclose(per_modality, per_modality[..., :1].expand_as(per_modality))  # no noise: constant
    assert len({round(float(v), 6) for v in per_modality[0, :, 0]}) == 4  # but different per modality


# ------------------------------------------------------------------------------- stage 1


def test_reconstruction_norm_and_mse_hand_computed():
    x = torch.zeros(2, 4, 2, 2, 2)
    recon = torch.zeros_like(x)
    for m, c in enumerate((0.1, 0.2, 0.3, 0.4)):
        recon[0, m] = c
    recon[1] = 0.5
    # norm: sum_m ||c_m * 1||_2 / 8 = sqrt(8) * sum(c) / 8
    expected_norm = torch.tensor([math.sqrt(8) * 1.0 / 8, math.sqrt(8) * 2.0 / 8])
    got = ReconstructionLoss("norm", reduction="none")(recon, x)
    assert torch.allclose(got, expected_norm, atol=1e-6)
    assert ReconstructionLoss("norm")(recon, x).item() == pytest.approx(float(expected_norm.mean()), abs=1e-6)
    total = ReconstructionLoss("norm", reduction="sum")(recon, x)
    assert total.item() == pytest.approx(float(expected_norm.sum()), abs=1e-6)
    expected_mse = torch.tensor([(0.01 + 0.04 + 0.09 + 0.16) / 4, 0.25])
    assert torch.allclose(ReconstructionLoss("mse", reduction="none")(recon, x), expected_mse, atol=1e-6)


def _line_features(spatial: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """f_m = (m, 0) and f+_m = (m, 0.5), constant over ``spatial``: (1, 4, 2, *spatial)."""
    f = torch.zeros(1, 4, 2, *spatial)
    for m in range(4):
        f[0, m, 0] = float(m)
    pos = f.clone()
    pos[:, :, 1] = 0.5
    return f, pos


def test_margin_contrastive_hand_computed():
    # pull = 0.5 for every anchor; push_m = sum_k |m - k| / 3 = 2, 4/3, 4/3, 2 -> mean 5/3.
    f, pos = _line_features()
    assert MarginContrastiveLoss()(f, pos).item() == pytest.approx(0.5 - 5 / 3, abs=1e-6)
    # On 2x2x2 maps the norms grow by sqrt(8) and the 1/voxels factor divides by 8.
    f, pos = _line_features((2, 2, 2))
    assert MarginContrastiveLoss()(f, pos).item() == pytest.approx((0.5 - 5 / 3) / math.sqrt(8), abs=1e-6)


def test_infonce_hand_computed():
    # Orthogonal modalities, positives equal to anchors: cos+ = 1, cos- = 0.
    f = torch.eye(4).unsqueeze(0)  # (1, M=4, C=4), already pooled
    t = 0.5
    expected = math.log(1 + 3 * math.exp(-1 / t))
    assert InfoNCEContrastiveLoss(temperature=t)(f, f.clone()).item() == pytest.approx(expected, abs=1e-6)
    # Positives shuffled across modalities: every logit is 0 -> log(4).
    shuffled = f[:, [1, 2, 3, 0]]
    assert InfoNCEContrastiveLoss(temperature=t)(f, shuffled).item() == pytest.approx(math.log(4), abs=1e-6)


@pytest.mark.parametrize("loss", [InfoNCEContrastiveLoss(), MarginContrastiveLoss()], ids=["infonce", "margin"])
def test_contrastive_prefers_same_modality_positive(loss):
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 4, 16, 3, 3, 3, generator=g) + 3 * torch.randn(2, 4, 16, 1, 1, 1, generator=g)
    positive = features + 0.1 * torch.randn(features.shape, generator=g)
    matched = loss(features, positive)
    shuffled = loss(features, positive[:, [2, 3, 0, 1]])
    assert matched.item() < shuffled.item() - 0.05


def test_infonce_gradient_is_finite_even_for_dead_features():
    features = torch.randn(1, 4, 8, 2, 2, 2)
    features[0, 1] = 0.0  # a modality whose ReLU features all died
    features.requires_grad_(True)
    positive = torch.zeros_like(features, requires_grad=True)
    InfoNCEContrastiveLoss()(features, positive).backward()
    assert torch.isfinite(features.grad).all() and torch.isfinite(positive.grad).all()
    assert features.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- stage 2


def test_fidelity_and_brightness_hand_computed():
    sources = torch.stack([torch.full((2, 3, 4), v) for v in (0.0, 0.25, 0.5, 1.0)]).unsqueeze(0)  # (1, 4, 2, 3, 4)
    fused = torch.full((1, 1, 2, 3, 4), 0.5)
    v = 24
    # ||0.5 - a_i|| = |0.5 - a_i| sqrt(24): mean over sources of (0.5, 0.25, 0, 0.5), over 24 voxels.
    assert FidelityLoss()(fused, sources).item() == pytest.approx(0.3125 * math.sqrt(v) / v, rel=1e-6)
    assert BrightnessLoss()(fused, sources).item() == pytest.approx(0.5 * math.sqrt(v) / v, rel=1e-6)


def test_brightness_uses_the_voxelwise_maximum():
    sources = torch.zeros(1, 4, 2, 2, 2)
    sources[0, 0].view(-1)[:4] = 1.0
    sources[0, 1].view(-1)[4:] = 0.5
    fused = torch.zeros(1, 1, 2, 2, 2)
    # max = (1, 1, 1, 1, .5, .5, .5, .5): norm sqrt(4 + 4 * 0.25) = sqrt(5), over 8 voxels.
    assert BrightnessLoss()(fused, sources).item() == pytest.approx(math.sqrt(5) / 8, rel=1e-6)


def test_fidelity_batch_reduction():
    sources = torch.zeros(2, 4, 2, 2, 2)
    fused = torch.zeros(2, 1, 2, 2, 2)
    fused[1] = 1.0
    per_item = FidelityLoss(reduction="none")(fused, sources)
    assert torch.allclose(per_item, torch.tensor([0.0, math.sqrt(8) / 8]))


def test_ssim_of_identical_volumes_is_the_minimum():
    x = _smooth_volume((1, 1, 16, 16, 16), torch.Generator().manual_seed(0))
    loss = SourceSSIMLoss()(x, x.expand(1, 4, 16, 16, 16))
    assert loss.item() == pytest.approx(-1.0, abs=1e-5)


def test_ssim_matches_skimage():
    """MONAI (mean over the valid region) and skimage (mean over the interior cropped by
    (11 - 1) / 2) average the same voxels with the same normalised 11-tap Gaussian, so border
    handling does not matter; they differ only by MONAI's float32 arithmetic (kernel and
    E[x^2] - mu^2 variances): ~2e-7 measured on this white-noise-like volume, up to ~5e-5 on very
    smooth (low-variance) volumes. Tolerance 1e-5."""
    g = torch.Generator().manual_seed(2)
    shape = (1, 1, 24, 26, 28)
    fused = torch.rand(shape, generator=g)
    sources = torch.cat([0.7 * fused + 0.3 * torch.rand(shape, generator=g) for _ in range(4)], dim=1)
    expected = np.mean(
        [
            structural_similarity(
                fused[0, 0].double().numpy(),
                sources[0, i].double().numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                win_size=11,
            )
            for i in range(4)
        ]
    )
    assert 0.2 < expected < 0.95  # a non-trivial comparison
    assert SourceSSIMLoss()(fused, sources).item() == pytest.approx(-expected, abs=1e-5)


def test_separable_ssim_equals_monai_ssim_loss():
    """The separable filtering gives MONAI SSIMLoss's numbers (full 11^3 kernel), per item."""
    from monai.losses import SSIMLoss

    g = torch.Generator().manual_seed(3)
    fused = torch.rand(2, 1, 14, 17, 20, generator=g)
    sources = 0.6 * fused + 0.4 * torch.rand(2, 4, 14, 17, 20, generator=g)
    monai_loss = SSIMLoss(spatial_dims=3, data_range=1.0, win_size=11, kernel_sigma=1.5, reduction="none")
    expected = -(1 - monai_loss(fused.expand_as(sources).contiguous(), sources).reshape(-1))
    ours = SourceSSIMLoss(reduction="none")(fused, sources)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_ssim_gradient_flows():
    fused = torch.rand(1, 1, 12, 12, 12, requires_grad=True)
    SourceSSIMLoss()(fused, torch.rand(1, 4, 12, 12, 12)).backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def test_lncc_identical_is_optimal_and_shift_is_worse():
    x = _smooth_volume((1, 1, 20, 20, 20), torch.Generator().manual_seed(5))
    sources = x.expand(1, 4, 20, 20, 20)
    loss = SourceLNCCLoss()
    same = loss(x, sources).item()
    assert same == pytest.approx(-1.0, abs=1e-4)
    # NCC ignores a gain (an offset too, except in windows that reach the zero padding).
    assert loss(0.5 * x, sources).item() == pytest.approx(-1.0, abs=1e-4)
    shifted = loss(torch.roll(x, shifts=3, dims=4), sources).item()
    assert shifted > same + 0.1


def test_lncc_averages_over_sources():
    g = torch.Generator().manual_seed(6)
    warped = _smooth_volume((1, 1, 12, 12, 12), g)
    sources = torch.cat([warped, torch.rand(1, 3, 12, 12, 12, generator=g)], dim=1)
    loss = SourceLNCCLoss()
    each = [loss(warped, sources[:, i : i + 1]).item() for i in range(4)]
    assert loss(warped, sources).item() == pytest.approx(sum(each) / 4, abs=1e-6)


@pytest.mark.parametrize("difference", ["central", "forward"])
def test_smoothness_constant_and_linear_ramp(difference):
    loss = DVFSmoothnessLoss(difference=difference)
    assert loss(torch.full((1, 3, 6, 7, 8), 2.5)).item() == pytest.approx(0.0, abs=1e-12)
    a = 0.5
    z = torch.arange(6.0).reshape(6, 1, 1).expand(6, 7, 8)
    dvf = torch.zeros(1, 3, 6, 7, 8)
    dvf[0, 0] = a * z  # u_z = a z: one nonzero derivative out of 3 directions x 3 components
    assert loss(dvf).item() == pytest.approx(a**2 / 9, rel=1e-6)
    x = torch.arange(8.0).reshape(1, 1, 8).expand(6, 7, 8)
    dvf = torch.zeros(1, 3, 6, 7, 8)
    dvf[0, 2] = a * x
    assert loss(dvf).item() == pytest.approx(a**2 / 9, rel=1e-6)


def test_smoothness_checkerboard_is_seen_only_by_forward_differences():
    idx = torch.arange(6)
    board = ((idx.reshape(6, 1, 1) + idx.reshape(1, 6, 1) + idx.reshape(1, 1, 6)) % 2).float()
    dvf = board.expand(1, 3, 6, 6, 6)
    assert DVFSmoothnessLoss("central")(dvf).item() == pytest.approx(0.0, abs=1e-12)
    assert DVFSmoothnessLoss("forward")(dvf).item() == pytest.approx(1.0, rel=1e-6)


# ------------------------------------------------------------------------------- stage 3


def _labels() -> torch.Tensor:
    labels = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6, 2:6] = 2
    labels[:, 3:5, 3:5, 3:5] = 3
    labels[0, 3, 3, 3] = 1
    labels[1, 6:, 6:, 6:] = 1
    return labels


def test_perfect_logits_give_near_zero_dice_and_ce():
    labels = _labels()
    logits = 20.0 * F.one_hot(labels, 4).movedim(-1, 1).float()
    assert ForegroundDiceLoss("pooled")(logits, labels).item() < 1e-3
    assert ForegroundDiceLoss("class")(logits, labels).item() < 1e-3
    assert WeightedCrossEntropyLoss()(logits, labels).item() < 1e-6
    wrong = 20.0 * F.one_hot((labels + 1) % 4, 4).movedim(-1, 1).float()
    assert ForegroundDiceLoss("pooled")(wrong, labels).item() > 0.9


def test_dice_of_uniform_probabilities_hand_computed():
    labels = _labels()
    n, n_fg = labels.numel(), int((labels > 0).sum())
    logits = torch.zeros(2, 4, 8, 8, 8)  # p = 1/4 everywhere
    expected = 1 - 2 * 0.25 * n_fg / (0.75 * n + n_fg + 0.01)
    assert ForegroundDiceLoss("pooled")(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    counts = [int((labels == c).sum()) for c in (1, 2, 3)]
    per_class = [1 - (2 * 0.25 * n_c + 1e-5) / (0.25 * n + n_c + 1e-5) for n_c in counts]
    assert ForegroundDiceLoss("class")(logits, labels).item() == pytest.approx(sum(per_class) / 3, rel=1e-5)


def test_class_weights_change_cross_entropy_as_torch_does():
    labels = _labels()
    logits = torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(7))
    weights = (0.2, 0.3, 0.25, 0.25)
    got = WeightedCrossEntropyLoss(weights)(logits, labels)
    assert got.item() == pytest.approx(F.cross_entropy(logits, labels, weight=torch.tensor(weights)).item(), rel=1e-6)
    # By hand: weighted mean of the per-voxel NLL.
    nll = -logits.log_softmax(dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    w = torch.tensor(weights)[labels]
    assert got.item() == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-6)
    assert got.item() != pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-3)
    # Weight on ET only: the mean NLL of the ET voxels.
    only_et = WeightedCrossEntropyLoss((0.0, 0.0, 0.0, 1.0))(logits, labels)
    assert only_et.item() == pytest.approx(float(nll[labels == 3].mean()), rel=1e-6)


# ------------------------------------------------------------------------------- composites


def _check_total(terms: dict[str, torch.Tensor], weights: object) -> None:
    expected = sum(getattr(weights, k) * float(v.detach()) for k, v in terms.items() if k != "total")
    assert float(terms["total"].detach()) == pytest.approx(float(expected), rel=1e-6, abs=1e-9)


def test_stage1_total_terms_and_gradients():
    x = torch.rand(1, 4, 8, 8, 8)
    recon = torch.rand(1, 4, 8, 8, 8, requires_grad=True)
    features = torch.randn(1, 4, 6, 2, 2, 2, requires_grad=True)
    positive = torch.randn(1, 4, 6, 2, 2, 2, requires_grad=True)
    weights = Stage1LossWeights(reconstruction=2.0, contrastive=0.5)
    for form in ("infonce", "margin"):
        out = Stage1Loss(weights, contrastive=form)(x, recon, features, positive)
        assert set(out) == {"reconstruction", "contrastive", "total"}
        _check_total(out, weights)
    out["total"].backward()
    for t in (recon, features, positive):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    only_recon = Stage1Loss(Stage1LossWeights(contrastive=0.0))(x, recon)  # no features needed
    assert set(only_recon) == {"reconstruction", "total"}
    with pytest.raises(ValueError, match="positive_features"):
        Stage1Loss()(x, recon)


def test_stage2_total_terms_and_gradients():
    g = torch.Generator().manual_seed(8)
    x = torch.rand(1, 4, 12, 12, 12, generator=g)
    fused = torch.rand(1, 1, 12, 12, 12, generator=g, requires_grad=True)
    warped = torch.rand(1, 1, 12, 12, 12, generator=g, requires_grad=True)
    dvf = torch.randn(1, 3, 12, 12, 12, generator=g, requires_grad=True)
    weights = Stage2LossWeights(fidelity=1.5, light=5.0, ssim=5.0, ncc=2.0, smooth=0.3)
    out = Stage2Loss(weights)(x, fused, warped, dvf)
    assert set(out) == {"fidelity", "light", "ssim", "ncc", "smooth", "total"}
    _check_total(out, weights)
    out["total"].backward()
    for t in (fused, warped, dvf):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    no_gmn = Stage2Loss(Stage2LossWeights(ncc=0.0, smooth=0.0))(x, fused)
    assert set(no_gmn) == {"fidelity", "light", "ssim", "total"}
    _check_total(no_gmn, Stage2LossWeights(ncc=0.0, smooth=0.0))
    with pytest.raises(ValueError, match="warped"):
        Stage2Loss()(x, fused)


def test_stage2_public_default_weights():
    w = Stage2LossWeights()
    assert (w.fidelity, w.light, w.ssim, w.ncc, w.smooth) == (1.0, 5.0, 5.0, 1.0, 1.0)


def test_stage3_total_terms_and_gradients():
    labels = _labels()
    logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    out = Stage3Loss()(logits, labels)
    assert set(out) == {"ce", "dice", "total"}
    assert out["total"].item() == pytest.approx(0.5 * out["ce"].item() + 0.5 * out["dice"].item(), rel=1e-6)
    out["total"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    only_dice = Stage3Loss(Stage3LossWeights(ce=0.0, dice=1.0))(logits, labels)
    assert set(only_dice) == {"dice", "total"}
    assert only_dice["total"].item() == pytest.approx(only_dice["dice"].item())


def test_all_stage_losses_on_real_model_outputs():
    torch.manual_seed(0)
    model = NSLF(PRESETS["compact"]).train()
    x = torch.rand(1, 4, 32, 32, 32)
    labels = torch.randint(0, 4, (1, 32, 32, 32))
    out = model(x)
    positive = model.cunet(intensity_noise_augment(x, generator=torch.Generator().manual_seed(0)))
    stage1 = Stage1Loss()(x, out.sources.reconstruction, out.sources.global_features, positive.global_features)
    stage2 = Stage2Loss()(x, out.fusion.fused, out.registration.warped, out.registration.dvf)
    stage3 = Stage3Loss()(out.logits, labels)
    for terms in (stage1, stage2, stage3):
        assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    (stage1["total"] + stage2["total"] + stage3["total"]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.cunet.encoder[0][0].weight.grad.abs().sum() > 0
    assert model.fcd.weight_head[0].weight.grad.abs().sum() > 0
    assert model.fsd.classifier.weight.grad.abs().sum() > 0
    assert model.gmn.flow_heads[-1][-1].weight.grad.abs().sum() > 0  # the DVF head, zero at start, learns


def test_stage_losses_stay_float32_under_bf16_autocast():
    """On CUDA the trainer runs the networks under bf16 autocast. The stage loss must not: LNCC's
    local variances cancel in bf16 and stage 2's NCC term exploded to -3e8 on an H100. The same
    autocast on the CPU shows it: the raw LNCC under bf16 is far off, the stage step's is not."""
    from nslfcore.training.options import TrainingOptions
    from nslfcore.training.stages import StageStep

    torch.manual_seed(0)
    model = NSLF(PRESETS["compact"]).eval()
    image = torch.rand(1, 4, 32, 32, 32)
    smooth = F.avg_pool3d(image, 5, stride=1, padding=2)  # MR-like: smooth, locally correlated
    label = torch.zeros(1, 32, 32, 32, dtype=torch.long)
    step = StageStep(model, 2, TrainingOptions())
    with torch.no_grad():
        reference = step(smooth, label)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = step(smooth, label)
            raw = SourceLNCCLoss()(smooth[:, :1], smooth)
    assert all(v.dtype == torch.float32 for v in mixed.values())
    assert abs(float(mixed["ncc"]) - float(reference["ncc"])) < 0.05, (mixed["ncc"], reference["ncc"])
    assert abs(float(mixed["total"]) - float(reference["total"])) < 0.1
    exact = float(SourceLNCCLoss()(smooth[:, :1], smooth))
    assert abs(float(raw) - exact) > 0.05 or not math.isfinite(float(raw))  # what the step protects against


def test_stage3_fusion_term_keeps_the_fusion_and_skips_crops_missing_a_sequence():
    """Issue 31 point 2: with stage3.fusion > 0 the stage-2 fusion terms (no GMN) join the segmentation
    loss, over the batch items that have all four sequences; off by default."""
    from nslfcore.losses import Stage2Loss, Stage2LossWeights, Stage3Loss, Stage3LossWeights

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 16, 16, 16)
    labels = torch.randint(0, 4, (2, 16, 16, 16))
    x = torch.rand(2, 4, 16, 16, 16)
    fused = x.mean(dim=1, keepdim=True)
    plain = Stage3Loss()(logits, labels)
    assert "fusion" not in plain
    loss = Stage3Loss(Stage3LossWeights(fusion=0.5))
    both = loss(logits, labels, x, fused)
    expected = Stage2Loss(Stage2LossWeights(ncc=0.0, smooth=0.0))(x, fused)["total"]
    assert torch.allclose(both["fusion"], expected, atol=1e-6)
    assert torch.allclose(both["total"], plain["total"] + 0.5 * expected, atol=1e-6)
    dropped = x.clone()
    dropped[1, 2] = 0  # the second crop lost T2: only the first counts
    one = loss(logits, labels, dropped, fused)
    first = Stage2Loss(Stage2LossWeights(ncc=0.0, smooth=0.0))(x[:1], fused[:1])["total"]
    assert torch.allclose(one["fusion"], first, atol=1e-6)
    with pytest.raises(ValueError, match="fusion term"):
        loss(logits, labels)
