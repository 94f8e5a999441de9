"""NSLF's Sample Data entry: the public BraTS case's sources, registration, and checksum-verified fetching.

The sources are checked without network against what SlicerMONAIAuto3DSeg registers for the same
case (its ``registerSampleData``: file names and SHA-256, hosted in its ``TestingData`` release).
Downloads are tested against a local HTTP server on 127.0.0.1 laid out like both mirrors
(``TestingData/<file name>`` and Slicer's testing-data store, ``SHA256/<hex>``): matching files
arrive under their BraTS names, a file missing or wrong on the first mirror comes from the second,
a file whose bytes match its SHA-256 on no mirror is refused and leaves nothing behind.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from NSLFSlicerLib import sample_data
from nslfcore.model_store import ModelError

#: SlicerMONAIAuto3DSeg's ``registerSampleData`` for this case (MONAIAuto3DSeg/MONAIAuto3DSeg.py), verbatim.
MONAI_AUTO3DSEG = """
4399faadcc45c8a4541313cdf88aced7d835ed59ac3078d950e0eac293d603f5 *BraTS-GLI-00001-000-t1c.nii.gz
e860924b936e301ddeba20409fbb59dde322475cb49328f1b46a9235c792e73e *BraTS-GLI-00001-000-t1n.nii.gz
82aed8546af5e6d8d94fd91c56227abdcf6120130390d1556c4342a208980604 *BraTS-GLI-00001-000-t2f.nii.gz
4cd389cc57d12134a30a898c66532228126b9a7d0600ee578e82a32144528b51 *BraTS-GLI-00001-000-t2w.nii.gz
"""
MONAI_RELEASE = "https://github.com/lassoan/SlicerMONAIAuto3DSeg/releases/download/TestingData/"


def test_sources_list_monai_auto3dsegs_release_first_and_slicers_store_second():
    sources = sample_data.sample_sources()
    assert [s["modality"] for s in sources] == ["t1", "t1ce", "t2", "flair"]
    theirs = {name: sha for sha, name in (line.split(" *") for line in MONAI_AUTO3DSEG.strip().splitlines())}
    assert {s["fileName"]: s["checksum"] for s in sources} == {name: f"SHA256:{sha}" for name, sha in theirs.items()}
    for source in sources:
        sha = source["checksum"].split(":")[1]
        assert source["uris"] == [MONAI_RELEASE + source["fileName"],
                                  f"https://github.com/Slicer/SlicerTestingData/releases/download/SHA256/{sha}"]  # fmt: skip
        assert source["nodeName"] == source["fileName"].split(".")[0]  # as MONAIAuto3DSeg names the nodes


def test_registration_gives_the_sample_data_module_one_uri_per_file_the_first_mirrors():
    calls = []

    class SampleDataLogic:  # the one call Slicer's SampleData.SampleDataLogic gets
        @staticmethod
        def registerCustomSampleDataSource(**kwargs):
            calls.append(kwargs)

    sample_data.register_sample_data(SampleDataLogic)
    (kwargs,) = calls
    assert kwargs["category"] == "NSLF" and kwargs["sampleName"] == "BraTS-GLI-00001-000"
    assert len(kwargs["uris"]) == len(kwargs["fileNames"]) == len(kwargs["nodeNames"]) == len(kwargs["checksums"]) == 4
    assert kwargs["uris"] == [MONAI_RELEASE + name for name in kwargs["fileNames"]]
    assert all(c.startswith("SHA256:") and len(c) == 71 for c in kwargs["checksums"])
    assert Path(kwargs["thumbnailFileName"]).is_file()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local testing-data store on 127.0.0.1 holding four small stand-in files, addressed by their SHA-256."""
    root = tmp_path / "store"
    (root / "SHA256").mkdir(parents=True)
    (root / "TestingData").mkdir()
    files = {}
    for modality, (suffix, _) in sample_data.BRATS_FILES.items():
        content = f"stand-in {suffix} volume".encode() * 100
        sha = hashlib.sha256(content).hexdigest()
        (root / "SHA256" / sha).write_bytes(content)
        (root / "TestingData" / f"BraTS-GLI-00001-000-{suffix}.nii.gz").write_bytes(content)
        files[modality] = (suffix, sha)
    monkeypatch.setattr(sample_data, "BRATS_FILES", files)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield root, (url + "TestingData/{fileName}", url + "SHA256/{sha256}")
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_verifies_every_file(store, tmp_path):
    root, url = store
    seen = []
    paths = sample_data.fetch_brats_sample(tmp_path / "case", url, progress=lambda f, m: seen.append(f))
    names = sorted(f"BraTS-GLI-00001-000-{s}.nii.gz" for s, _ in sample_data.BRATS_FILES.values())
    assert sorted(p.name for p in paths.values()) == names
    for modality, (suffix, sha) in sample_data.BRATS_FILES.items():
        assert hashlib.sha256(paths[modality].read_bytes()).hexdigest() == sha
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == sorted(p.name for p in paths.values())  # no leftovers
    assert seen[0] == 0.0 and seen[-1] == 1.0


def test_a_file_missing_or_wrong_on_the_first_mirror_comes_from_the_second(store, tmp_path):
    root, url = store
    (root / "TestingData" / "BraTS-GLI-00001-000-t2w.nii.gz").unlink()
    (root / "TestingData" / "BraTS-GLI-00001-000-t2f.nii.gz").write_bytes(b"tampered")
    paths = sample_data.fetch_brats_sample(tmp_path / "case", url)
    for modality, (suffix, sha) in sample_data.BRATS_FILES.items():
        assert hashlib.sha256(paths[modality].read_bytes()).hexdigest() == sha


def test_a_file_that_does_not_match_its_checksum_is_refused_and_removed(store, tmp_path):
    root, url = store
    suffix, sha = sample_data.BRATS_FILES["t2"]
    (root / "SHA256" / sha).write_bytes(b"tampered")
    (root / "TestingData" / f"BraTS-GLI-00001-000-{suffix}.nii.gz").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="could not be downloaded from any source: .*does not match its SHA-256 checksum"):
        sample_data.fetch_brats_sample(tmp_path / "case", url)
    names = [p.name for p in (tmp_path / "case").rglob("*") if p.is_file()]
    assert f"BraTS-GLI-00001-000-{suffix}.nii.gz" not in names
    assert not [n for n in names if n.endswith(".part")]  # nothing half-written behind


def test_the_sample_cases_nodes_assign_themselves():
    """Loaded from the Sample Data module, the four nodes fill the inputs by name (BraTS 2023 suffixes)."""
    from NSLFSlicerLib.assign import modality_of

    assert {s["nodeName"]: modality_of(s["nodeName"]) for s in sample_data.sample_sources()} == {
        s["nodeName"]: s["modality"] for s in sample_data.sample_sources()
    }
