"""Outputs are never silently wrong or lost: verified atomic writes, a full disk, locked output folders."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nslfcore.cli import main as nslf
from nslfcore.data.case import Geometry
from nslfcore.data.io import write_image
from nslfcore.data.output import LOCK_NAME, OutputBusyError, OutputLock, verify_written
from nslfcore.data.phantom import generate_tiny_case, write_case

GEOMETRY = Geometry(size=(32, 32, 32), spacing=(1.0, 1.0, 1.0))


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: a compressed 32^3 float volume of noise does not fit (skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs is not allowed here (needs root); the disk-full case is not checked")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def _noise() -> np.ndarray:
    return np.random.default_rng(0).random((32, 32, 32), dtype=np.float32)  # incompressible: 128 KiB


def test_a_full_disk_raises_and_keeps_the_previous_file(full_disk):
    target = full_disk / "fused.nii.gz"
    write_image(np.zeros((32, 32, 32), np.float32), GEOMETRY, target)  # small: fits
    before = target.read_bytes()
    with pytest.raises(OSError, match="not written completely"):
        write_image(_noise(), GEOMETRY, target)
    assert target.read_bytes() == before  # the previous result is untouched
    assert sorted(p.name for p in full_disk.iterdir()) == ["fused.nii.gz"]  # no temporary file left


def test_nslf_run_on_a_full_disk_says_so_and_replaces_nothing(full_disk, tiny_case, capsys, random_model_file):
    model_file = random_model_file
    out = full_disk / "out"
    out.mkdir()
    (out / "fused.nii.gz").write_bytes(b"previous result")
    args = ["run", "--case", str(tiny_case), "--out", str(out), "--model", str(model_file), "--overwrite"]
    assert nslf(args) == 1
    err = capsys.readouterr().err
    assert ("not written completely" in err or "disk is full" in err or "No space left" in err) and "Traceback" not in err
    assert (out / "fused.nii.gz").read_bytes() == b"previous result"
    assert sorted(p.name for p in out.iterdir()) == ["fused.nii.gz"]


def test_a_truncated_gzip_is_caught(tmp_path, monkeypatch):
    target = tmp_path / "seg.nii.gz"
    real_write = sitk.WriteImage

    def truncating_write(image, path, *args, **kwargs):  # what SimpleITK leaves when the disk fills up
        real_write(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(sitk, "WriteImage", truncating_write)
    with pytest.raises(OSError, match="compressed data ends early"):
        write_image(_noise(), GEOMETRY, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(OSError, match="it is empty"):
        verify_written(tmp_path / "empty.nii.gz")
    with gzip.open(tmp_path / "garbage.nii.gz", "wb") as handle:
        handle.write(b"not an image header at all" * 20)
    with pytest.raises(OSError, match="header cannot be read back"):
        verify_written(tmp_path / "garbage.nii.gz")


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, capsys, random_model_file):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out, "nslf run"):
        with pytest.raises(OutputBusyError, match="is being written by another nslf run"):
            OutputLock(out).acquire()
        case_dir = write_case(generate_tiny_case(seed=4, size=(32, 32, 32)), tmp_path / "cases")
        model_file = random_model_file
        assert nslf(["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file)]) == 1
        assert "is being written by another nslf run" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the refused run
    assert not (out / LOCK_NAME).exists()  # released
    assert nslf(["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["confidence.json", "fused.nii.gz", "seg.nii.gz"]


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import json
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "what": "nslf run"}))
    with OutputLock(out) as lock:
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid() and lock.held


@pytest.fixture
def model_and_case(tmp_path, random_model_file):
    model_file = random_model_file
    case_dir = write_case(generate_tiny_case(seed=5, size=(48, 64, 64)), tmp_path / "cases")
    return model_file, case_dir


def _nslf_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nslfcore.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_concurrent_runs_into_one_folder_never_mix(model_and_case, tmp_path):
    """Started together: one writes its results, the other is refused (or waits its turn), never a mixture."""
    model_file, case_dir = model_and_case
    other = write_case(generate_tiny_case(seed=9, size=(48, 64, 64)), tmp_path / "other")
    out = tmp_path / "out"
    runs = [_nslf_process("run", "--case", str(c), "--out", str(out), "--model", str(model_file), "--overwrite")
            for c in (case_dir, other)]  # fmt: skip
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    for code, _, err in results:
        assert code == 0 or ("is being written by another nslf run" in err or "already exists" in err), err
    assert codes[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["confidence.json", "fused.nii.gz", "seg.nii.gz"]  # no temporary, no lock
    from nslfcore.data.io import read_image
    from nslfcore.inference import run as infer

    fused, _ = read_image(out / "fused.nii.gz")
    expected = {str(c): infer(c, str(model_file), device="cpu", segment=False).fused for c in (case_dir, other)}
    differences = {name: float(np.abs(fused - array).mean()) for name, array in expected.items()}
    matches = [name for name, diff in differences.items() if diff < 1e-3]  # the two cases differ by ~0.1
    assert len(matches) == 1, differences
    winner_cases = [str(c) for c, (code, _, _) in zip((case_dir, other), results) if code == 0]
    assert matches[0] in winner_cases  # the result is a successful run's, whole


def test_kill_9_while_writing_leaves_old_or_new_results_never_partial(model_and_case, tmp_path):
    """kill -9 at several moments of a run: the results are the previous ones or complete new ones; the next run cleans up."""
    import time

    model_file, case_dir = model_and_case
    out = tmp_path / "out"
    assert nslf(["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file)]) == 0
    previous = {p.name: p.read_bytes() for p in out.iterdir()}
    for delay in (0.5, 1.5, 3.0, 5.0):
        process = _nslf_process("run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file),
                                "--overwrite", "--mode", "sliding")  # fmt: skip
        time.sleep(delay)
        process.kill()
        process.wait()
        for name in ("fused.nii.gz", "seg.nii.gz"):
            verify_written(out / name)  # complete, whichever it is
            assert len((out / name).read_bytes()) > 0
    assert nslf(["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(previous)  # stale lock taken over, temporaries removed


def test_a_read_only_output_folder_is_named(full_disk, model_and_case, capsys):
    model_file, case_dir = model_and_case
    out = full_disk / "out"
    out.mkdir()
    if subprocess.run(["mount", "-o", "remount,ro", str(full_disk)], capture_output=True).returncode:
        pytest.skip("cannot remount the tmpfs read-only here")
    try:
        assert nslf(["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file)]) == 1
        err = capsys.readouterr().err
        assert "Read-only file system" in err or "read-only" in err, err
        assert "Traceback" not in err
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(full_disk)], capture_output=True)


def test_a_second_training_into_a_locked_run_folder_is_refused(tmp_path, capsys):
    from nslfcore.data.phantom import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 2, seed=2, tiny=True, size=(32, 32, 32))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with OutputLock(run_dir, "nslf train"):
        args = ["train", "--data", str(data), "--out", str(run_dir), "--stage", "1", "--epochs", "1",
                "--fusion-crop", "32", "32", "32"]  # fmt: skip
        assert nslf(args) == 1
        assert "is being written by another nslf train" in capsys.readouterr().err
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # no run.json, no checkpoint
    assert nslf(args) == 0 and not (run_dir / LOCK_NAME).exists()
