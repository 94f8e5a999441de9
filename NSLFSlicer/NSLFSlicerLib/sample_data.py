"""NSLF's entries in Slicer's Sample Data module: a public four-modality BraTS case, checked by SHA-256.

``BraTS-GLI-00001-000`` (BraTS 2023 adult glioma: T1, T1ce, T2, FLAIR, 240 x 240 x 155, 1 mm,
skull-stripped): a user tries NSLF on real MRI with one click. SlicerMONAIAuto3DSeg registers the
same four files, with the same SHA-256, in its own Sample Data entries and hosts them in its
repository's ``TestingData`` release; that is the first source (:data:`MIRRORS`). Slicer's
testing-data store, which addresses files by SHA-256, is the fallback. The offline alternative is
the phantom (:mod:`.sample_case`), which needs no download at all.

* :func:`register_sample_data` adds the case to the Sample Data module (Slicer downloads, checks
  and loads it there). That module takes one URI per file (it retries it, it has no fallback
  list), so it gets the first mirror's;
* :func:`fetch_brats_sample` downloads it outside that module (batch scripts, tests), trying the
  mirrors in order: each file checked against its SHA-256 by
  :func:`nslfcore.model_store.download_model` (temporary file, renamed only when the checksum
  matches, nothing left behind otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import RESOURCES_DIR, ensure_engine_on_path

ensure_engine_on_path()
from nslfcore.model_store import ModelError, download_model  # noqa: E402

#: Where the files are, in the order tried; ``{fileName}`` and ``{sha256}`` are filled in per file.
MIRRORS: tuple[str, ...] = (
    "https://github.com/lassoan/SlicerMONAIAuto3DSeg/releases/download/TestingData/{fileName}",  # MONAIAuto3DSeg's
    "https://github.com/Slicer/SlicerTestingData/releases/download/SHA256/{sha256}",  # Slicer's testing-data store
)
BRATS_SAMPLE = "BraTS-GLI-00001-000"
#: modality -> (BraTS 2023 file suffix, SHA-256 of the file), as SlicerMONAIAuto3DSeg registers them.
BRATS_FILES: dict[str, tuple[str, str]] = {
    "t1": ("t1n", "e860924b936e301ddeba20409fbb59dde322475cb49328f1b46a9235c792e73e"),
    "t1ce": ("t1c", "4399faadcc45c8a4541313cdf88aced7d835ed59ac3078d950e0eac293d603f5"),
    "t2": ("t2w", "4cd389cc57d12134a30a898c66532228126b9a7d0600ee578e82a32144528b51"),
    "flair": ("t2f", "82aed8546af5e6d8d94fd91c56227abdcf6120130390d1556c4342a208980604"),
}
CATEGORY = "NSLF"


def sample_sources(mirrors: Sequence[str] = MIRRORS) -> list[dict[str, Any]]:
    """Per file, in modality order: ``modality``, ``uris`` (one per mirror, in order), ``fileName``,
    ``nodeName`` and ``checksum`` (``SHA256:<hex>``)."""
    sources = []
    for modality, (suffix, sha256) in BRATS_FILES.items():
        name = f"{BRATS_SAMPLE}-{suffix}"
        file_name = f"{name}.nii.gz"
        sources.append({"modality": modality, "uris": [m.format(fileName=file_name, sha256=sha256) for m in mirrors],
                        "fileName": file_name, "nodeName": name, "checksum": f"SHA256:{sha256}"})  # fmt: skip
    return sources


def register_sample_data(sample_data_logic: Any, mirrors: Sequence[str] = MIRRORS) -> None:
    """Register the case with ``SampleData.SampleDataLogic`` (once Slicer has started): one URI per file, the first mirror's."""
    sources = sample_sources(mirrors)
    sample_data_logic.registerCustomSampleDataSource(
        category=CATEGORY,
        sampleName=BRATS_SAMPLE,
        uris=[s["uris"][0] for s in sources],
        fileNames=[s["fileName"] for s in sources],
        nodeNames=[s["nodeName"] for s in sources],
        checksums=[s["checksum"] for s in sources],
        thumbnailFileName=str(RESOURCES_DIR / "Icons" / "NSLFSlicer.png"),
    )


def fetch_brats_sample(
    folder: str | Path, mirrors: Sequence[str] = MIRRORS, progress: Callable[[float, str], None] | None = None
) -> dict[str, Path]:
    """Download the case into ``folder`` (files already there with the right checksum are kept).

    Each file comes from the first mirror that gives it with the right SHA-256. Returns
    ``{modality: path}``; raises :class:`nslfcore.model_store.ModelError` when no mirror does,
    saying what each answered (a bad download is deleted, earlier files stay).
    """
    folder = Path(folder)
    staging = folder / ".download"
    paths: dict[str, Path] = {}
    sources = sample_sources(mirrors)
    for index, source in enumerate(sources):
        target = folder / source["fileName"]
        sha256 = source["checksum"].split(":", 1)[1]
        if progress is not None:
            progress(index / len(sources), f"downloading {source['fileName']}")
        failures = []
        for uri in source["uris"]:
            try:
                fetched = download_model(uri, sha256, cache_dir=staging)  # verified before it is renamed
                break
            except ModelError as error:
                failures.append(str(error))
        else:
            raise ModelError(f"{source['fileName']} could not be downloaded from any source: " + " ".join(failures))
        os.replace(fetched, target)
        paths[source["modality"]] = target
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    if progress is not None:
        progress(1.0, f"{BRATS_SAMPLE} is in {folder}")
    return paths
