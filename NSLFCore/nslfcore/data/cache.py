"""Cache of preprocessed cases, so an epoch does not re-read NIfTI files.

:class:`CaseCache` keeps :class:`~nslfcore.data.transforms.PreprocessedCase` objects in memory
and, with a ``cache_dir``, on disk as ``<name>-<key>.image.npy`` (float32 ``(4, z, y, x)``),
``<name>-<key>.label.npy`` (uint8 ``(z, y, x)``) and ``<name>-<key>.json`` (the crop record:
original grid in ``(x, y, z)``, mm, LPS, and the box in ``(z, y, x)``). The key hashes each file's
resolved path, modification time and size, and the preprocessing parameters, so a changed file
or setting never reuses a stale entry. Disk entries are memory-mapped on reading, so DataLoader
worker processes share them through the page cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from nslfcore.data.brats import load_case
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.transforms import DEFAULT_NORMALIZATION, CropRecord, PreprocessedCase, preprocess_case

#: Bump when the preprocessing code changes what it produces.
CACHE_VERSION = 1


class CaseCache:
    """Preprocessed cases by name, in memory and optionally on disk.

    Args:
        normalization: ``"robust"`` (default), ``"paper"`` or ``"zscore"`` (see :func:`~nslfcore.data.transforms.normalize`).
        margin: voxels kept around the brain box.
        cache_dir: folder for ``.npy`` entries, or ``None`` for memory only.
        in_memory: keep entries in this process's memory (set ``False`` for data sets larger
            than RAM with a ``cache_dir``).
    """

    def __init__(
        self,
        normalization: str = DEFAULT_NORMALIZATION,
        margin: int = 0,
        cache_dir: str | Path | None = None,
        in_memory: bool = True,
    ) -> None:
        self.normalization = normalization
        self.margin = int(margin)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.in_memory = in_memory
        self._memory: dict[str, PreprocessedCase] = {}

    def key(self, files: CaseFiles) -> str:
        """Hex key of a case's files (path, mtime, size) and the preprocessing parameters."""
        entries = []
        for role, path in sorted(files.paths().items()):
            stat = Path(path).stat()
            entries.append([role, str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size])
        payload = {
            "files": entries, "convention": files.label_convention, "normalization": self.normalization,
            "margin": self.margin, "version": CACHE_VERSION,
        }  # fmt: skip
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def get(self, item: CaseFiles | Case) -> PreprocessedCase:
        """The preprocessed case, computing and storing it when absent."""
        if isinstance(item, Case):  # generated in memory: no files to key on
            memo = f"case:{item.name}"
            if memo not in self._memory:
                self._memory[memo] = preprocess_case(item, self.normalization, self.margin)
            return self._memory[memo]
        key = self.key(item)
        memo = f"{item.name}-{key}"
        if memo in self._memory:
            return self._memory[memo]
        case = self._read_disk(memo) if self.cache_dir is not None else None
        if case is None:
            case = preprocess_case(load_case(item), self.normalization, self.margin)
            if self.cache_dir is not None:
                self._write_disk(memo, case)
        if self.in_memory:
            self._memory[memo] = case
        return case

    def _read_disk(self, memo: str) -> PreprocessedCase | None:
        assert self.cache_dir is not None
        meta_path = self.cache_dir / f"{memo}.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        image = np.load(self.cache_dir / f"{memo}.image.npy", mmap_mode="r")
        label_path = self.cache_dir / f"{memo}.label.npy"
        label = np.load(label_path, mmap_mode="r") if label_path.is_file() else None
        return PreprocessedCase(meta["name"], image, label, CropRecord.from_dict(meta["record"]))

    def _write_disk(self, memo: str, case: PreprocessedCase) -> None:
        assert self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = f".tmp{os.getpid()}"
        arrays = {"image": case.image} if case.label is None else {"image": case.image, "label": case.label}
        for part, array in arrays.items():
            with open(self.cache_dir / f"{memo}.{part}{tmp}.npy", "wb") as stream:
                np.save(stream, np.ascontiguousarray(array))
            os.replace(self.cache_dir / f"{memo}.{part}{tmp}.npy", self.cache_dir / f"{memo}.{part}.npy")
        meta = json.dumps({"name": case.name, "record": case.record.to_dict()})
        (self.cache_dir / f"{memo}.json{tmp}").write_text(meta)
        os.replace(self.cache_dir / f"{memo}.json{tmp}", self.cache_dir / f"{memo}.json")  # written last: marks complete
