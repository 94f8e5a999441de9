"""``nslf run --cases``: every case once, outputs as single-case ``nslf run`` writes them, resumable, sharded over ranks."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nslfcore.cli import main as nslf

NAMES = ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]


@pytest.fixture(scope="module")
def _cohort_once(tmp_path_factory) -> Path:
    from nslfcore.data.phantom import write_phantom_dataset

    folder = tmp_path_factory.mktemp("cohort") / "cases"
    write_phantom_dataset(folder, len(NAMES), seed=6, tiny=True)
    return folder


@pytest.fixture
def cohort(_cohort_once, tmp_path) -> Path:
    """Three tiny phantom cases (48^3, BraTS 2021 layout) in ``tmp_path/cases``, a copy the test may break."""
    return Path(shutil.copytree(_cohort_once, tmp_path / "cases"))


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _assert_same_outputs(folder: Path, reference: Path, names=("fused.nii.gz", "seg.nii.gz")) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, "confidence.json"])
    for name in names:
        np.testing.assert_array_equal(_array(folder / name), _array(reference / name), err_msg=f"{folder / name}")
    assert (folder / "confidence.json").read_text() == (reference / "confidence.json").read_text()


def test_every_case_is_written_as_single_case_run_writes_it_and_a_rerun_skips_them(
    cohort, random_model_file, tmp_path, capsys
):
    out = tmp_path / "out"
    model = ["--model", str(random_model_file), "--device", "cpu"]
    assert nslf(["run", "--cases", str(cohort), "--out", str(out), *model]) == 0
    printed = capsys.readouterr().out
    assert "3 done, 0 skipped" in printed and "cases per hour" in printed
    assert sorted(p.name for p in out.iterdir()) == [*NAMES, "summary.csv"]
    rows = _rows(out)
    assert sorted(rows) == NAMES and {r["status"] for r in rows.values()} == {"done"}
    assert {(r["mode"], r["device"]) for r in rows.values()} == {("whole", "cpu")} and float(rows[NAMES[0]]["seconds"]) > 0
    for name in NAMES:
        single = tmp_path / "single" / name
        assert nslf(["run", "--case", str(cohort / name), "--out", str(single), *model]) == 0
        _assert_same_outputs(out / name, single)
    # A second run finds every case complete and recomputes nothing.
    written = {p: p.stat().st_mtime_ns for p in out.glob("*/*.nii.gz")}
    assert nslf(["run", "--cases", str(cohort), "--out", str(out), *model]) == 0
    assert "0 done, 3 skipped" in capsys.readouterr().out
    assert {r["status"] for r in _rows(out).values()} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.nii.gz")} == written
    # Asking for one more output makes the cases incomplete: they are computed again.
    assert nslf(["segment", "--cases", str(cohort), "--out", str(out), *model, "--probabilities"]) == 0
    assert "3 done, 0 skipped" in capsys.readouterr().out
    assert (out / NAMES[0] / "probabilities.nii.gz").is_file()


def test_a_broken_case_is_reported_the_others_finish_and_a_rerun_does_only_it(
    _cohort_once, cohort, random_model_file, tmp_path, capsys
):
    t2, flair = (Path(NAMES[1]) / f"{NAMES[1]}_{m}.nii.gz" for m in ("t2", "flair"))
    (cohort / t2).unlink()
    (cohort / flair).unlink()  # one missing sequence is allowed (test_missing_sequence.py), two are not
    out = tmp_path / "out"
    assert nslf(["run", "--cases", str(cohort), "--out", str(out), "--model", str(random_model_file)]) == 1
    captured = capsys.readouterr()
    assert "2 done, 0 skipped (outputs already complete), 1 failed" in captured.out
    assert f"{NAMES[1]} failed" in captured.err and "t2" in captured.err
    assert {n: r["status"] for n, r in _rows(out).items()} == {NAMES[0]: "done", NAMES[1]: "failed", NAMES[2]: "done"}
    assert not (out / NAMES[1]).exists() and (out / NAMES[2] / "seg.nii.gz").is_file()
    shutil.copy(_cohort_once / t2, cohort / t2)  # repaired
    shutil.copy(_cohort_once / flair, cohort / flair)
    assert nslf(["run", "--cases", str(cohort), "--out", str(out), "--model", str(random_model_file)]) == 0
    assert "1 done, 2 skipped" in capsys.readouterr().out
    assert (out / NAMES[1] / "seg.nii.gz").is_file()


def test_a_busy_or_misplaced_output_folder_is_refused(cohort, random_model_file, tmp_path, capsys):
    from nslfcore.data.output import OutputLock

    model = ["--model", str(random_model_file)]
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out, "nslf run --cases"):  # another cohort run writing there
        assert nslf(["run", "--cases", str(cohort), "--out", str(out), *model]) == 1
    assert "being written by another nslf run --cases" in capsys.readouterr().err
    assert nslf(["run", "--cases", str(cohort), "--out", str(cohort / "results"), *model]) == 1
    assert "inside the cases folder" in capsys.readouterr().err
    assert nslf(["run", "--cases", str(cohort), "--case", str(cohort / NAMES[0]), "--out", str(out), *model]) == 1
    assert "not both" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [] and not (cohort / "results").exists()


def test_two_gloo_ranks_share_the_cases_and_rank_0_writes_one_summary(cohort, random_model_file, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "nslfcore.cli", "run", "--cases", str(cohort), "--out", str(out), "--model", str(random_model_file),
         "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if " done in " in line]
    assert sorted(line.split("] ")[-1].split()[0] for line in lines) == NAMES  # each case once
    assert result.stdout.count("3 cases with model") == 1 and "on 2 ranks: 3 done" in result.stdout
    rows = _rows(out)
    assert {n: (r["status"], r["rank"]) for n, r in rows.items()} == {
        NAMES[0]: ("done", "0"), NAMES[1]: ("done", "1"), NAMES[2]: ("done", "0")
    }  # rank r takes cases r, r + 2, ...
    assert sorted(p.name for p in out.iterdir()) == [*NAMES, "summary.csv"]  # lock released, no rank files
    for name in NAMES:
        assert sorted(p.name for p in (out / name).iterdir()) == ["confidence.json", "fused.nii.gz", "seg.nii.gz"]
