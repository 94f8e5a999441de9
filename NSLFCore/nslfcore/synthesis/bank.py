"""A label-map bank: synthesis label maps drawn once (the CPU-bound part) and kept for on-the-fly training.

A label map (:func:`~nslfcore.synthesis.label_map.generate_label_map`, numpy and SciPy, about
8 s) costs more than the images drawn from it (:func:`~nslfcore.synthesis.generator.synthesise_images`,
torch, any device). :func:`write_label_bank` draws maps ``start .. start + n - 1`` of ``seed`` in
``workers`` processes and stores each as ``<folder>/labels-XXXXX.npy``: uint8 ``(z, y, x)``, the
head's bounding box on the BraTS grid grown by :data:`BANK_MARGIN` voxels (a third of the grid).
``<folder>/bank.json`` holds the seed and, per map, its tumour type and box::

    {"format": 1, "seed": 0, "margin": 8, "grid_zyx": [155, 240, 240],
     "maps": {"0": {"tumour_type": "glioblastoma", "start": [0, 35, 46], "shape": [155, 185, 147]}, ...}}

(``start`` and ``shape`` are ``(z, y, x)`` voxels of the BraTS grid: 240 x 240 x 155, 1 mm, LPS,
:func:`~nslfcore.data.phantom.brats_geometry`). Each map file is written atomically and entered in
``bank.json`` after it is complete, so an interrupted bank resumes where it stopped: the same call
keeps every complete map and draws only the others. :func:`read_label_bank` opens a bank as a
:class:`LabelBank`, whose maps are memory-mapped.

Example::

    >>> bank = write_label_bank("bank", n=200, seed=0, workers=16)   # doctest: +SKIP
    >>> bank.labels(0).shape                                          # doctest: +SKIP
    (155, 185, 147)
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nslfcore.data.case import Geometry
from nslfcore.data.output import OutputLock, atomic_write_text, remove_stale_temporaries, temporary_path
from nslfcore.errors import NSLFError

#: The index of a bank.
BANK_FILE = "bank.json"
#: Voxels kept around the head's bounding box.
BANK_MARGIN = 8
BANK_FORMAT = 1


class LabelBankError(NSLFError, ValueError):
    """A label bank that cannot be read or extended (one sentence naming the folder)."""


@dataclass(frozen=True)
class BankEntry:
    """One stored label map.

    Attributes:
        index: its case index in the data set of the bank's seed (``generate_label_map(seed, index)``).
        tumour_type: one of :data:`nslfcore.synthesis.tumours.TUMOUR_TYPES`.
        start: first voxel of the stored box on the BraTS grid, ``(z, y, x)``.
        shape: the stored box, ``(z, y, x)`` voxels.
    """

    index: int
    tumour_type: str
    start: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def name(self) -> str:
        """``labels-XXXXX``: the file's stem, and the name training runs record."""
        return map_name(self.index)


@dataclass(frozen=True)
class LabelBank:
    """A bank read by :func:`read_label_bank`: ``entries`` in index order; positions ``0 .. len - 1`` address them."""

    folder: Path
    seed: int
    entries: tuple[BankEntry, ...]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def geometry(self) -> Geometry:
        """The BraTS grid the boxes lie on (``(x, y, z)``, 1 mm, LPS)."""
        return _grid()

    def path(self, position: int) -> Path:
        """The ``.npy`` file of the map at ``position``."""
        return self.folder / f"{self.entries[position].name}.npy"

    def labels(self, position: int) -> np.ndarray:
        """The stored box ``(z, y, x)`` uint8 of the map at ``position`` (memory-mapped, read-only)."""
        return np.load(self.path(position), mmap_mode="r")

    def full_labels(self, position: int) -> np.ndarray:
        """The map at ``position`` on the whole BraTS grid ``(z, y, x)`` uint8: the box pasted back, 0 elsewhere.

        This is ``generate_label_map(seed, index).labels`` exactly (nothing lies outside the box).
        """
        entry = self.entries[position]
        out = np.zeros(self.geometry.shape, np.uint8)
        out[tuple(slice(s, s + n) for s, n in zip(entry.start, entry.shape))] = self.labels(position)
        return out


def _grid() -> Geometry:
    from nslfcore.data.phantom import brats_geometry

    return brats_geometry()


def map_name(index: int) -> str:
    """``labels-XXXXX`` for map ``index``."""
    return f"labels-{int(index):05d}"


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / BANK_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabelBankError(f"{folder} holds no label bank ({BANK_FILE} is missing); write one with "
                             f"nslf synth --bank --out {folder} --n N.") from None  # fmt: skip
    except (OSError, ValueError) as error:
        raise LabelBankError(f"{path} cannot be read ({error}); write the bank again with nslf synth --bank.") from None
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT or not isinstance(data.get("maps"), dict):
        raise LabelBankError(f"{path} is not a label-bank index of format {BANK_FORMAT}; write the bank again.")
    return data


def _entries(data: dict[str, Any]) -> list[BankEntry]:
    return sorted(
        (BankEntry(int(key), str(value["tumour_type"]), tuple(value["start"]), tuple(value["shape"]))
         for key, value in data["maps"].items()),
        key=lambda entry: entry.index,
    )  # fmt: skip


def _complete(folder: Path, entry: BankEntry) -> bool:
    """Whether ``entry``'s file exists with the recorded shape and type (its header and size read, not its voxels)."""
    try:
        stored = np.load(folder / f"{entry.name}.npy", mmap_mode="r")
    except (OSError, ValueError):
        return False
    return stored.dtype == np.uint8 and tuple(stored.shape) == tuple(entry.shape)


def read_label_bank(folder: str | Path) -> LabelBank:
    """The bank in ``folder`` (see the module docstring); raises :class:`LabelBankError` when it is missing,
    empty or a map file is gone."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelBankError(f"{folder}: no such folder; write a label bank there with nslf synth --bank --out {folder} --n N.")
    data = _read_index(folder)
    entries = _entries(data)
    if not entries:
        raise LabelBankError(f"{folder} holds an empty label bank; write maps with nslf synth --bank --out {folder} --n N.")
    for entry in entries:
        if not _complete(folder, entry):
            raise LabelBankError(f"{folder / entry.name}.npy is missing or incomplete; run nslf synth --bank on {folder} "
                                 "again with the same --seed to redraw it.")  # fmt: skip
    return LabelBank(folder, int(data["seed"]), tuple(entries))


def write_map(folder: str | Path, seed: int, index: int) -> BankEntry:
    """Draw map ``index`` of ``seed`` and write its box atomically as ``<folder>/labels-XXXXX.npy``; returns its entry.

    Runs in a worker process of :func:`write_label_bank` (module level, so that it can be sent there).
    """
    from nslfcore.data.transforms import brain_bbox
    from nslfcore.synthesis.label_map import generate_label_map

    synthesis = generate_label_map(seed, index)
    start, stop = brain_bbox(synthesis.labels > 0, BANK_MARGIN)
    box = np.ascontiguousarray(synthesis.labels[tuple(slice(a, b) for a, b in zip(start, stop))], dtype=np.uint8)
    path = Path(folder) / f"{map_name(index)}.npy"
    temp = temporary_path(path)
    try:
        with open(temp, "wb") as handle:
            np.save(handle, box)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return BankEntry(int(index), synthesis.tumour_type, start, tuple(int(n) for n in box.shape))  # type: ignore[arg-type]


def write_label_bank(folder: str | Path, n: int, seed: int = 0, start: int = 0, workers: int = 1,
                     progress: Callable[[BankEntry], None] | None = None) -> LabelBank:  # fmt: skip
    """Write maps ``start .. start + n - 1`` of ``seed`` into ``folder`` with ``workers`` processes; returns the bank.

    Complete maps already in the folder are kept (an interrupted call resumes); a folder holding a
    bank of another seed is refused (:class:`LabelBankError`). ``progress`` is called with each new
    entry as it is entered in ``bank.json``. The folder is locked (:class:`~nslfcore.data.output.OutputLock`)
    while it is written.
    """
    if n < 1 or workers < 1:
        raise LabelBankError(f"a label bank needs --n >= 1 and --workers >= 1, got {n} and {workers}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(folder, "nslf synth --bank").acquire()
    try:
        remove_stale_temporaries(folder)
        data: dict[str, Any] = {"format": BANK_FORMAT, "seed": int(seed), "margin": BANK_MARGIN,
                                "grid_zyx": list(_grid().shape), "maps": {}}  # fmt: skip
        if (folder / BANK_FILE).exists():
            data = _read_index(folder)
        if int(data["seed"]) != int(seed):
            raise LabelBankError(f"{folder} holds label maps of seed {data['seed']}, not {seed}; "
                                 f"use --seed {data['seed']} to extend it or another folder.")  # fmt: skip
        done = {entry.index for entry in _entries(data) if _complete(folder, entry)}
        data["maps"] = {key: value for key, value in data["maps"].items() if int(key) in done}
        todo = [index for index in range(start, start + n) if index not in done]
        # spawn: the workers start clean, without the parent's torch threads (fork with threads can deadlock)
        with ProcessPoolExecutor(max_workers=min(workers, max(1, len(todo))),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:  # fmt: skip
            futures = [pool.submit(write_map, folder, seed, index) for index in todo]
            try:
                for future in as_completed(futures):
                    entry = future.result()
                    data["maps"][str(entry.index)] = {"tumour_type": entry.tumour_type, "start": list(entry.start),
                                                      "shape": list(entry.shape)}  # fmt: skip
                    atomic_write_text(folder / BANK_FILE, json.dumps(data, indent=1, sort_keys=True))
                    if progress is not None:
                        progress(entry)
            except BaseException:  # a failed or interrupted map: the maps not started are not drawn
                for future in futures:
                    future.cancel()
                raise
    finally:
        lock.release()
    return read_label_bank(folder)
