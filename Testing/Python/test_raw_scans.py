"""Raw scans in the Slicer module (issue 32 point 2) against real MRML: when the option is proposed, the
preprocessed run's transform nodes and brain segment, cancel and failure during preprocessing, the batch
flags. The deepbet dependency step is tested in ``test_dependencies.py``.

The fast tests use a tiny phantom whose T2 is moved off the T1ce grid (registration runs on it in
well under a second; deepbet then finds no plausible brain, which is the failure under test). The one
slow test preprocesses a simulated raw exam (:func:`nslfcore.data.raw_exam.simulate_raw_exam`) for real.
"""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nslfcore.data.case import Geometry
from NSLFSlicerLib.background import BackgroundRun
from NSLFSlicerLib.checks import (
    HEAD_TISSUE_ML,
    PREPROCESS_REFERENCE_ORDER,
    InputError,
    preprocess_reference,
    preprocessing_reason,
    tissue_ml,
)
from NSLFSlicerLib.hierarchy import study_of
from NSLFSlicerLib.logic import Cancelled, NSLFLogicCore, NSLFOutputs
from NSLFSlicerLib.mrml_io import (
    RAS_FROM_LPS,
    array_view,
    ijk_to_ras,
    new_node,
    set_volume,
    vtk_matrix,
)
from NSLFSlicerLib.panel_state import PreprocessProposal
from NSLFSlicerLib.terminology import BRAIN
from NSLFSlicerLib.testing import (
    load_case_nodes,
    oblique_direction,
    put_in_study,
    write_phantom,
    write_random_model,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "NSLFSlicer" / "Scripts" / "nslf_batch.py"


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    """A tiny phantom case on an axis-aligned 1 mm grid, and a random compact model."""
    folder = tmp_path_factory.mktemp("raw")
    return write_phantom(folder / "cases", oblique=False), write_random_model(folder / "model.pt")


def load_inputs(case_dir: Path) -> tuple[NSLFLogicCore, dict]:
    logic = NSLFLogicCore()
    nodes = load_case_nodes(logic.context, case_dir)
    put_in_study(nodes)
    return logic, nodes


def move(node, shift_lps=(0.0, 0.0, 0.0), spacing=None, direction=None) -> None:
    """Put the node's voxels on another grid: origin moved by ``shift_lps`` mm, other spacing or LPS direction."""
    geometry = Geometry.from_matrix(tuple(node.GetImageData().GetDimensions()), RAS_FROM_LPS @ ijk_to_ras(node))
    geometry = Geometry(
        size=geometry.size, spacing=spacing or geometry.spacing, direction=direction or geometry.direction,
        origin=tuple(o + s for o, s in zip(geometry.origin, shift_lps)),
    )  # fmt: skip
    node.SetIJKToRASMatrix(vtk_matrix(RAS_FROM_LPS @ geometry.ijk_to_lps()))


@pytest.fixture
def misaligned(tiny_case):
    """A logic on a fresh scene and the tiny case's inputs with the T2 moved 3 mm off the others' grid."""
    logic, nodes = load_inputs(tiny_case[0])
    move(nodes["t2"], (3.0, -2.0, 1.5))
    return logic, nodes


def synthetic_head(scene, skull: bool):
    """A 1 mm volume node holding an ellipsoidal brain (1.3 l), with a scalp-and-neck shell and scanner noise
    around it when ``skull`` (a raw head), or 0 outside the brain (skull-stripped)."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[-95:95, -110:110, -90:90]
    radius = np.sqrt((x / 62.0) ** 2 + (y / 80.0) ** 2 + (z / 62.0) ** 2)
    values = np.where(radius < 1.0, 1.0 + 0.1 * rng.standard_normal(radius.shape), 0.0).astype(np.float32)
    if skull:
        values[(radius > 1.12) & (radius < 1.35)] = 1.4  # bright scalp fat and muscle; the skull at 1.0-1.12 stays dark
        values[(z < -40) & (radius < 1.5) & (radius >= 1.0) & (np.abs(x) < 45) & (np.abs(y) < 55)] = 0.8  # neck
        values += np.abs(0.02 * rng.standard_normal(values.shape)).astype(np.float32)
    reference = new_node(scene, "vtkMRMLScalarVolumeNode", "reference")
    node = new_node(scene, "vtkMRMLScalarVolumeNode", "head" if skull else "brain")
    set_volume(node, values, reference)
    return node


# ------------------------------------------------------------------------------- proposal
def test_the_option_is_proposed_with_one_sentence_for_each_cue(tiny_case):
    _, nodes = load_inputs(tiny_case[0])
    assert preprocessing_reason(nodes) is None  # a co-registered, skull-stripped 1 mm phantom
    move(nodes["t2"], (3.0, 0.0, 0.0))
    assert preprocessing_reason(nodes) == (
        "T2 'BraTS2021_00000_t2' is not on the grid of T1ce 'BraTS2021_00000_t1ce', "
        "so the sequences need co-registering: Raw scans is on."
    )
    for node in nodes.values():
        move(node, spacing=(0.9, 0.9, 3.0))
    move(nodes["t2"], (-3.0, 0.0, 0.0))
    assert preprocessing_reason(nodes) == (
        "T1 'BraTS2021_00000_t1' has 3.0 mm voxels (NSLF was trained on 1 mm), so it needs resampling: Raw scans is on."
    )
    for node in nodes.values():
        move(node, spacing=(1.0, 1.0, 1.0), direction=oblique_direction(25.0, 10.0))
    assert preprocessing_reason(nodes) == (
        "T1 'BraTS2021_00000_t1' is oblique (27 degrees from the axes), so it needs reorienting: Raw scans is on."
    )
    for node in nodes.values():
        move(node, direction=oblique_direction(2.0, 0.0))  # within the tolerance: not oblique
    assert preprocessing_reason(nodes) is None
    assert preprocessing_reason({"t1": None, "t1ce": None, "t2": None, "flair": None}) is None


def test_a_head_is_told_from_a_skull_stripped_brain(logic):
    head, brain = synthetic_head(logic.scene, skull=True), synthetic_head(logic.scene, skull=False)
    assert 1200 < tissue_ml(brain) < 1400  # the ellipsoid's 1.29 l
    assert tissue_ml(head) > HEAD_TISSUE_ML
    assert preprocessing_reason({"t1ce": brain}) is None
    reason = preprocessing_reason({"t1ce": head})
    assert reason is not None and reason.startswith("T1ce 'head' looks like a whole head (")
    assert reason.endswith(" l of tissue, more than a brain), so it needs skull-stripping: Raw scans is on.")


def test_the_reference_is_the_engines():
    from nslfcore.preprocess.pipeline import REFERENCE_ORDER, reference_sequence

    assert PREPROCESS_REFERENCE_ORDER == REFERENCE_ORDER
    for present in (["t1", "t1ce", "t2", "flair"], ["t1", "t2", "flair"], ["t1ce", "t2", "flair"], ["t2", "flair", "t1"]):
        assert preprocess_reference(dict.fromkeys(present, object())) == reference_sequence(dict.fromkeys(present))


def test_the_proposal_ticks_for_new_inputs_and_never_undoes_the_user():
    proposal = PreprocessProposal()
    calls = []

    def reason(sentence):
        return lambda: calls.append(sentence) or sentence

    assert proposal.inputs_changed(("a",), reason("grids differ"), False) == (True, "grids differ")
    assert proposal.inputs_changed(("a",), reason("grids differ"), False) is None  # the user unticked: kept
    assert calls == ["grids differ"]  # the voxels are read once per selection
    assert proposal.inputs_changed(("b",), reason(None), False) == (False, "")  # clean inputs: untick and no sentence
    assert proposal.inputs_changed(("c",), reason("head"), False) == (True, "head")
    assert proposal.inputs_changed(("d",), reason(None), True) == (False, "")  # the proposal had ticked it
    assert proposal.inputs_changed(("e",), reason(None), True) == (True, "")  # ticked by the user: kept
    assert proposal.inputs_changed(("f",), reason("head"), True) == (True, "head")
    assert proposal.inputs_changed(("g",), reason(None), True) == (True, "")  # still the user's tick


def test_the_widget_wires_the_option_to_the_run_and_the_dependency_step():
    tree = ast.parse((ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text())
    functions = {n.name: ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "preprocess=p.preprocess" in functions["onRun"].split("BackgroundRun(")[1]
    assert "ensure_dependencies(ask=True, preprocess=p.preprocess)" in functions["onRun"]
    changed = functions["onParameterChanged"]
    assert "self.preprocessProposal.inputs_changed(key, lambda: preprocessing_reason(nodes), p.preprocess)" in changed
    assert "p.preprocess, self.ui.preprocessReasonLabel.text = change" in changed
    assert "self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)" in functions["setParameterNode"]


# ------------------------------------------------------------------------------- results of preprocessing
def test_transform_nodes_map_each_sequence_onto_the_reference(misaligned, tmp_path):
    """An ITK registration written as .tfm becomes a transform node whose to-parent transform puts the
    sequence's voxels where the same anatomy lies in the reference (checked at the grid's corners)."""
    logic, nodes = misaligned
    reference = nodes["t1ce"]
    registration = sitk.Euler3DTransform((10.0, -20.0, 30.0), 0.12, -0.08, 0.3, (4.0, -6.0, 2.5))  # reference -> T2, LPS
    sitk.WriteTransform(registration, str(tmp_path / "t2_to_t1ce.tfm"))
    sitk.WriteTransform(sitk.AffineTransform(3), str(tmp_path / "t1ce_to_atlas.tfm"))
    mask = np.zeros(array_view(reference).shape, np.uint8)
    mask[10:30, 12:40, 8:35] = 1
    sitk_mask = sitk.GetImageFromArray(mask)
    sitk.WriteImage(sitk_mask, str(tmp_path / "brain_mask.nii.gz"))
    # T2's voxels hold the reference's anatomy as the registration says: T2 point = registration(reference point).
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(registration.GetMatrix()).reshape(3, 3)
    lps[:3, 3] = np.asarray(registration.TransformPoint((0.0, 0.0, 0.0)))
    sequence = nodes["t2"]
    sequence.SetIJKToRASMatrix(vtk_matrix(RAS_FROM_LPS @ lps @ RAS_FROM_LPS @ ijk_to_ras(reference)))
    files = {"reference": "t1ce", "brain_mask": str(tmp_path / "brain_mask.nii.gz"),
             "registrations": {"t2": str(tmp_path / "t2_to_t1ce.tfm")}, "atlas": str(tmp_path / "t1ce_to_atlas.tfm")}  # fmt: skip
    outputs = NSLFOutputs()
    logic.writePreprocessing(outputs, nodes, "Case", files)

    node = outputs.transforms["t2"]
    assert node.IsA("vtkMRMLLinearTransformNode") and node.GetName() == "Case T2 to T1ce"
    assert node.GetStorageNode() is None and not logic.scene.GetNodesByClass("vtkMRMLTransformStorageNode").GetNumberOfItems()
    to_parent = node.GetTransformToParent()
    dims = np.array(reference.GetImageData().GetDimensions()) - 1
    for corner in [(0, 0, 0), tuple(dims), (dims[0], 0, dims[2]), (0, dims[1], 0)]:
        index = np.array([*corner, 1.0])
        moved = np.array(to_parent.TransformPoint((ijk_to_ras(sequence) @ index)[:3]))
        assert np.allclose(moved, (ijk_to_ras(reference) @ index)[:3], atol=1e-4), corner
    ras_point = np.array([12.0, -7.0, 3.0])  # from-parent: a reference point to T2's point, as SimpleITK maps it (RAS <-> LPS)
    expected = RAS_FROM_LPS[:3, :3] @ np.array(registration.TransformPoint(tuple(RAS_FROM_LPS[:3, :3] @ ras_point)))
    assert np.allclose(node.GetTransformFromParent().TransformPoint(ras_point), expected, atol=1e-6)
    assert outputs.transforms["atlas"].GetName() == "Case T1ce to atlas"

    brain = outputs.brain
    segment = brain.GetSegmentation().GetSegment(BRAIN.segment_id)
    assert brain.GetName() == "Case NSLF brain mask" and segment.GetName() == "Brain"
    assert segment.GetTerminology() == BRAIN.terminology and "SCT^12738006^Brain" in segment.GetTerminology()
    assert np.allclose(segment.GetColor(), BRAIN.color)
    exported = logic.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    logic.context.segmentations.ExportAllSegmentsToLabelmapNode(brain, exported, 0)  # 0: the reference geometry's extent
    assert np.array_equal(ijk_to_ras(exported), ijk_to_ras(reference))
    assert int((array_view(exported) > 0).sum()) == int(mask.sum())
    study = study_of(reference)
    for placed in (brain, *outputs.transforms.values()):
        assert study_of(placed) == study, f"{placed.GetName()} is not beside the results"


# ------------------------------------------------------------------------------- cancel and failure
def test_a_cancel_during_preprocessing_leaves_no_nodes_and_no_files(misaligned, tiny_case, tmp_path):
    logic, nodes = misaligned
    logic.workdir = tmp_path
    count, messages = logic.scene.GetNumberOfNodes(), []

    def progress(fraction, message):
        messages.append(message)
        if "registering" in message:
            logic.requestCancel()  # the next step, still co-registration, stops the run

    with pytest.raises(Cancelled):
        logic.process(**nodes, model=str(tiny_case[1]), device="cpu", preprocess=True, progressCallback=progress)
    assert messages[-1] == "BraTS2021_00000: registering t1 to t1ce (rigid)"
    assert logic.scene.GetNumberOfNodes() == count and not list(tmp_path.iterdir())


def test_a_failed_step_is_one_sentence_and_leaves_no_nodes_and_no_files(misaligned, tiny_case, tmp_path):
    logic, nodes = misaligned
    logic.workdir = tmp_path
    count = logic.scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError, match=r"^Brain extraction \(deepbet\) of BraTS2021_00000's t1ce gave an implausible brain"):
        logic.process(**nodes, model=str(tiny_case[1]), device="cpu", preprocess=True)
    assert logic.scene.GetNumberOfNodes() == count and not list(tmp_path.iterdir())


def test_a_background_run_reports_each_step_and_stops_at_cancel(misaligned, tiny_case, tmp_path):
    logic, nodes = misaligned
    count = logic.scene.GetNumberOfNodes()
    job = BackgroundRun(logic, **nodes, model=str(tiny_case[1]), device="cpu", workdir=tmp_path, preprocess=True).start()
    inputs = json.loads((job.folder / "job.json").read_text())["inputs"]
    assert sorted(inputs) == ["flair", "t1", "t1ce", "t2"]
    assert Path(inputs["t2"]).name == "BraTS2021_00000.t2.nii"  # uncompressed (issue 33)
    events = []
    deadline = time.monotonic() + 120
    while not job.finished:
        assert time.monotonic() < deadline, "the background run did not finish"
        events += job.poll()
        time.sleep(0.02)
    events += job.poll()
    messages = [e.text for e in events if e.kind == "progress"]
    for step in ("registering t1 to t1ce", "registering t2 to t1ce", "registering flair to t1ce", "extracting the brain from t1ce"):
        assert any(step in m for m in messages), (step, messages)
    with pytest.raises(RuntimeError, match="implausible brain"):  # deepbet finds no head in the tiny phantom
        job.finish()
    assert logic.scene.GetNumberOfNodes() == count and not list(tmp_path.iterdir())

    job = BackgroundRun(logic, **nodes, model=str(tiny_case[1]), device="cpu", workdir=tmp_path, preprocess=True).start()
    deadline = time.monotonic() + 120
    while not any(e.kind == "progress" and "registering" in e.text for e in job.poll()):
        assert time.monotonic() < deadline and not job.finished, "no registration step was reported"
        time.sleep(0.02)
    assert job.runner.process.poll() is None, "the child had ended before the cancel"  # still co-registering
    job.cancel()
    assert job.runner.cancelled and job.runner.failure_message().startswith("Cancelled.")
    assert logic.scene.GetNumberOfNodes() == count and not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="is given as both T1 and T1ce"):  # checked before anything starts
        BackgroundRun(logic, nodes["t1"], nodes["t1"], nodes["t2"], nodes["flair"], workdir=tmp_path, preprocess=True)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------- batch script
def test_the_batch_script_checks_a_raw_exam_file_by_file(tiny_case, tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import nslf_batch
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from nslfcore.data.validation import DataValidationError

    case = tmp_path / "case"
    case.mkdir()
    for path in tiny_case[0].glob("*_t*.nii.gz"):
        (case / path.name).write_bytes(path.read_bytes())
    for path in tiny_case[0].glob("*_flair.nii.gz"):
        image = sitk.ReadImage(str(path))
        image.SetOrigin(tuple(o + 4.0 for o in image.GetOrigin()))
        image.SetSpacing((1.0, 1.0, 2.0))
        sitk.WriteImage(image, str(case / path.name))
    with pytest.raises(DataValidationError, match="resample it onto"):
        nslf_batch.check_inputs(case)
    nslf_batch.check_inputs(case, same_grid=False)  # a raw exam: grids may differ
    args = nslf_batch.parse_args(["--case", str(case), "--out", str(tmp_path / "out"), "--preprocess",
                                  "--keep-preprocessed", str(tmp_path / "kept")])  # fmt: skip
    assert args.preprocess and args.keep_preprocessed == tmp_path / "kept"
    with pytest.raises(SystemExit) as refused:
        nslf_batch.parse_args(["--case", str(case), "--out", str(tmp_path / "out"), "--keep-preprocessed", str(tmp_path)])
    assert refused.value.code == 2 and "--keep-preprocessed needs --preprocess." in capsys.readouterr().err


# ------------------------------------------------------------------------------- a real raw exam (slow)
@pytest.mark.slow
def test_a_simulated_raw_exam_is_preprocessed_into_results_on_the_t1ce_grid_with_its_registrations(tiny_case, tmp_path):
    from nslfcore.data.raw_exam import simulate_raw_exam, write_raw_exam

    exam = simulate_raw_exam(0, 0)
    case_dir = write_raw_exam(exam, tmp_path / "raw")
    (case_dir / f"{exam.name}_seg.nii.gz").unlink()
    logic, nodes = load_inputs(case_dir)
    clean = new_node(logic.scene, "vtkMRMLScalarVolumeNode", "clean t1ce")
    reference = nodes["t1ce"]
    set_volume(clean, exam.clean.images["t1ce"], reference)
    clean.SetIJKToRASMatrix(vtk_matrix(RAS_FROM_LPS @ exam.clean.geometry.ijk_to_lps()))
    assert tissue_ml(reference) > HEAD_TISSUE_ML > tissue_ml(clean)  # the head heuristic: raw head vs. the phantom's brain
    assert "so the sequences need co-registering: Raw scans is on." in preprocessing_reason(nodes)

    logic.workdir = tmp_path / "work"
    logic.workdir.mkdir()
    messages = []
    outputs = logic.process(**nodes, model=str(tiny_case[1]), device="cpu", fuse=False, preprocess=True,
                            keepPreprocessed=tmp_path / "kept", progressCallback=lambda f, m: messages.append(m))  # fmt: skip
    assert not list(logic.workdir.iterdir()), "the temporary files are deleted"
    for step in ("registering t1 to t1ce", "extracting the brain from t1ce", "aligning t1ce to the atlas", "bringing the results back"):
        assert any(step in m for m in messages), (step, messages)
    assert outputs.reference is reference
    seg = outputs.segmentation
    exported = logic.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    logic.context.segmentations.ExportAllSegmentsToLabelmapNode(outputs.brain, exported, 0)  # 0: the reference geometry's extent
    assert np.array_equal(ijk_to_ras(exported), ijk_to_ras(reference)), "the brain mask is not on the T1ce grid"
    brain = np.asarray(array_view(exported)) > 0
    truth = sitk.GetArrayFromImage(exam.truth) > 0
    assert 700 < brain.sum() * np.prod(reference.GetSpacing()) / 1000 < 2400, "the brain mask is not a brain"
    assert brain[truth].mean() > 0.95, "the tumour is not inside the brain mask"
    assert study_of(seg) == study_of(reference) == study_of(outputs.brain)
    # Each transform node puts its sequence where the same head point lies in the T1ce (truth: the simulator's poses).
    centre = np.asarray(exam.clean.geometry.ijk_to_lps() @ np.array([*(np.asarray(exam.clean.geometry.size) - 1) / 2, 1.0]))[:3]
    in_reference = np.asarray(exam.acquisitions["t1ce"].pose.GetInverse().TransformPoint(centre.tolist()))
    for sequence in ("t1", "t2", "flair"):
        node = outputs.transforms[sequence]
        assert study_of(node) == study_of(reference)
        in_sequence = np.asarray(exam.acquisitions[sequence].pose.GetInverse().TransformPoint(centre.tolist()))
        moved = np.asarray(node.GetTransformToParent().TransformPoint(tuple(RAS_FROM_LPS[:3, :3] @ in_sequence)))
        assert np.linalg.norm(moved - RAS_FROM_LPS[:3, :3] @ in_reference) < 2.0, sequence
    kept = {p.name for p in (tmp_path / "kept").iterdir()}
    assert {"brain_mask.nii.gz", "t2_to_t1ce.tfm", "t1ce_to_atlas.tfm"} <= kept
