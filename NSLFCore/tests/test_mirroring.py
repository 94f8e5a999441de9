"""Test-time mirroring: every flip is undone exactly, and the probabilities are the mean of the passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nslfcore.config import PRESETS
from nslfcore.data.case import Case
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.inference import run
from nslfcore.inference.mirroring import MIRRORS, flip, mirror_axes, mirrored_inference
from nslfcore.models import NSLF


@pytest.fixture(scope="module")
def model() -> NSLF:
    """A seeded random ``compact`` NSLF (for the fused volume)."""
    torch.manual_seed(0)
    return NSLF(PRESETS["compact"]).eval()


class RandomConvolution(torch.nn.Module):
    """A segment-only ``Network``: one seeded random 3 x 3 x 3 convolution, amplified. Its kernel is not
    symmetric, so a flipped input does not give the flipped output (a random NSLF is too uniform to show it)."""

    fuses, segments, sequential, segmentation_output = False, True, False, "classes"

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv3d(4, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 5)

    def predict(self, x: torch.Tensor, segment: bool = True, sequential: bool = False, present=None):
        return None, self.conv(x)

    def inference_bytes_per_voxel(self, sequential: bool = False) -> int:
        return 256

    def checkpoint_fields(self) -> dict:
        return {"kind": "test"}


def _flipped(case: Case, axes: tuple[int, ...]) -> Case:
    """The case with its images flipped along the spatial ``axes`` (0 z, 1 y, 2 x); same grid."""
    images = {m: np.ascontiguousarray(np.flip(image, axes)) for m, image in case.images.items()}
    return dataclasses.replace(case, images=images, label=None)


def test_the_choices_are_the_identity_first_then_distinct_flips():
    assert mirror_axes("none") == [()]
    assert mirror_axes("lr") == [(), (2,)]  # x: the last axis of (z, y, x)
    every = mirror_axes("all")
    assert every[0] == () and len(every) == 8 and len({frozenset(a) for a in every}) == 8
    assert all(set(axes) <= {0, 1, 2} for axes in every)
    assert MIRRORS == ("none", "lr", "all")
    with pytest.raises(ValueError, match="'none', 'lr' or 'all'"):
        mirror_axes("ud")


def test_flip_is_its_own_inverse_and_flips_the_named_axis():
    volume = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (class, z, y, x)
    for axes in mirror_axes("all"):
        assert torch.equal(flip(flip(volume, axes), axes), volume)
    assert torch.equal(flip(volume, (2,))[:, :, :, 0], volume[:, :, :, -1])  # x is the last axis
    assert torch.equal(flip(volume, (0,))[:, 0], volume[:, -1])  # z the first spatial one


def test_lr_mirroring_is_the_mean_of_the_case_and_its_flip_flipped_back(model):
    case = generate_tiny_case(seed=3, size=(24, 32, 28))
    network = RandomConvolution().eval()
    plain = run(case, network, fuse=False, device="cpu", probabilities=True)
    mirrored_case = run(_flipped(case, (2,)), network, fuse=False, device="cpu", probabilities=True)
    back = np.flip(mirrored_case.probabilities, 3)  # (class, z, y, x): x is axis 3
    assert np.abs(back - plain.probabilities).max() > 0.1, "the network must not be symmetric for this test to mean anything"
    lr = run(case, network, fuse=False, device="cpu", probabilities=True, mirror="lr")
    np.testing.assert_allclose(lr.probabilities, (plain.probabilities + back) / 2, atol=1e-5)
    none = run(case, network, fuse=False, device="cpu", probabilities=True, mirror="none")
    np.testing.assert_array_equal(none.probabilities, plain.probabilities)  # one pass: unchanged
    assert (none.confidence.passes, lr.confidence.passes) == (1, 2)
    # The fused volume is the unflipped pass's.
    np.testing.assert_array_equal(run(case, model, device="cpu", mirror="lr").fused, run(case, model, device="cpu").fused)


def test_all_mirroring_averages_the_eight_flips_each_undone(model):
    image = np.random.default_rng(0).random((4, 12, 16, 20), dtype=np.float32)  # a brain box (4, z, y, x)
    network = RandomConvolution().eval()

    def one_pass(box: np.ndarray, mode: str, device: torch.device, progress) -> tuple:
        x = torch.from_numpy(np.ascontiguousarray(box))[None]
        with torch.inference_mode():
            fused, _ = model.predict(x, segment=False)
            _, logits = network.predict(x)
        progress(0.9, "pass")
        return fused[0, 0], torch.softmax(logits, dim=1)[0], "whole", device

    seen: list[float] = []
    out = mirrored_inference(one_pass, image, "whole", torch.device("cpu"), "classes", lambda f, m: seen.append(f), "all")
    expected = torch.zeros(4, 12, 16, 20)
    for axes in mirror_axes("all"):
        _, probs, _, _ = one_pass(np.flip(image, tuple(a + 1 for a in axes)), "whole", torch.device("cpu"), lambda f, m: None)
        expected += torch.flip(probs, [a + 1 for a in axes])
    assert (expected / 8 - one_pass(image, "whole", torch.device("cpu"), lambda f, m: None)[1]).abs().max() > 0.1  # not symmetric
    torch.testing.assert_close(out.probabilities, expected / 8, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.fused, one_pass(image, "whole", torch.device("cpu"), lambda f, m: None)[0])
    assert len(out.whole_tumour) == 8 and out.whole_tumour[0].shape == (12, 16, 20)
    assert seen == sorted(seen) and len(seen) == 8 and seen[-1] == pytest.approx(0.9)  # one step per pass, 0.1 -> 0.9
