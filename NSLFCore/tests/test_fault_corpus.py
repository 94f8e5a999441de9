"""Fault corpus (issue 12, first part): bad arguments and files give one sentence and exit non-zero, write nothing.

Every case runs the real command (``nslf ...`` in-process) and asserts the exit code, the message,
that no traceback escaped (the command-line error path catches everything; ``--debug`` shows it),
and that nothing was written or changed.
"""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from nslfcore.cli import describe_error
from nslfcore.cli import main as nslf
from nslfcore.data.phantom import write_phantom_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault-data")
    write_phantom_dataset(folder, 3, seed=11, tiny=True, size=(32, 32, 32))
    return folder


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


def _train(tiny_data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(tiny_data), "--out", str(out), "--stage", "1", "--epochs", "1",
            "--fusion-crop", "32", "32", "32", *extra]  # fmt: skip


class _Evil:
    def __reduce__(self):  # what an attacker's "model" would run under full unpickling
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "-1"], "lr must be a positive number"),
        (["--lr", "nan"], "lr must be a positive number"),
        (["--loss-weight", "stage1.reconstruction=nan"], "Loss weights must be finite and >= 0"),
        (["--loss-weight", "stage1.reconstruction=-1"], "Loss weights must be finite and >= 0"),
        (["--fine-tune-lr", "0"], "fine_tune_lr must be a positive number"),
    ],
)
def test_bad_training_numbers_are_refused_before_anything_is_written(extra, message, tiny_data, tmp_path, capsys):
    before = _snapshot(tiny_data)
    out = tmp_path / "run"
    assert nslf(_train(tiny_data, out, *extra)) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and _snapshot(tiny_data) == before


def test_a_file_as_the_run_folder_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("my notes")
    assert nslf(_train(tiny_data, out)) == 1
    assert "is a file; give a folder" in capsys.readouterr().err and out.read_text() == "my notes"


@pytest.mark.parametrize("kind", ["garbage", "pickle"])
def test_a_bad_init_file_writes_nothing_and_never_advises_unsafe_loading(kind, tiny_data, tmp_path, capsys):
    init = tmp_path / "model.pt"
    if kind == "garbage":
        init.write_bytes(b"\x00not a checkpoint" * 50)
    else:
        init.write_bytes(pickle.dumps({"format": "nslf-checkpoint", "model": _Evil()}, protocol=2))  # as torch.save writes
    out = tmp_path / "run"
    assert nslf(_train(tiny_data, out, "--init", str(init))) == 1
    captured = capsys.readouterr()
    assert "pwned" not in captured.out + captured.err
    assert f"--init {init}" in captured.err and "weights_only=False" not in captured.err
    assert ("unsafe" in captured.err) if kind == "pickle" else ("truncated or damaged" in captured.err)
    assert not out.exists()


@pytest.mark.parametrize("content", ["[]", '{"cunet_widths": "wide"}', "{not json"])
def test_a_malformed_configuration_file_is_named(content, tiny_data, tmp_path, capsys):
    config = tmp_path / "net.json"
    config.write_text(content)
    out = tmp_path / "run"
    assert nslf(_train(tiny_data, out, "--config", str(config))) == 1
    err = capsys.readouterr().err
    assert f"Configuration file {config} is not a valid NSLF configuration" in err and "Traceback" not in err
    assert not out.exists()


def test_score_with_a_text_file_as_labels_is_one_sentence(tiny_data, tmp_path, capsys):
    labels = tmp_path / "labels.nii.gz"
    labels.write_text("these are not labels")
    case = next(p for p in tiny_data.iterdir() if p.is_dir())
    assert nslf(["score", "--case", str(case), "--labels", str(labels)]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(labels) in err


def test_unexpected_errors_are_one_sentence_unless_debug(tiny_data, tmp_path, capsys, monkeypatch):
    import nslfcore.commands.check_data as check_data

    def broken(args):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(check_data, "run", broken)
    assert nslf(["check-data", str(tiny_data)]) == 1
    assert capsys.readouterr().err.strip() == "nslf check-data: error: something inside broke."
    with pytest.raises(RuntimeError):
        nslf(["--debug", "check-data", str(tiny_data)])


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "the disk is full while writing /out/fused.nii.gz"),
        (errno.EACCES, "permission denied for /out/fused.nii.gz"),
        (errno.EROFS, "read-only file system"),
        (errno.ELOOP, "symbolic link loop"),
    ],
)
def test_file_system_errors_name_their_cause(code, words):
    assert words in describe_error(OSError(code, "os text", "/out/fused.nii.gz"))


@pytest.fixture
def model_file(random_model_file):
    return random_model_file


def _case_files(case: Path) -> dict[str, Path]:
    from nslfcore import MODALITIES

    return {m: next(case.glob(f"*_{m}.nii.gz")) for m in MODALITIES}


def _run_files(files: dict[str, Path], out: Path, model: Path) -> list[str]:
    args = ["run", "--out", str(out), "--model", str(model)]
    for modality, path in files.items():
        args += [f"--{modality}", str(path)]
    return args


@pytest.mark.parametrize(
    "fault, message",
    [
        ("label-as-t1", "looks like a label map"),
        ("same-file", "are the same image"),
        ("same-content", "are the same image"),
        ("huge-header", "declares 1000 x 1000 x 1000 voxels"),
    ],
)
def test_implausible_inputs_are_refused_before_any_work(fault, message, tiny_data, tmp_path, model_file, capsys):
    import shutil

    import numpy as np

    from nslfcore.data.case import Geometry
    from nslfcore.data.io import write_image

    case = next(p for p in sorted(tiny_data.iterdir()) if p.is_dir())
    files = _case_files(case)
    if fault == "label-as-t1":
        files["t1"] = next(case.glob("*_seg.nii.gz"))
    elif fault == "same-file":
        files = dict.fromkeys(files, files["t1"])
    elif fault == "same-content":
        copy = tmp_path / "t2_copy_of_t1.nii.gz"
        shutil.copyfile(files["t1"], copy)
        files["t2"] = copy
    else:  # a tiny file whose header declares 1000^3 voxels: refused from the header, never allocated
        huge = tmp_path / "huge.nii"
        write_image(np.zeros((2, 2, 2), np.float32), Geometry(size=(2, 2, 2), spacing=(1.0, 1.0, 1.0)), huge)
        data = bytearray(huge.read_bytes())
        dims = np.array([3, 1000, 1000, 1000, 1, 1, 1, 1], dtype=np.int16)  # dim[0..7] of the NIfTI-1 header
        data[40:56] = dims.tobytes()
        huge.write_bytes(bytes(data))
        files["flair"] = huge
    out = tmp_path / "out"
    assert nslf(_run_files(files, out, model_file)) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_out_inside_the_case_folder_is_refused(tiny_data, tmp_path, model_file, capsys):
    import shutil

    case = shutil.copytree(next(p for p in sorted(tiny_data.iterdir()) if p.is_dir()), tmp_path / "case")
    before = _snapshot(case)
    for out in (case, case / "results"):
        assert nslf(["run", "--case", str(case), "--out", str(out), "--model", str(model_file), "--overwrite"]) == 1
        assert "the input folder" in capsys.readouterr().err
    files = _case_files(case)
    assert nslf(_run_files(files, case, model_file)) == 1
    assert _snapshot(case) == before  # no result became part of the case


@pytest.mark.parametrize(
    "fault, message",
    [
        ("dangling-link", "symbolic link to nothing"),
        ("link-loop", "symbolic link to nothing"),
        ("folder", "is a folder, not an image file"),
        ("missing", "does not exist; check the path"),
    ],
)
def test_unreachable_inputs_say_why(fault, message, tiny_data, tmp_path, model_file, capsys):
    files = _case_files(next(p for p in sorted(tiny_data.iterdir()) if p.is_dir()))
    bad = tmp_path / "t1.nii.gz"
    if fault == "dangling-link":
        bad.symlink_to(tmp_path / "gone.nii.gz")
    elif fault == "link-loop":
        (tmp_path / "a.nii.gz").symlink_to(bad)
        bad.symlink_to(tmp_path / "a.nii.gz")
    elif fault == "folder":
        bad.mkdir()
    files["t1"] = bad
    assert nslf(_run_files(files, tmp_path / "out", model_file)) == 1
    err = capsys.readouterr().err
    assert message in err and "(the t1 input)" in err and "Traceback" not in err


def test_checksum_mismatch_shows_both_full_digests(tmp_path):
    import hashlib

    from nslfcore.model_store import ModelError, verify

    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    expected = "0" * 63 + "1"
    with pytest.raises(ModelError) as error:
        verify(model, expected)
    assert expected in str(error.value) and hashlib.sha256(b"weights").hexdigest() in str(error.value)


def test_check_data_reports_huge_headers_and_label_maps_without_reading_them(tiny_data, tmp_path, capsys):
    import shutil

    import numpy as np

    root = tmp_path / "cases"
    cases = [shutil.copytree(p, root / p.name) for p in sorted(p for p in tiny_data.iterdir() if p.is_dir())[:2]]
    flair = next(cases[0].glob("*_flair.nii.gz"))
    from nslfcore.data.case import Geometry
    from nslfcore.data.io import write_image

    huge = flair.with_name(flair.name.replace(".nii.gz", ".nii"))
    flair.unlink()
    write_image(np.zeros((2, 2, 2), np.float32), Geometry(size=(2, 2, 2), spacing=(1.0, 1.0, 1.0)), huge)
    data = bytearray(huge.read_bytes())
    data[40:56] = np.array([3, 2000, 2000, 2000, 1, 1, 1, 1], dtype=np.int16).tobytes()
    huge.write_bytes(bytes(data))
    t1 = next(cases[1].glob("*_t1.nii.gz"))
    shutil.copyfile(next(cases[1].glob("*_seg.nii.gz")), t1)
    before = _snapshot(root)
    assert nslf(["check-data", str(root)]) == 1  # no usable case left
    out = capsys.readouterr()
    text = out.out + out.err
    assert "declares 2000 x 2000 x 2000 voxels" in text and "looks like a label map" in text
    assert "Traceback" not in text and _snapshot(root) == before


def test_run_with_a_file_as_out_reports_that_and_keeps_the_file(tiny_data, tmp_path, model_file, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("my notes")
    case = next(p for p in sorted(tiny_data.iterdir()) if p.is_dir())
    assert nslf(["run", "--case", str(case), "--out", str(out), "--model", str(model_file)]) == 1
    err = capsys.readouterr().err
    assert f"--out {out} is a file; give a folder for the outputs" in err and out.read_text() == "my notes"
