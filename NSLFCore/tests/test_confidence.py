"""Per-case confidence: agreement of the mirrored passes, entropy in the tumour, the low flag, and where it is reported."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from nslfcore.cli import main as nslf
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.inference import run
from nslfcore.inference.confidence import (
    MAX_MEAN_ENTROPY,
    MIN_AGREEMENT,
    Confidence,
    mean_pairwise_dice,
    measure_confidence,
    normalised_entropy,
    read_confidence,
)


class _SegmentOnly(torch.nn.Module):
    """The smallest segment-only ``Network``: subclasses give :meth:`logits` ``(B, 4, z, y, x)``."""

    fuses, segments, sequential, segmentation_output = False, True, False, "classes"

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def predict(self, x: torch.Tensor, segment: bool = True, sequential: bool = False, present=None):
        return None, self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inference_bytes_per_voxel(self, sequential: bool = False) -> int:
        return 64

    def checkpoint_fields(self) -> dict:
        return {"kind": "test"}


class CertainByVoxel(_SegmentOnly):
    """Edema where FLAIR > 0.5, background elsewhere, with logits +-100: one-hot probabilities, and
    voxel by voxel, so every flip of the input flips the output exactly."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        edema = (x[:, 3:4] > 0.5).float() * 200 - 100
        never = torch.full_like(edema, -100.0)
        return torch.cat([-edema, never, edema, never], dim=1)


class RandomLogits(_SegmentOnly):
    """Logits drawn anew on every call, whatever the input: a network that knows nothing."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], 4, *x.shape[2:])


# ------------------------------------------------------------------------------------ the measure
def test_entropy_is_0_for_certain_and_1_for_uniform_probabilities():
    certain = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 4).T.float()  # (class, voxel)
    assert torch.equal(normalised_entropy(certain), torch.zeros(4))
    torch.testing.assert_close(normalised_entropy(torch.full((4, 3), 0.25)), torch.ones(3))
    half = torch.tensor([[0.5], [0.5], [0.0], [0.0]])  # two classes equally likely: log 2 / log 4
    torch.testing.assert_close(normalised_entropy(half), torch.tensor([0.5]))


def test_agreement_is_the_mean_pairwise_dice_inside_the_brain():
    brain = torch.zeros(1, 1, 10, dtype=torch.bool)
    brain[..., :8] = True
    a, b, c = (torch.zeros(1, 1, 10, dtype=torch.bool) for _ in range(3))
    a[..., 0:4] = True
    b[..., 0:2] = True
    c[..., 0:4] = True
    c[..., 9] = True  # outside the brain: not counted
    expected = np.mean([2 * 2 / (4 + 2), 1.0, 2 * 2 / (2 + 4)])  # (a, b), (a, c), (b, c)
    assert mean_pairwise_dice([a, b, c], brain) == pytest.approx(expected)
    assert mean_pairwise_dice([a], brain) is None
    empty = torch.zeros_like(a)
    assert mean_pairwise_dice([empty, empty], brain) == 1.0  # no tumour in either pass: they agree


def test_a_confident_symmetric_prediction_has_agreement_1_and_entropy_0():
    probs = torch.zeros(4, 4, 6, 6)
    probs[0] = 1.0
    probs[:, 1:3, 2:4, 2:4] = 0.0
    probs[2, 1:3, 2:4, 2:4] = 1.0  # an edema block in the middle, certain
    brain = torch.ones(4, 6, 6, dtype=torch.bool)
    tumour = probs.argmax(dim=0) > 0
    confidence = measure_confidence(probs, [tumour, tumour.flip(-1)], brain)  # symmetric: the flip is the same
    assert confidence == Confidence(agreement=1.0, mean_entropy=0.0, passes=2, tumour_voxels=8)
    assert not confidence.low and confidence.warning == ""
    nothing = measure_confidence(torch.eye(4)[0].reshape(4, 1, 1, 1).expand(4, 4, 6, 6), [], brain)
    assert (nothing.agreement, nothing.mean_entropy, nothing.tumour_voxels, nothing.passes) == (None, 0.0, 0, 1)


def test_low_confidence_is_flagged_with_a_plain_sentence_and_survives_a_json_round_trip(tmp_path):
    assert not Confidence(MIN_AGREEMENT, MAX_MEAN_ENTROPY, 2, 10).low  # the thresholds themselves are acceptable
    disagree = Confidence(MIN_AGREEMENT - 0.01, 0.1, 2, 10)
    unsure = Confidence(None, MAX_MEAN_ENTROPY + 0.01, 1, 10)
    assert disagree.low and unsure.low
    assert disagree.warning.startswith("Low confidence: mirrored passes agree only to Dice 0.89;")
    assert "unsure inside the tumour (entropy 0.51)" in unsure.warning and "mirrored" not in unsure.warning
    assert "not measured" in unsure.summary() and "agreement 0.89 (2 mirrored passes)" in disagree.summary()
    path = tmp_path / "confidence.json"
    path.write_text(disagree.to_json())
    stored = json.loads(path.read_text())
    assert stored["low"] is True and stored["warning"] == disagree.warning and stored["min_agreement"] == MIN_AGREEMENT
    assert read_confidence(path) == disagree
    assert read_confidence(tmp_path / "absent.json") is None


# ------------------------------------------------------------------------------- through run()
def test_a_certain_voxelwise_network_is_fully_confident_under_every_mirroring():
    case = generate_tiny_case(seed=3, size=(24, 32, 28))
    result = run(case, CertainByVoxel(), fuse=False, device="cpu", mirror="all")
    confidence = result.confidence
    assert confidence is not None and confidence.passes == 8 and confidence.tumour_voxels > 100
    assert confidence.agreement == 1.0
    assert confidence.mean_entropy == pytest.approx(0.0, abs=1e-6)
    assert not confidence.low


def test_a_random_logits_network_is_flagged_low():
    torch.manual_seed(0)
    case = generate_tiny_case(seed=3, size=(24, 32, 28))
    confidence = run(case, RandomLogits(), fuse=False, device="cpu", mirror="lr").confidence
    assert confidence is not None and confidence.low
    # Independent passes: each voxel's most likely class is random, so WT (3 classes of 4) overlaps
    # by about 3/4; the softmax of standard-normal logits keeps most of log 4.
    assert confidence.agreement == pytest.approx(0.75, abs=0.05) and confidence.agreement < MIN_AGREEMENT
    assert confidence.mean_entropy > MAX_MEAN_ENTROPY
    assert "agree only" in confidence.warning and "unsure" in confidence.warning
    alone = run(case, RandomLogits(), fuse=False, device="cpu").confidence  # without mirroring: entropy alone
    assert alone is not None and alone.agreement is None and alone.low


def test_mirror_must_be_one_of_the_choices():
    with pytest.raises(ValueError, match="mirror must be 'none', 'lr' or 'all'"):
        run(generate_tiny_case(seed=3, size=(16, 16, 16)), CertainByVoxel(), fuse=False, device="cpu", mirror="xy")


# ------------------------------------------------------------------------------- the command
def test_nslf_run_prints_and_writes_the_confidence_and_warns_when_low(random_model_file, tiny_case, tmp_path, capsys):
    out = tmp_path / "out"
    model = ["--model", str(random_model_file), "--device", "cpu"]
    assert nslf(["run", "--case", str(tiny_case), "--out", str(out), "--mirror", "lr", *model]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["confidence.json", "fused.nii.gz", "seg.nii.gz"]
    stored = json.loads((out / "confidence.json").read_text())
    assert stored["passes"] == 2 and 0 <= stored["agreement"] <= 1 and 0 <= stored["mean_entropy"] <= 1
    assert f"confidence: agreement {stored['agreement']:.2f} (2 mirrored passes)" in captured.out
    # A random network is unsure everywhere: the warning is on stderr, the run still succeeds.
    assert stored["low"] and f"warning: {stored['warning']}" in captured.err
    assert nslf(["fuse", "--case", str(tiny_case), "--out", str(tmp_path / "fused"), *model]) == 0
    assert "confidence" not in capsys.readouterr().out and not (tmp_path / "fused" / "confidence.json").exists()
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        nslf(["run", "--case", str(tiny_case), "--out", str(tmp_path / "other"), "--mirror", "ud", *model])


def test_the_cohort_summary_has_the_confidence_columns_also_for_skipped_cases(random_model_file, tiny_case, tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["run", "--cases", str(tiny_case.parent), "--out", str(out), "--model", str(random_model_file), "--device", "cpu"]
    assert nslf(args) == 0
    assert "low confidence" in capsys.readouterr().out  # the per-case line says so

    def row() -> dict[str, str]:
        with open(out / "summary.csv", newline="") as handle:
            (only,) = csv.DictReader(handle)
        return only

    done = row()
    stored = json.loads((out / tiny_case.name / "confidence.json").read_text())
    assert done["status"] == "done" and done["agreement"] == "" and done["low_confidence"] == "yes"  # no mirroring
    assert math.isclose(float(done["mean_entropy"]), stored["mean_entropy"], abs_tol=1e-4)
    assert nslf(args) == 0  # everything complete: skipped, the confidence read back from confidence.json
    skipped = row()
    assert skipped["status"] == "skipped" and skipped["mean_entropy"] == done["mean_entropy"]
