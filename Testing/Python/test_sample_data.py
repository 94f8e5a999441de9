"""NSLF's Sample Data entry: the public BraTS case's sources, registration, and checksum-verified fetching.

Downloads are tested against a local HTTP server on 127.0.0.1 laid out like Slicer's testing-data
store (``SHA256/<hex>``): matching files arrive under their BraTS names, a file whose bytes do
not match its SHA-256 is refused and leaves nothing behind.
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


def test_sources_address_slicers_testing_data_store_by_sha256():
    sources = sample_data.sample_sources()
    assert [s["modality"] for s in sources] == ["t1", "t1ce", "t2", "flair"]
    by_name = {s["fileName"]: s for s in sources}
    t1c = by_name["BraTS-GLI-00001-000-t1c.nii.gz"]
    assert t1c["uri"] == ("https://github.com/Slicer/SlicerTestingData/releases/download/SHA256/"
                          "4399faadcc45c8a4541313cdf88aced7d835ed59ac3078d950e0eac293d603f5")  # fmt: skip
    assert t1c["checksum"] == "SHA256:4399faadcc45c8a4541313cdf88aced7d835ed59ac3078d950e0eac293d603f5"
    assert by_name["BraTS-GLI-00001-000-t2f.nii.gz"]["checksum"].endswith("82aed8546af5e6d8d94fd91c56227abdcf6120130390d1556c4342a208980604")
    assert by_name["BraTS-GLI-00001-000-t1n.nii.gz"]["checksum"].endswith("e860924b936e301ddeba20409fbb59dde322475cb49328f1b46a9235c792e73e")
    assert by_name["BraTS-GLI-00001-000-t2w.nii.gz"]["checksum"].endswith("4cd389cc57d12134a30a898c66532228126b9a7d0600ee578e82a32144528b51")


def test_registration_gives_the_sample_data_module_what_it_needs():
    calls = []

    class SampleDataLogic:  # the one call Slicer's SampleData.SampleDataLogic gets
        @staticmethod
        def registerCustomSampleDataSource(**kwargs):
            calls.append(kwargs)

    sample_data.register_sample_data(SampleDataLogic)
    (kwargs,) = calls
    assert kwargs["category"] == "NSLF" and kwargs["sampleName"] == "BraTS-GLI-00001-000"
    assert len(kwargs["uris"]) == len(kwargs["fileNames"]) == len(kwargs["nodeNames"]) == len(kwargs["checksums"]) == 4
    assert Path(kwargs["thumbnailFileName"]).is_file()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local testing-data store on 127.0.0.1 holding four small stand-in files, addressed by their SHA-256."""
    root = tmp_path / "store"
    (root / "SHA256").mkdir(parents=True)
    files = {}
    for modality, (suffix, _) in sample_data.BRATS_FILES.items():
        content = f"stand-in {suffix} volume".encode() * 100
        sha = hashlib.sha256(content).hexdigest()
        (root / "SHA256" / sha).write_bytes(content)
        files[modality] = (suffix, sha)
    monkeypatch.setattr(sample_data, "BRATS_FILES", files)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_verifies_every_file(store, tmp_path):
    root, url = store
    seen = []
    paths = sample_data.fetch_brats_sample(tmp_path / "case", url, progress=lambda f, m: seen.append(f))
    assert sorted(p.name for p in paths.values()) == sorted(f"BraTS-GLI-00001-000-{s}.nii.gz" for s, _ in sample_data.BRATS_FILES.values())
    for modality, (suffix, sha) in sample_data.BRATS_FILES.items():
        assert hashlib.sha256(paths[modality].read_bytes()).hexdigest() == sha
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == sorted(p.name for p in paths.values())  # no leftovers
    assert seen[0] == 0.0 and seen[-1] == 1.0


def test_a_file_that_does_not_match_its_checksum_is_refused_and_removed(store, tmp_path):
    root, url = store
    suffix, sha = sample_data.BRATS_FILES["t2"]
    (root / "SHA256" / sha).write_bytes(b"tampered")
    with pytest.raises(ModelError, match="does not match its SHA-256 checksum"):
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
