"""NSLF's entries in Slicer's Sample Data module: a public four-modality BraTS case, fetched by SHA-256.

``BraTS-GLI-00001-000`` (BraTS 2023 adult glioma: T1, T1ce, T2, FLAIR, 240 x 240 x 155, 1 mm,
skull-stripped) as Slicer's testing-data store serves it, addressed by each file's SHA-256 (the
same files SlicerMONAIAuto3DSeg registers): a user tries NSLF on real MRI with one click. The
offline alternative is the phantom (:mod:`.sample_case`), which needs no download at all.

* :func:`register_sample_data` adds the case to the Sample Data module (Slicer downloads, checks
  and loads it there);
* :func:`fetch_brats_sample` downloads it outside that module (batch scripts, tests): each file
  checked against its SHA-256 by :func:`nslfcore.model_store.download_model` (temporary file,
  renamed only when the checksum matches, nothing left behind otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import RESOURCES_DIR, ensure_engine_on_path

ensure_engine_on_path()
from nslfcore.model_store import download_model  # noqa: E402

#: Slicer's testing-data store (``slicer.util.TESTING_DATA_URL``): files addressed as ``SHA256/<hex>``.
TESTING_DATA_URL = "https://github.com/Slicer/SlicerTestingData/releases/download/"
BRATS_SAMPLE = "BraTS-GLI-00001-000"
#: modality -> (BraTS 2023 file suffix, SHA-256 of the file).
BRATS_FILES: dict[str, tuple[str, str]] = {
    "t1": ("t1n", "e860924b936e301ddeba20409fbb59dde322475cb49328f1b46a9235c792e73e"),
    "t1ce": ("t1c", "4399faadcc45c8a4541313cdf88aced7d835ed59ac3078d950e0eac293d603f5"),
    "t2": ("t2w", "4cd389cc57d12134a30a898c66532228126b9a7d0600ee578e82a32144528b51"),
    "flair": ("t2f", "82aed8546af5e6d8d94fd91c56227abdcf6120130390d1556c4342a208980604"),
}
CATEGORY = "NSLF"


def sample_sources(base_url: str = TESTING_DATA_URL) -> list[dict[str, str]]:
    """Per file: ``uri``, ``fileName``, ``nodeName`` and ``checksum`` (``SHA256:<hex>``), in modality order."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    sources = []
    for modality, (suffix, sha256) in BRATS_FILES.items():
        name = f"{BRATS_SAMPLE}-{suffix}"
        sources.append({"modality": modality, "uri": f"{base}SHA256/{sha256}", "fileName": f"{name}.nii.gz",
                        "nodeName": name, "checksum": f"SHA256:{sha256}"})  # fmt: skip
    return sources


def register_sample_data(sample_data_logic: Any, base_url: str = TESTING_DATA_URL) -> None:
    """Register the case with ``SampleData.SampleDataLogic`` (call once Slicer has started)."""
    sources = sample_sources(base_url)
    sample_data_logic.registerCustomSampleDataSource(
        category=CATEGORY,
        sampleName=BRATS_SAMPLE,
        uris=[s["uri"] for s in sources],
        fileNames=[s["fileName"] for s in sources],
        nodeNames=[s["nodeName"] for s in sources],
        checksums=[s["checksum"] for s in sources],
        thumbnailFileName=str(RESOURCES_DIR / "Icons" / "NSLFSlicer.png"),
    )


def fetch_brats_sample(
    folder: str | Path, base_url: str = TESTING_DATA_URL, progress: Callable[[float, str], None] | None = None
) -> dict[str, Path]:
    """Download the case into ``folder`` (files already there with the right checksum are kept).

    Returns ``{modality: path}``; raises :class:`nslfcore.model_store.ModelError` when a file cannot
    be downloaded or does not match its SHA-256 (the bad download is deleted, earlier files stay).
    """
    folder = Path(folder)
    staging = folder / ".download"
    paths: dict[str, Path] = {}
    sources = sample_sources(base_url)
    for index, source in enumerate(sources):
        target = folder / source["fileName"]
        sha256 = source["checksum"].split(":", 1)[1]
        if progress is not None:
            progress(index / len(sources), f"downloading {source['fileName']}")
        fetched = download_model(source["uri"], sha256, cache_dir=staging)  # verified before it is renamed
        os.replace(fetched, target)
        paths[source["modality"]] = target
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    if progress is not None:
        progress(1.0, f"{BRATS_SAMPLE} is in {folder}")
    return paths
