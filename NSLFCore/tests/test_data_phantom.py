"""Phantom generator: determinism, variety, BraTS geometry, tumour classes, contrast orderings, non-trivial task."""

from __future__ import annotations

import numpy as np
import pytest

from nslfcore import MODALITIES
from nslfcore.cli import main
from nslfcore.data.brats import find_cases, load_case
from nslfcore.data.io import read_image
from nslfcore.data.labels import ED, ET, NCR
from nslfcore.data.phantom import brats_geometry, make_phantom, make_tiny_phantom, write_case
from nslfcore.data.phantom_anatomy import template_coords

TINY_SEEDS = range(8)


@pytest.fixture(scope="session")
def realistic():
    """One realistic case (seed 0, index 2: has NCR, ED and ET)."""
    return make_phantom(seed=0, index=2)


@pytest.fixture(scope="module")
def tiny_phantoms():
    return [make_tiny_phantom(seed=s) for s in TINY_SEEDS]


def _files_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.nii.gz"))}


def test_same_seed_same_bytes_different_seed_different_cases(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert main(["phantom", "--out", str(tmp_path / name), "--n", "2", "--seed", str(seed), "--tiny"]) == 0
    a, b, c = (_files_bytes(tmp_path / n) for n in "abc")
    assert len(a) == 10 and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    # case i depends only on (seed, i): generating case 1 alone gives the same files
    assert main(["phantom", "--out", str(tmp_path / "d"), "--n", "1", "--start", "1", "--seed", "7", "--tiny"]) == 0
    d = _files_bytes(tmp_path / "d")
    assert d == {k: v for k, v in a.items() if k.startswith("BraTS2021_00001")}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_variety_between_tiny_cases(tiny_phantoms):
    brains = [p.tissues["brain"] > 0.5 for p in tiny_phantoms]
    tumours = [p.case.label > 0 for p in tiny_phantoms]
    for i in range(len(tiny_phantoms) - 1):
        assert _dice(brains[i], brains[i + 1]) < 0.99
        assert _dice(tumours[i], tumours[i + 1]) < 0.9
    wt = [int(t.sum()) for t in tumours]
    assert max(wt) > 1.5 * min(wt)  # sizes vary
    assert any(not (p.case.label == ET).any() for p in tiny_phantoms)  # some cases without enhancing tumour
    assert sum((p.case.label == ET).any() for p in tiny_phantoms) >= 4


def test_variety_of_realistic_anatomy():
    geometry = brats_geometry()
    a = template_coords(np.random.default_rng(1), geometry)
    b = template_coords(np.random.default_rng(2), geometry)
    shift = np.sqrt(((a - b) ** 2).sum(axis=0))
    assert 1.0 < np.median(shift) < 20.0  # mm (1 mm template voxels): a different but modest deformation per case


def _means(phantom, modality):
    case, t = phantom.case, phantom.tissues
    image, label = case.images[modality], case.label
    normal = label == 0
    regions = {
        "wm": normal & (t["wm"] > 0.9), "gm": normal & (t["gm"] > 0.8), "csf": normal & (t["csf"] > 0.9),
        "ncr": label == NCR, "ed": label == ED, "et": label == ET,
    }  # fmt: skip
    return {k: (float(image[m].sum()), int(m.sum())) for k, m in regions.items()}


def _pooled_means(phantoms, modality):
    sums: dict[str, list[float]] = {}
    for p in phantoms:
        scale = float(np.percentile(p.case.images[modality][p.tissues["brain"] > 0.5], 99))
        for k, (s, n) in _means(p, modality).items():
            sums.setdefault(k, [0.0, 0])
            sums[k][0] += s / scale
            sums[k][1] += n
    return {k: s / n for k, (s, n) in sums.items() if n > 0}


ORDERINGS = [  # (modality, brighter, darker)
    ("t1", "wm", "gm"), ("t1", "gm", "csf"), ("t1", "wm", "ed"), ("t1", "wm", "ncr"),
    ("t1ce", "et", "ncr"), ("t1ce", "et", "wm"), ("t1ce", "et", "ed"),
    ("t2", "csf", "gm"), ("t2", "gm", "wm"), ("t2", "ncr", "wm"), ("t2", "ed", "wm"),
    ("flair", "ed", "wm"), ("flair", "ed", "gm"), ("flair", "gm", "wm"), ("flair", "wm", "csf"), ("flair", "ed", "ncr"),
]  # fmt: skip


def _check_orderings(means_by_modality):
    failures = []
    for modality, bright, dark in ORDERINGS:
        m = means_by_modality[modality]
        if not m[bright] > 1.03 * m[dark]:
            failures.append(f"{modality}: {bright} {m[bright]:.3f} vs {dark} {m[dark]:.3f}")
    assert not failures, failures


def test_tiny_classes_and_contrast_orderings(tiny_phantoms):
    for p in tiny_phantoms:
        assert (p.case.label == NCR).any() and (p.case.label == ED).any()
    _check_orderings({m: _pooled_means(tiny_phantoms, m) for m in MODALITIES})


def test_realistic_classes_and_contrast_orderings(realistic):
    counts = np.bincount(realistic.case.label.ravel(), minlength=4)
    assert counts[NCR] > 1000 and counts[ED] > 5000 and counts[ET] > 1000
    _check_orderings({m: _pooled_means([realistic], m) for m in MODALITIES})


def _best_threshold_dice(phantoms, modality) -> float:
    values, truth = [], []
    for p in phantoms:
        brain = p.case.images["t1"] > 0
        image = p.case.images[modality][brain]
        values.append(image / np.percentile(image, 99))
        truth.append(p.case.label[brain] > 0)
    v, wt = np.concatenate(values), np.concatenate(truth)
    best = 0.0
    for t in np.linspace(v.min(), v.max(), 300):
        for prediction in (v > t, v < t):
            best = max(best, _dice(prediction, wt))
    return best


@pytest.mark.parametrize("modality", MODALITIES)
def test_single_threshold_does_not_segment_whole_tumour(tiny_phantoms, realistic, modality):
    tiny = _best_threshold_dice(tiny_phantoms, modality)
    real = _best_threshold_dice([realistic], modality)
    assert tiny < 0.8 and real < 0.8, (tiny, real)
    assert tiny > 0.2  # but the modality carries tumour signal


def test_realistic_case_looks_like_brats_on_disk(realistic, tmp_path):
    case = realistic.case
    assert case.geometry.size == (240, 240, 155) and case.geometry.spacing == (1.0, 1.0, 1.0)
    assert case.geometry.origin == (0.0, -239.0, 0.0)
    assert case.geometry.direction == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    brain = realistic.tissues["brain"] >= 0.5
    assert 1.0e6 < brain.sum() < 2.0e6  # voxels = mm^3: an adult brain
    assert not brain[-3:].any() and not brain[:, :5].any() and not brain[:, :, -5:].any()  # whole brain inside
    for m in MODALITIES:
        image = case.images[m]
        assert (image[~brain] == 0).all() and (image[brain] > 0).mean() > 0.99  # skull-stripped
        assert 50 < np.percentile(image[brain], 50) < 3000  # scanner-like range
    folder = write_case(case, tmp_path)
    (files,) = find_cases(tmp_path)
    seg, _ = read_image(folder / f"{case.name}_seg.nii.gz")
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}
    t1, geometry = read_image(folder / f"{case.name}_t1.nii.gz")
    assert t1.dtype == np.int16 and t1.shape == (155, 240, 240) and geometry == case.geometry
    loaded = load_case(files, require_label=True)
    np.testing.assert_array_equal(loaded.label, case.label)


def test_the_template_ships_with_the_package_and_needs_no_nilearn():
    """The MNI152 files come from nslfcore itself (with their notice): no nilearn in the engine or in Slicer."""
    import subprocess
    import sys

    from nslfcore.data.phantom_anatomy import PACKAGED_TEMPLATE_DIR, TEMPLATE_FILES

    assert all((PACKAGED_TEMPLATE_DIR / name).is_file() for name in TEMPLATE_FILES.values())
    assert "Louis Collins" in (PACKAGED_TEMPLATE_DIR / "NOTICE.md").read_text()
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'nilearn':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from nslfcore.data.phantom_anatomy import load_template\n"
        "maps, geometry = load_template()\n"
        "print(maps.shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "(3, 189, 233, 197)" in proc.stdout


def test_phantom_never_overwrites_cases_without_being_asked(tmp_path, capsys):
    """Its case names are real BraTS IDs: an existing case of that name is refused, untouched, before anything is written."""
    out = tmp_path / "d"
    assert main(["phantom", "--out", str(out), "--n", "1", "--seed", "7", "--tiny"]) == 0
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    capsys.readouterr()
    assert main(["phantom", "--out", str(out), "--n", "2", "--seed", "8", "--tiny"]) == 1
    assert "already holds BraTS2021_00000" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == first  # unchanged, and case 1 not written
    assert not (out / "BraTS2021_00001").exists()
    assert main(["phantom", "--out", str(out), "--n", "2", "--seed", "8", "--tiny", "--overwrite"]) == 0
    assert (out / "BraTS2021_00001").is_dir()
