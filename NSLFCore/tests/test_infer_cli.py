"""``nslf fuse|segment|run``: outputs with the inputs' geometry; every refusal is one line and leaves no files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nslfcore import MODALITIES
from nslfcore.cli import main as nslf


def _files(tiny_case) -> list[str]:
    args = []
    for modality in MODALITIES:
        args += [f"--{modality}", str(next(tiny_case.glob(f"*_{modality}.nii.gz")))]
    return args


def test_run_writes_outputs_with_the_input_geometry(random_model_file, tiny_case, tmp_path, capsys):
    out = tmp_path / "out"
    assert nslf(["run", *_files(tiny_case), "--out", str(out), "--model", str(random_model_file), "--probabilities"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["confidence.json", "fused.nii.gz", "probabilities.nii.gz", "seg.nii.gz"]
    reference = sitk.ReadImage(str(next(tiny_case.glob("*_t1.nii.gz"))))
    for name in ("fused.nii.gz", "seg.nii.gz"):
        image = sitk.ReadImage(str(out / name))
        assert image.GetSize() == reference.GetSize() and image.GetDirection() == reference.GetDirection()
        np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-5)
    assert sitk.ReadImage(str(out / "probabilities.nii.gz")).GetNumberOfComponentsPerPixel() == 4
    assert "wrote" in capsys.readouterr().out
    # --case works too, and refuses to overwrite without --overwrite.
    assert nslf(["segment", "--case", str(tiny_case), "--out", str(out), "--model", str(random_model_file)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert nslf(["segment", "--case", str(tiny_case), "--out", str(out), "--model", str(random_model_file), "--overwrite"]) == 0


def _break(kind: str, tiny_case, tmp_path) -> list[str]:
    files = _files(tiny_case)
    t2 = files[files.index("--t2") + 1]
    if kind == "geometry":
        image = sitk.ReadImage(t2)
        image.SetOrigin((9.0, 0.0, 0.0))
        sitk.WriteImage(image, t2)
    elif kind == "missing":
        files[files.index("--t2") + 1] = str(tmp_path / "absent_t2.nii.gz")
    elif kind == "2d":
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((48, 48), np.float32)), t2)
    elif kind == "4d":
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 48, 48, 48), np.float32)), t2)
    return files


@pytest.mark.parametrize(
    ("kind", "message"), [("geometry", "--preprocess"), ("missing", "t2"), ("2d", "3-D"), ("4d", "3-D")]
)
def test_bad_inputs_are_refused_without_partial_outputs(kind, message, random_model_file, tiny_case, tmp_path, capsys):
    out = tmp_path / "out"
    code = nslf(["run", *_break(kind, tiny_case, tmp_path), "--out", str(out), "--model", str(random_model_file)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_a_tampered_model_file_is_refused(tiny_case, random_model_file, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(random_model_file.read_bytes()[:5000])
    out = tmp_path / "out"
    assert nslf(["run", "--case", str(tiny_case), "--out", str(out), "--model", str(broken)]) == 1
    assert "cannot be read safely" in capsys.readouterr().err
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "nslf-checkpoint", "model": torch.nn.Linear(2, 2)}, pickled)  # needs full pickle
    assert nslf(["run", "--case", str(tiny_case), "--out", str(out), "--model", str(pickled)]) == 1
    assert "cannot be read safely" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("mode", ["whole", "sequential", "sliding"])
def test_every_mode_finishes_with_its_summary(mode, random_model_file, tiny_case, tmp_path, capsys):
    """A run in any mode reports itself (the sequential mode once crashed after writing: KeyError in the summary)."""
    import typing

    from nslfcore.inference import MODE_DESCRIPTIONS, Mode

    assert set(typing.get_args(Mode)) - {"auto"} == set(MODE_DESCRIPTIONS)
    out = tmp_path / f"out-{mode}"
    assert nslf(["run", *_files(tiny_case), "--out", str(out), "--model", str(random_model_file), "--mode", mode]) == 0
    from nslfcore.inference import cpu_has_native_bf16

    precision = "bf16" if cpu_has_native_bf16() else "fp32"  # --precision auto
    assert f": {MODE_DESCRIPTIONS[mode]} on cpu ({precision}); wrote" in capsys.readouterr().out
