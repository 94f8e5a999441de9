"""nslfcore.compat: the authors' checkpoints land in the right places and compute the same thing."""

from __future__ import annotations

import logging

import pytest
import torch

import authors_reference as ref
from nslfcore.compat import (
    AUTHORS_MODALITIES,
    authors_to_ours_spatial,
    identify_network,
    load_authors_checkpoints,
    nslf_from_authors,
    ours_to_authors_spatial,
)
from nslfcore.config import PRESETS
from nslfcore.models import NSLF


def _param_count(shapes: dict[str, tuple[int, ...]]) -> int:
    trainable = {k: s for k, s in shapes.items() if not k.rsplit(".", 1)[-1].startswith(("running", "num_batches"))}
    return sum(int(torch.tensor(s).prod()) if s else 1 for s in trainable.values())


@pytest.fixture(scope="module")
def authors_weights():
    return (
        ref.random_state_dict(ref.unet_shapes(), seed=1),
        ref.random_state_dict(ref.fusenet_shapes(), seed=2),
        ref.random_state_dict(ref.segnet_shapes(), seed=3),
    )


def test_reference_shapes_have_the_published_parameter_counts():
    assert _param_count(ref.unet_shapes()) == 10_739_873
    fcd_used = {k: s for k, s in ref.fusenet_shapes().items() if not k.startswith("F_conv")}
    assert _param_count(fcd_used) == 1_888_161
    assert _param_count(ref.fusenet_shapes()) - 1_888_161 == 223_105
    fsd_used = {k: s for k, s in ref.segnet_shapes().items() if k.startswith(("inc1", "inc2", "outc"))}
    assert _param_count(fsd_used) == 415_432


def test_identify_network(authors_weights):
    unet, fusenet, segnet = authors_weights
    assert [identify_network(sd) for sd in authors_weights] == ["unet", "fusenet", "segnet"]
    with pytest.raises(ValueError, match="none of the NSLF authors"):
        identify_network({"foo.weight": torch.zeros(1)})


@pytest.mark.parametrize("cunet_weights", ["shared", "per_modality"])
def test_every_used_tensor_lands_in_place(authors_weights, cunet_weights, caplog):
    unet, fusenet, segnet = authors_weights
    model = NSLF(PRESETS["paper"].replace(cunet_weights=cunet_weights))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    containers = [{"model": unet, "optimizer1": {}}, {"fusenet": fusenet}, {"model": segnet}]
    with caplog.at_level(logging.WARNING, logger="nslfcore.compat"):
        report = load_authors_checkpoints(model, *containers)
    # Nothing of the used parts is left over and nothing of ours is missing.
    used_unet = set(unet)
    used_fuse = {k for k in fusenet if not k.startswith("F_conv")}
    used_seg = {k for k in segnet if k.startswith(("inc1", "inc2", "outc"))}
    assert set(report.loaded["unet"]) == used_unet
    assert set(report.loaded["fusenet"]) == used_fuse
    assert set(report.loaded["segnet"]) == used_seg
    skipped = {k.split(":", 1)[1] for k in report.skipped}
    assert skipped == (set(fusenet) - used_fuse) | (set(segnet) - used_seg)
    assert "Skipped" in caplog.text and "F_conv" in caplog.text
    after = model.state_dict()
    for key in after:
        changed = not torch.equal(before[key], after[key])
        if key.startswith("gmn."):
            assert not changed, f"{key}: the GMN has no released weights and must keep its identity start"
        elif not key.endswith("num_batches_tracked"):
            assert changed, f"{key} was not loaded"
    # Spot checks of placement and layout conversion.
    g = model.cunet.groups
    enc = after["cunet.encoder.2.3.weight"]
    expected = authors_to_ours_spatial(unet["down2.mpconv.1.conv.3.weight"])
    assert torch.equal(enc, torch.cat([expected] * g))
    assert torch.equal(after["cunet.decoder.3.up.weight"], torch.cat([authors_to_ours_spatial(unet["up4.up.weight"])] * g))
    assert torch.equal(after["fcd.upsample.13.weight"], authors_to_ours_spatial(fusenet["up1.13.weight"]))
    assert torch.equal(after["fsd.classifier.weight"], authors_to_ours_spatial(segnet["outc.conv.weight"]))
    first = after["fsd.blocks.0.0.weight"]
    theirs = authors_to_ours_spatial(segnet["inc1.conv.conv.0.weight"])
    for ours_index, modality in enumerate(model.config.modalities):
        j = AUTHORS_MODALITIES.index(modality)
        assert torch.equal(first[:, 32 * ours_index : 32 * (ours_index + 1)], theirs[:, 32 * j : 32 * (j + 1)])


@pytest.mark.parametrize("cunet_weights", ["shared", "per_modality"])
def test_fuse_and_segment_equal_the_authors_forward(authors_weights, cunet_weights):
    # float64 on both sides: the comparison is about layout and algebra, not float32 rounding.
    unet, fusenet, segnet = ({k: v.double() if v.is_floating_point() else v for k, v in sd.items()} for sd in authors_weights)
    model = nslf_from_authors({"unet": unet}, {"fusenet": fusenet}, {"model": segnet}, cunet_weights=cunet_weights)
    model = model.double()
    torch.manual_seed(5)
    # Authors' layout: (1, 4, Y, X, Z), modalities (flair, t1ce, t1, t2); a non-cubic window.
    theirs = torch.rand(1, 4, 16, 32, 48, dtype=torch.float64)
    fused_ref, logits_ref = ref.authors_pipeline(unet, fusenet, segnet, theirs)
    ours = authors_to_ours_spatial(theirs)[:, [AUTHORS_MODALITIES.index(m) for m in model.config.modalities]]
    with torch.no_grad():
        fusion = model.fuse(ours)
        logits = model.segment(ours)
    assert ours.shape == (1, 4, 48, 16, 32)
    torch.testing.assert_close(ours_to_authors_spatial(fusion.fused), fused_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_to_authors_spatial(logits), logits_ref, atol=1e-5, rtol=1e-5)
    assert logits_ref.abs().max() > 0.1  # the comparison is not between near-zero tensors


def test_wrong_model_widths_and_stray_keys_are_refused(authors_weights):
    unet, fusenet, _ = authors_weights
    with pytest.raises(ValueError, match="'paper' configuration"):
        load_authors_checkpoints(NSLF(PRESETS["compact"]), {"unet": unet})
    stray = dict(fusenet) | {"extra_head.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="extra_head.weight"):
        load_authors_checkpoints(NSLF(PRESETS["paper"]), {"model": stray})
    incomplete = {k: v for k, v in unet.items() if not k.startswith("up3.")}
    with pytest.raises(ValueError, match="unset"):
        load_authors_checkpoints(NSLF(PRESETS["paper"]), {"model": incomplete})
    with pytest.raises(ValueError, match="second unet"):
        load_authors_checkpoints(NSLF(PRESETS["paper"]), {"model": unet}, {"unet": unet})


def test_checkpoint_files_load_with_weights_only(tmp_path, authors_weights):
    unet, fusenet, segnet = authors_weights
    paths = []
    for name, key, sd in (("unet-model3.pth", "unet", unet), ("fuse-model2.pth", "fusenet", fusenet), ("model.pth", "model", segnet)):
        path = tmp_path / name
        torch.save({key: sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, path)
        paths.append(path)
    model = nslf_from_authors(*paths)
    assert not model.training
    torch.testing.assert_close(
        model.state_dict()["fsd.blocks.1.3.bias"], segnet["inc2.conv.conv.3.bias"], atol=0, rtol=0
    )


def test_split_modalities_gives_each_modality_its_own_u_net():
    model = NSLF(PRESETS["compact"]).eval()
    for module in model.cunet.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 4, 16, 32, 32)
    with torch.inference_mode():
        grouped = model.cunet(x)
        for i, net in enumerate(model.cunet.split_modalities()):
            single = net(x[:, i : i + 1])
            torch.testing.assert_close(single.local_features[:, 0], grouped.local_features[:, i], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(single.global_features[:, 0], grouped.global_features[:, i], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(single.reconstruction[:, 0], grouped.reconstruction[:, i], atol=1e-5, rtol=1e-4)
    shared = NSLF(PRESETS["compact"].replace(cunet_weights="shared")).cunet
    assert shared.split_modalities() == [shared] * 4
