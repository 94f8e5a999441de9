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
import torch

from nslfcore.cli import main as nslf
from nslfcore.config import PRESETS
from nslfcore.data.case import Geometry
from nslfcore.data.io import write_image
from nslfcore.data.output import LOCK_NAME, OutputBusyError, OutputLock, verify_written
from nslfcore.data.phantom import generate_tiny_case, write_case
from nslfcore.models import NSLF
from nslfcore.training.checkpoint import atomic_torch_save, new_checkpoint

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


def test_nslf_run_on_a_full_disk_says_so_and_replaces_nothing(full_disk, tmp_path, capsys):
    torch.manual_seed(0)
    model = NSLF(PRESETS["compact"])
    model_file = tmp_path / "model.pt"
    atomic_torch_save(new_checkpoint(kind="weights", config=model.config.to_json(), stage=3, epoch=1,
                                     model=model.state_dict()), model_file)  # fmt: skip
    case_dir = write_case(generate_tiny_case(seed=3, size=(48, 48, 48)), tmp_path / "cases")
    out = full_disk / "out"
    out.mkdir()
    (out / "fused.nii.gz").write_bytes(b"previous result")
    args = ["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file), "--overwrite"]
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


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out, "nslf run"):
        with pytest.raises(OutputBusyError, match="is being written by another nslf run"):
            OutputLock(out).acquire()
        case_dir = write_case(generate_tiny_case(seed=4, size=(32, 32, 32)), tmp_path / "cases")
        torch.manual_seed(0)
        model_file = tmp_path / "model.pt"
        model = NSLF(PRESETS["compact"])
        atomic_torch_save(new_checkpoint(kind="weights", config=model.config.to_json(), stage=3, epoch=1,
                                         model=model.state_dict()), model_file)  # fmt: skip
        assert nslf(["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file)]) == 1
        assert "is being written by another nslf run" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the refused run
    assert not (out / LOCK_NAME).exists()  # released
    assert nslf(["run", "--case", str(case_dir), "--out", str(out), "--model", str(model_file)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["fused.nii.gz", "seg.nii.gz"]


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import json
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "what": "nslf run"}))
    with OutputLock(out) as lock:
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid() and lock.held
