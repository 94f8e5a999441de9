"""Any three of the four sequences (issue 31 point 2): the missing one gets fusion weight 0 in every
forward path, inference accepts three inputs and says what that costs, fewer are refused."""

from __future__ import annotations

import copy
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nslfcore import MODALITIES
from nslfcore.cli import main as nslf
from nslfcore.config import PRESETS
from nslfcore.data.case import Case
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.data.transforms import preprocess_case
from nslfcore.data.validation import DataValidationError
from nslfcore.fusion_baselines import ClassicalFusion
from nslfcore.inference import as_case, run
from nslfcore.inference.missing import COST_MODEL, MISSING_SEQUENCE_COST, missing_sentence
from nslfcore.models import NSLF, present_channels

FLAIR = MODALITIES.index("flair")


def _model(config: str = "fast", seed: int = 0) -> NSLF:
    torch.manual_seed(seed)
    return NSLF(PRESETS[config]).eval()


def _input(seed: int = 1, shape: tuple[int, ...] = (2, 4, 20, 36, 28)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("config", ["fast", "compact"])
def test_no_mask_is_the_plain_weight_normalisation_bit_for_bit(config):
    """``present=None`` (and all present) leave today's ``w_i = W_i / (sum_j W_j + eps)`` unchanged, to the bit."""
    model, x = _model(config), _input()
    everything = torch.ones(2, 4, dtype=torch.bool)
    with torch.inference_mode():
        plain, logits = model.fuse_and_segment(x)
        masked, masked_logits = model.fuse_and_segment(x, everything)
        sequential, sequential_logits = model.fuse_and_segment_sequential(x)
        sequential_masked, _ = model.fuse_and_segment_sequential(x, present=everything)
        raw = torch.rand(2, 4, 5, 6, 7)
        combined = model.fcd.combine(raw, x[..., :5, :6, :7])
    assert torch.equal(plain.weights, masked.weights) and torch.equal(plain.fused, masked.fused)
    assert torch.equal(logits, masked_logits)
    assert torch.equal(sequential.fused, sequential_masked.fused)
    reference = raw / (raw.sum(dim=1, keepdim=True) + model.fcd.eps)  # the weight rule before missing sequences
    assert torch.equal(combined.weights, reference)
    assert torch.equal(combined.fused, (reference * x[..., :5, :6, :7]).sum(dim=1, keepdim=True))
    torch.testing.assert_close(sequential.fused, plain.fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sequential_logits, logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", ["fast", "compact"])
def test_a_missing_sequence_gets_weight_zero_and_the_fused_volume_is_a_convex_combination_of_the_others(config):
    model, x = _model(config), _input()
    x[1, FLAIR] = 0  # case 1 has no FLAIR (an all-zero channel after normalisation); case 0 has all four
    present = present_channels(x)
    assert present.tolist() == [[True, True, True, True], [True, True, True, False]]
    with torch.inference_mode():
        unmasked = model.fuse(x)
        passes = {
            "fuse": (model.fuse(x, present), None),
            "fuse_and_segment": model.fuse_and_segment(x, present),
            "sequential": model.fuse_and_segment_sequential(x, present=present),
            "training": (copy.deepcopy(model).train()(x, present=present).fusion, None),  # batch statistics
        }
    for name, (fusion, _) in passes.items():
        weights = fusion.weights
        assert torch.equal(weights[1, FLAIR], torch.zeros_like(weights[1, FLAIR])), name
        torch.testing.assert_close(weights[1].sum(0), torch.ones_like(weights[1, 0]), atol=1e-5, rtol=0, msg=name)
        assert (weights[1, :FLAIR] > 0).all(), name
        expected = (weights[1, :FLAIR] * x[1, :FLAIR]).sum(0)  # the three present sources only
        torch.testing.assert_close(fusion.fused[1, 0], expected, atol=1e-6, rtol=0, msg=name)
    # Case 0 (all four) is what it is without a mask; case 1 differs: the mask is what moved its weights.
    fusion = passes["fuse"][0]
    assert torch.equal(fusion.fused[0], unmasked.fused[0])
    assert (unmasked.weights[1, FLAIR] > 0).all()
    _, masked_logits = passes["fuse_and_segment"]
    assert masked_logits.shape == (2, 4, *x.shape[2:]) and torch.isfinite(masked_logits).all()


def test_a_case_with_no_sequence_present_keeps_all_four_and_bad_masks_are_refused():
    model, x = _model(), _input(shape=(1, 4, 16, 16, 16))
    with torch.inference_mode():
        none_present = model.fuse(x, torch.zeros(1, 4, dtype=torch.bool))
        plain = model.fuse(x)
    assert torch.equal(none_present.weights, plain.weights)
    for bad in (torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 4), torch.ones(2, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match="present must be a \\(1, 4\\) boolean tensor"):
            model.fuse(x, bad)
    with pytest.raises(ValueError, match="spatial axes"):
        present_channels(torch.ones(3, 4))


def test_present_channels_reads_zero_channels_per_sample():
    x = torch.rand(3, 4, 6, 7, 8) - 0.5  # negative values count: max |x| > 0
    x[0, 1] = 0
    x[2] = 0
    x[1, 3] = 0
    x[1, 3, 5, 6, 7] = -1e-6
    assert present_channels(x).tolist() == [[True, False, True, True], [True, True, True, True], [False] * 4]


def test_classical_fusion_uses_the_present_sources_only():
    x = _input(shape=(1, 4, 8, 8, 8))
    present = torch.tensor([[True, False, True, True]])
    fused, _ = ClassicalFusion("mean").predict(x, present=present)
    torch.testing.assert_close(fused[0, 0], x[0, [0, 2, 3]].mean(0))


# -------------------------------------------------------------------------------------- inference
def _three(case: Case, missing: str) -> Case:
    return Case(case.name, {m: a for m, a in case.images.items() if m != missing}, None, case.geometry)


def test_a_missing_sequence_normalises_to_a_zero_channel():
    case = _three(generate_tiny_case(seed=3), "t2")
    assert case.missing == ["t2"]
    prepared = preprocess_case(case)
    t2 = MODALITIES.index("t2")
    assert not prepared.image[t2].any()
    assert all(prepared.image[i].max() == 1.0 for i in range(4) if i != t2)


class _Spy(torch.nn.Module):
    """An NSLF that records the ``present`` mask of every network call (whole volume or window)."""

    def __init__(self, model: NSLF) -> None:
        super().__init__()
        self.model, self.calls = model, []
        self.fuses, self.segments, self.sequential = True, True, True
        self.segmentation_output = model.segmentation_output

    def predict(self, x, segment=True, sequential=False, present=None):
        self.calls.append((x.abs().amax(dim=(2, 3, 4)) > 0, present))
        return self.model.predict(x, segment, sequential, present)

    def inference_bytes_per_voxel(self, sequential=False):
        return self.model.inference_bytes_per_voxel(sequential)

    def checkpoint_fields(self):
        return self.model.checkpoint_fields()


@pytest.mark.parametrize("mode", ["whole", "sequential", "sliding"])
def test_inference_passes_the_cases_mask_to_every_window_and_fuses_the_three_present_sources(mode):
    case = _three(generate_tiny_case(seed=4), "flair")
    spy = _Spy(_model())
    result = run(case, spy, device="cpu", mode=mode, roi=(32, 32, 32), precision="fp32")
    assert result.missing == "flair" and result.labels is not None and result.fused is not None
    expected = [[True, True, True, False]]  # the case's mask in every call, whatever a window happens to hold
    assert spy.calls and all(present.tolist() == expected for _, present in spy.calls), spy.calls
    assert all(not seen[0, FLAIR] for seen, _ in spy.calls)  # the missing channel reached the network as zeros
    assert len(spy.calls) > (1 if mode == "sliding" else 0)
    prepared = preprocess_case(case)
    sources = prepared.record.uncrop(prepared.image[:FLAIR])  # the three present, normalised, on the case grid
    brain = result.fused > 0
    assert brain.sum() > 1000
    assert (result.fused[brain] >= sources.min(0)[brain] - 1e-5).all()  # convex combination: within the sources
    assert (result.fused[brain] <= sources.max(0)[brain] + 1e-5).all()
    full = run(generate_tiny_case(seed=4), spy, device="cpu", mode=mode, roi=(32, 32, 32), precision="fp32")
    assert full.missing is None and spy.calls[-1][1] is None  # four sequences: no mask, as before


def _write(case: Case, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for modality, image in case.images.items():
        paths[modality] = folder / f"{case.name}_{modality}.nii.gz"
        sitk.WriteImage(case.geometry.to_image(image), str(paths[modality]))
    return paths


def test_three_files_a_folder_lacking_one_and_a_three_image_case_are_accepted_and_two_missing_refused(tmp_path):
    case = generate_tiny_case(seed=5, size=(24, 32, 32))
    paths = _write(case, tmp_path / case.name)
    assert as_case({m: p for m, p in paths.items() if m != "t1"}).missing == ["t1"]
    assert as_case({**paths, "t2": None}).missing == ["t2"]
    paths["t1ce"].unlink()
    from_folder = as_case(tmp_path / case.name)
    assert from_folder.missing == ["t1ce"] and from_folder.geometry == case.geometry
    assert as_case(_three(case, "flair")).missing == ["flair"]
    with pytest.raises(DataValidationError, match=f"{case.name}: no t1ce or flair file; NSLF needs at least 3"):
        paths["flair"].unlink()
        as_case(tmp_path / case.name)
    with pytest.raises(DataValidationError, match="no t1 or t2 volume; NSLF needs at least 3 of the four sequences"):
        as_case(Case(case.name, {"t1ce": case.images["t1ce"], "flair": case.images["flair"]}, None, case.geometry))
    with pytest.raises(DataValidationError, match="no t1ce, t2 or flair input; .* so add at least two of them"):
        as_case({"t1": paths["t1"]})


def test_the_sentence_comes_from_the_measured_table():
    cost = MISSING_SEQUENCE_COST["flair"]
    sentence = missing_sentence("flair", COST_MODEL)
    assert sentence.startswith("FLAIR is missing: fused and segmented from T1, T1ce and T2; on 5 held-out phantoms")
    assert f"{cost['WT']:.2f} WT, {cost['TC']:.2f} TC and {cost['ET']:.2f} ET Dice with model {COST_MODEL}." in sentence
    assert "(not measured for model mine)" in missing_sentence("t1ce", "mine", fuse=False)
    assert missing_sentence("t2", "mine", segment=False) == "T2 is missing: fused from T1, T1ce and FLAIR."
    assert set(MISSING_SEQUENCE_COST) == set(MODALITIES)
    assert all(0 <= v <= 1 for costs in MISSING_SEQUENCE_COST.values() for v in costs.values())
    with pytest.raises(ValueError, match="'pd' is not a modality"):
        missing_sentence("pd")


# ------------------------------------------------------------------------------------ command line
def _files(case_dir: Path, without: str) -> list[str]:
    args = []
    for modality in MODALITIES:
        if modality != without:
            args += [f"--{modality}", str(next(case_dir.glob(f"*_{modality}.nii.gz")))]
    return args


def test_cli_runs_on_three_files_and_prints_what_the_missing_one_costs(random_model_file, tiny_case, tmp_path, capsys):
    out = tmp_path / "out"
    assert nslf(["run", *_files(tiny_case, "t2"), "--out", str(out), "--model", str(random_model_file)]) == 0
    printed = capsys.readouterr().out
    assert {"fused.nii.gz", "seg.nii.gz"} <= {p.name for p in out.iterdir()}
    assert missing_sentence("t2", random_model_file.stem) in printed
    reference = sitk.ReadImage(str(next(tiny_case.glob("*_t1.nii.gz"))))
    assert sitk.ReadImage(str(out / "fused.nii.gz")).GetSize() == reference.GetSize()
    next(tiny_case.glob("*_flair.nii.gz")).unlink()  # a case folder lacking FLAIR, fuse only
    fused_only = tmp_path / "fused-only"
    assert nslf(["fuse", "--case", str(tiny_case), "--out", str(fused_only), "--model", str(random_model_file)]) == 0
    assert missing_sentence("flair", random_model_file.stem, segment=False) in capsys.readouterr().out
    assert sorted(p.name for p in fused_only.iterdir()) == ["fused.nii.gz"]


def test_cli_with_two_missing_fails_in_one_sentence_and_writes_nothing(random_model_file, tiny_case, tmp_path, capsys):
    out = tmp_path / "out"
    args = _files(tiny_case, "t2")[2:]  # no t1, no t2
    assert nslf(["segment", *args, "--out", str(out), "--model", str(random_model_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Missing inputs --t1 --t2; give at least 3 of the four images" in err[0], err
    next(tiny_case.glob("*_t2.nii.gz")).unlink()
    next(tiny_case.glob("*_flair.nii.gz")).unlink()
    assert nslf(["run", "--case", str(tiny_case), "--out", str(out), "--model", str(random_model_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no t2 or flair file; NSLF needs at least 3 of the four sequences" in err[0], err
    assert not out.exists()


def test_cohort_runs_a_case_lacking_one_sequence_and_names_it_in_the_summary(random_model_file, tiny_case, tmp_path, capsys):
    cases = tiny_case.parent
    second = Path(shutil.copytree(tiny_case, cases / "BraTS2021_00001"))
    for path in second.iterdir():
        path.rename(path.with_name(path.name.replace("BraTS2021_00000", "BraTS2021_00001")))
    next(second.glob("*_t1ce.nii.gz")).unlink()
    out = tmp_path / "out"
    assert nslf(["run", "--cases", str(cases), "--out", str(out), "--model", str(random_model_file), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "2 done" in printed
    assert f"1 case(s) without t1ce (BraTS2021_00001): {missing_sentence('t1ce', random_model_file.stem)}" in printed
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    assert rows["BraTS2021_00000"]["missing"] == "" and rows["BraTS2021_00001"]["missing"] == "t1ce"
    assert (out / "BraTS2021_00001" / "seg.nii.gz").is_file()
    assert nslf(["run", "--cases", str(cases), "--out", str(out), "--model", str(random_model_file), "--device", "cpu"]) == 0
    with open(out / "summary.csv", newline="") as handle:  # skipped on the rerun, still named
        assert {row["case"]: row["missing"] for row in csv.DictReader(handle)}["BraTS2021_00001"] == "t1ce"
    assert "1 case(s) without t1ce" in capsys.readouterr().out
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "BraTS2021_00001" / "fused.nii.gz")))).all()
