"""Inference on a folder of cases (``nslf run --cases DIR --out DIR``): overlapped, resumable, sharded over ranks.

:func:`run_cohort` finds the cases as ``nslf check-data`` does (:func:`nslfcore.data.discovery.find_cases`:
BraTS 2021, BraTS 2023+ and plain folders; labels are not read) and runs
:func:`nslfcore.inference.run` on each, writing ``OUT/<case>/`` (``fused.nii.gz``, ``seg.nii.gz``,
``confidence.json``, ``probabilities.nii.gz`` on request) exactly as single-case ``nslf run`` writes them
(:func:`write_outputs`: temporary names, each file read back, then renamed).

* **Overlap**: a reader thread reads and checks case *i+1* and a writer thread writes case *i-1*
  while the network runs case *i* (SimpleITK, zlib and torch release the GIL); at most these two
  cases are held besides the one in the network.
* **Resumable**: a case whose outputs are all present and complete (:func:`verify_written`) is
  skipped unless ``overwrite``; a case that fails (unreadable or implausible inputs, out of memory)
  is recorded with its one-line error and the others go on; the output folder is locked
  (:class:`~nslfcore.data.output.OutputLock`) against a second cohort run, and each case folder
  while it is written.
* **Ranks**: under ``torchrun`` (``WORLD_SIZE > 1``) every rank joins the process group
  (:func:`nslfcore.distributed.distributed_context`: gloo on CPU, NCCL on CUDA, ``cuda:LOCAL_RANK``
  per rank) and takes cases ``rank, rank + W, ...`` of the sorted list; rank 0 locks the folder and
  writes the merged ``OUT/summary.csv`` once every rank has finished.

Arrays are numpy ``(z, y, x)`` on the input grid (ITK ``(x, y, z)`` mm, LPS), as in :mod:`nslfcore.inference`.

Example:
    >>> summary = run_cohort("BraTS2021_TestingData", "results", model=None)  # the default model  # doctest: +SKIP
    >>> summary.counts()  # doctest: +SKIP
    {'done': 10, 'skipped': 0, 'failed': 0}
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from nslfcore.data.brats import find_cases
from nslfcore.data.case import Case, CaseFiles
from nslfcore.data.output import OutputLock, atomic_write_text, install, verify_written
from nslfcore.distributed import DistributedContext, device_for_rank, distributed_context
from nslfcore.errors import NSLFError
from nslfcore.inference import (
    CONFIDENCE_NAME,
    DEFAULT_MIRROR,
    Confidence,
    InferenceResult,
    LabelConvention,
    Mirror,
    Mode,
    Precision,
    read_confidence,
)
from nslfcore.inference import run as infer
from nslfcore.inference.inputs import load_inputs
from nslfcore.models import Network
from nslfcore.preprocess.pipeline import PreprocessOptions, read_exam

#: The summary file of a cohort, in its output folder.
SUMMARY_NAME = "summary.csv"
Status = Literal["done", "skipped", "failed"]


class CohortError(NSLFError, ValueError):
    """A cohort cannot start (no cases, a bad output folder, a model or device that cannot be used)."""


def output_names(fuse: bool = True, segment: bool = True, probabilities: bool = False, brain_mask: bool = False) -> list[str]:
    """The output files of one case, in writing order: ``fused.nii.gz``, ``seg.nii.gz``, ``confidence.json``
    (with the segmentation), ``probabilities.nii.gz``, ``brain_mask.nii.gz`` (a preprocessed raw exam's,
    kept with ``--keep-preprocessed``)."""
    wanted = (("fused.nii.gz", fuse), ("seg.nii.gz", segment), (CONFIDENCE_NAME, segment),
              ("probabilities.nii.gz", probabilities), (BRAIN_MASK_NAME, brain_mask))  # fmt: skip
    return [name for name, want in wanted if want]


BRAIN_MASK_NAME = "brain_mask.nii.gz"
PREPROCESSED_FOLDER = "preprocessed"
"""With ``--keep-preprocessed``: the folder (in the case's output folder) that keeps the intermediate
results of preprocessing (:meth:`nslfcore.preprocess.pipeline.PreparedExam.write`)."""


def write_outputs(result: InferenceResult, folder: Path, names: Sequence[str]) -> list[Path]:
    """Write ``names`` (see :func:`output_names`) of ``result`` into ``folder``, all or nothing; returns their paths.

    Each file is written on the input grid (compressed NIfTI) under a hidden temporary name
    (``.partial-<pid>-<name>``), read back completely, and only when all are complete renamed onto
    its final name; on any failure the temporary files are removed and earlier files are untouched.
    ``fused.nii.gz`` is float32, ``seg.nii.gz`` uint8 labels, ``confidence.json`` the case's
    :class:`~nslfcore.inference.Confidence` (:meth:`~nslfcore.inference.Confidence.to_dict`),
    ``probabilities.nii.gz`` float32 with four components per voxel (background, NCR, ED, ET;
    nibabel shape ``(x, y, z, 1, 4)``), ``brain_mask.nii.gz`` uint8 (a preprocessed exam's, native grid).
    With :data:`BRAIN_MASK_NAME` among ``names``, the other intermediate results of preprocessing are
    then written into ``folder/preprocessed/`` (:data:`PREPROCESSED_FOLDER`).
    """
    outputs = [folder / name for name in names]
    temps = [p.with_name(f".partial-{os.getpid()}-{p.name}") for p in outputs]
    try:
        for name, temp in zip(names, temps):
            _write(name, result, temp)
        install(zip(temps, outputs), verify=False)  # each was read back by _write: all complete before any rename
    except BaseException:
        for temp in temps:
            with contextlib.suppress(OSError):  # e.g. the folder is a file: the first error is the one to report
                temp.unlink(missing_ok=True)
        raise
    if BRAIN_MASK_NAME in names and result.preprocessed is not None:
        outputs += result.preprocessed.write(folder / PREPROCESSED_FOLDER, brain_mask=False)
    return outputs


def _write(name: str, result: InferenceResult, temp: Path) -> None:
    import SimpleITK as sitk

    from nslfcore.data.io import write_image

    if name == BRAIN_MASK_NAME:
        if result.preprocessed is None:
            raise ValueError(f"{name} was asked for but the inputs were not preprocessed (use --preprocess).")
        sitk.WriteImage(result.preprocessed.brain.native, str(temp), True, imageIO="NiftiImageIO")
        verify_written(temp)
        return
    if name == CONFIDENCE_NAME:
        if result.confidence is None:
            raise ValueError(f"{name} was asked for but the network did not segment.")
        temp.write_text(result.confidence.to_json(), encoding="utf-8")
        verify_written(temp)
        return
    array = {"fused.nii.gz": result.fused, "seg.nii.gz": result.labels, "probabilities.nii.gz": result.probabilities}[name]
    if array is None:
        raise ValueError(f"{name} was asked for but the network did not produce it.")
    if name != "probabilities.nii.gz":
        write_image(array, result.geometry, temp, np.float32 if name == "fused.nii.gz" else np.uint8)
    else:  # (class, z, y, x) -> a vector image with the four classes as components
        image = result.geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, 0, -1)), isVector=True))
        sitk.WriteImage(image, str(temp), True, imageIO="NiftiImageIO")
        verify_written(temp)  # write_image verifies its own files


def one_line(error: BaseException) -> str:
    """The error as one line (a :class:`DataValidationError` lists one problem per line)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one case: ``done`` (outputs written), ``skipped`` (outputs already complete) or ``failed``.

    ``read_s``, ``network_s`` (preprocessing, network, pasting back) and ``write_s`` are this case's
    own seconds per phase; ``mode`` and ``device`` are those the network ran with; ``confidence`` is
    the segmentation's (a skipped case's from its ``confidence.json``), ``None`` when there is none;
    ``missing`` is the sequence the case lacked (``""``: it had all four; see
    :mod:`nslfcore.inference.missing`); ``error`` is one line.
    """

    case: str
    status: Status
    read_s: float = 0.0
    network_s: float = 0.0
    write_s: float = 0.0
    mode: str = ""
    device: str = ""
    error: str = ""
    rank: int = 0
    confidence: Confidence | None = None
    missing: str = ""

    @property
    def seconds(self) -> float:
        return self.read_s + self.network_s + self.write_s


@dataclass
class CohortSummary:
    """All cases of a cohort (sorted by name, every rank's) and the wall-clock time of the whole run.

    ``rank`` and ``world_size`` are this process's (``0`` and ``1`` without distribution).
    """

    outcomes: list[CaseOutcome]
    wall_s: float
    out_dir: Path
    model: str = ""
    rank: int = 0
    world_size: int = 1

    def counts(self) -> dict[str, int]:
        return {status: sum(o.status == status for o in self.outcomes) for status in ("done", "skipped", "failed")}

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def seconds_per_case(self) -> float:
        """Wall-clock seconds per processed case (overlap and ranks included); 0 when none was processed."""
        done = self.counts()["done"]
        return self.wall_s / done if done else 0.0

    @property
    def cases_per_hour(self) -> float:
        return 3600.0 / self.seconds_per_case if self.seconds_per_case else 0.0

    def csv_text(self) -> str:
        """One row per case: ``case, status, seconds, read_s, network_s, write_s, mode, device, missing, agreement,
        mean_entropy, low_confidence, rank, error`` (the confidence columns empty without a segmentation)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "status", "seconds", "read_s", "network_s", "write_s", "mode", "device", "missing",
                         "agreement", "mean_entropy", "low_confidence", "rank", "error"])  # fmt: skip
        for o in self.outcomes:
            times = (f"{t:.2f}" for t in (o.seconds, o.read_s, o.network_s, o.write_s))
            writer.writerow([o.case, o.status, *times, o.mode, o.device, o.missing, *_confidence_cells(o.confidence),
                             o.rank, o.error])  # fmt: skip
        return buffer.getvalue()


def _confidence_cells(confidence: Confidence | None) -> list[str]:
    """``agreement, mean_entropy, low_confidence`` cells (empty when unknown; agreement empty without mirroring)."""
    if confidence is None:
        return ["", "", ""]
    agreement = "" if confidence.agreement is None else f"{confidence.agreement:.4f}"
    return [agreement, f"{confidence.mean_entropy:.4f}", "yes" if confidence.low else "no"]


#: ``progress(outcome, finished, total)``: called on each rank after each of its cases.
CaseProgress = Callable[[CaseOutcome, int, int], None]


def run_cohort(
    cases_dir: str | Path,
    out_dir: str | Path,
    model: Network | str | Path | None = None,
    *,
    fuse: bool = True,
    segment: bool = True,
    device: str = "auto",
    mode: Mode = "auto",
    label_convention: LabelConvention = "brats2021",
    probabilities: bool = False,
    overwrite: bool = False,
    download: bool = False,
    progress: CaseProgress | None = None,
    precision: Precision = "auto",
    mirror: Mirror = DEFAULT_MIRROR,
    preprocess: bool | PreprocessOptions = False,
    keep_preprocessed: bool = False,
) -> CohortSummary:
    """Run NSLF on every case in ``cases_dir``, writing ``out_dir/<case>/``; see the module docstring.

    Args:
        cases_dir: a folder of cases (or one case folder) in any layout ``nslf check-data`` reads.
        out_dir: the output folder (created); must not be inside ``cases_dir``.
        model: a :class:`~nslfcore.models.interface.Network`, or a model id, file or URL for
            :func:`nslfcore.model_store.load_model` (``None``: the registry's default model).
        fuse, segment, probabilities: which outputs to write (see :func:`output_names`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; under ``torchrun`` CUDA ranks use ``cuda:LOCAL_RANK``.
        mode, label_convention, precision, mirror: as for :func:`nslfcore.inference.run`.
        overwrite: recompute cases whose outputs are complete (otherwise they are skipped).
        download: download a registry or URL model that is not on this machine.
        progress: called after each case of this rank (see :data:`CaseProgress`).
        preprocess: raw exams (:func:`nslfcore.inference.run`'s ``preprocess``): each case's sequences are
            read as they are and co-registered, skull-stripped and aligned to the atlas first.
        keep_preprocessed: with ``preprocess``, also write ``brain_mask.nii.gz`` and ``preprocessed/``.

    Returns:
        The merged :class:`CohortSummary` (the same on every rank); rank 0 has written ``out_dir/summary.csv``.

    Raises:
        CohortError: before any case is run, when the cohort cannot start (one sentence).
    """
    if keep_preprocessed and not preprocess:
        raise CohortError("keep_preprocessed (--keep-preprocessed) needs preprocess (--preprocess).")
    names = output_names(fuse, segment, probabilities, brain_mask=keep_preprocessed)
    options: dict[str, Any] = dict(fuse=fuse, segment=segment, mode=mode, label_convention=label_convention,
                                   probabilities=probabilities, precision=precision, mirror=mirror,
                                   preprocess=preprocess)  # run()'s, but the device
    started = dist.is_available() and not dist.is_initialized()
    context = distributed_context()
    try:
        return _run(context, Path(cases_dir), Path(out_dir), model, device, names, options, overwrite, download, progress)
    finally:
        if started and context.active:
            dist.destroy_process_group()


def _run(context: DistributedContext, cases_dir: Path, out_dir: Path, model: Network | str | Path | None, device: str,
         names: Sequence[str], options: dict[str, Any], overwrite: bool, download: bool,
         progress: CaseProgress | None) -> CohortSummary:  # fmt: skip
    """:func:`run_cohort` once the process group is joined; ``options`` are :func:`nslfcore.inference.run`'s."""
    clock = time.perf_counter()
    lock = OutputLock(out_dir, "nslf run --cases")
    error = None
    try:
        cases = _find(cases_dir, out_dir)
        torch_device = _device(device, context)
        network, model_id = _load(model, download)
        if context.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()  # a second cohort run into this folder is refused
    except (ValueError, OSError, RuntimeError) as failure:  # NSLFErrors are ValueErrors or OSErrors
        error = one_line(failure)
    try:
        error = _first_error(context, error)  # every rank stops when one cannot start
        if error is not None:
            raise CohortError(error)
        shard = cases[context.rank :: context.world_size]
        mine = _process(shard, out_dir, names, network, options | {"device": torch_device}, overwrite, context.rank,
                        progress)  # fmt: skip
        outcomes = _gather(context, mine)
        summary = CohortSummary(sorted(outcomes, key=lambda o: o.case), time.perf_counter() - clock, out_dir,
                                model_id, context.rank, context.world_size)  # fmt: skip
        if context.is_main:
            atomic_write_text(out_dir / SUMMARY_NAME, summary.csv_text())
        return summary
    finally:
        lock.release()


def _find(cases_dir: Path, out_dir: Path) -> list[CaseFiles]:
    """The cases of ``cases_dir`` (sorted by name); refuses an output folder inside it."""
    source, target = Path(os.path.realpath(cases_dir)), Path(os.path.realpath(out_dir))
    if target.is_relative_to(source):
        raise CohortError(f"--out {out_dir} is inside the cases folder {cases_dir}; choose a folder outside it "
                          "(its results would be read as cases).")  # fmt: skip
    if out_dir.exists() and not out_dir.is_dir():
        raise CohortError(f"--out {out_dir} is a file; give a folder for the outputs.")
    cases = find_cases(cases_dir)
    if not cases:
        raise CohortError(f"{cases_dir} holds no cases; expected case folders with image files (check with nslf check-data).")
    return cases


def _device(spec: str, context: DistributedContext) -> torch.device:
    device = device_for_rank(spec, context)  # cuda:LOCAL_RANK under torchrun
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the device of this rank's NCCL collectives
    return device


def _load(model: Network | str | Path | None, download: bool) -> tuple[Network, str]:
    from nslfcore.model_store import REGISTRY_NAME, default_model, load_model, registry_folder

    if isinstance(model, Network):
        return model, type(model).__name__
    if model is None and default_model() is None:
        raise CohortError(f"--model is required: {registry_folder() / REGISTRY_NAME} names no default model; "
                          "give a model file (.pt), a model id or a URL.")  # fmt: skip
    network, info = load_model(model, download=download)
    return network, info.id


def _first_error(context: DistributedContext, error: str | None) -> str | None:
    """The first rank's error (in rank order), on every rank; ``error`` itself without distribution."""
    return next((e for e in context.gather(error) if e is not None), None)


def _gather(context: DistributedContext, outcomes: list[CaseOutcome]) -> list[CaseOutcome]:
    """Every rank's outcomes, on every rank (after all ranks have finished their cases)."""
    return [o for part in context.gather(outcomes) for o in part or []]


def _complete(folder: Path, names: Sequence[str]) -> bool:
    try:
        for name in names:
            verify_written(folder / name)
    except OSError:
        return False
    return True


@dataclass
class _Read:
    files: CaseFiles
    case: Case | dict[str, Any] | None  # a raw exam's sequences (each on its own grid) with preprocess
    seconds: float
    error: str = ""


def _read(files: CaseFiles, raw: bool = False) -> _Read:
    start = time.perf_counter()
    try:
        if raw:  # read as they are: preprocessing puts them on one grid
            case: Case | dict[str, Any] = read_exam(dict(files.images))[1]
        else:
            case = load_inputs(files)  # the inputs only (three of four suffice), checked as nslf run checks them
    except Exception as error:  # noqa: BLE001 - a case that cannot be read fails alone
        return _Read(files, None, time.perf_counter() - start, _described(error))
    return _Read(files, case, time.perf_counter() - start)


def _described(error: Exception) -> str:
    kind = "" if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: "
    return kind + one_line(error)


def _write_case(read: _Read, result: InferenceResult, network_s: float, out_dir: Path, names: Sequence[str],
                rank: int) -> CaseOutcome:  # fmt: skip
    folder = out_dir / read.files.name
    start = time.perf_counter()
    common = dict(case=read.files.name, read_s=read.seconds, network_s=network_s, mode=result.mode,
                  device=result.device, rank=rank, confidence=result.confidence, missing=result.missing or "")  # fmt: skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with OutputLock(folder, "nslf run --cases"):  # also removes what a killed run left there
            write_outputs(result, folder, names)
    except Exception as error:  # noqa: BLE001 - e.g. a full disk: this case fails, the cohort goes on
        return CaseOutcome(status="failed", write_s=time.perf_counter() - start, error=_described(error), **common)  # type: ignore[arg-type]
    return CaseOutcome(status="done", write_s=time.perf_counter() - start, **common)  # type: ignore[arg-type]


def _process(shard: list[CaseFiles], out_dir: Path, names: Sequence[str], network: Network, options: dict,
             overwrite: bool, rank: int, progress: CaseProgress | None) -> list[CaseOutcome]:  # fmt: skip
    """This rank's cases: read case i+1 and write case i-1 in threads while the network runs case i."""
    outcomes: list[CaseOutcome] = []

    def report(outcome: CaseOutcome) -> None:
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome, len(outcomes), len(shard))

    todo = []
    for files in shard:
        if not overwrite and _complete(out_dir / files.name, names):
            confidence = read_confidence(out_dir / files.name / CONFIDENCE_NAME) if CONFIDENCE_NAME in names else None
            missing = files.missing[0] if len(files.missing) == 1 else ""  # what its outputs were computed without
            report(CaseOutcome(files.name, "skipped", rank=rank, confidence=confidence, missing=missing))
        else:
            todo.append(files)
    with ThreadPoolExecutor(1, "nslf-read") as reader, ThreadPoolExecutor(1, "nslf-write") as writer:
        raw = bool(options.get("preprocess"))
        reading = reader.submit(_read, todo[0], raw) if todo else None
        writing: Future[CaseOutcome] | None = None
        for index in range(len(todo)):
            assert reading is not None
            read = reading.result()
            reading = reader.submit(_read, todo[index + 1], raw) if index + 1 < len(todo) else None
            if read.case is None:
                report(CaseOutcome(read.files.name, "failed", read.seconds, error=read.error, rank=rank))
                continue
            start = time.perf_counter()
            try:
                result = infer(read.case, network, **options)
            except Exception as error:  # noqa: BLE001 - e.g. out of memory even in windows: this case fails alone
                report(CaseOutcome(read.files.name, "failed", read.seconds, time.perf_counter() - start,
                                   error=_described(error), rank=rank))  # fmt: skip
                continue
            network_s = time.perf_counter() - start
            read.case = None  # the inputs are no longer needed while the outputs are written
            if writing is not None:
                report(writing.result())  # at most one case being written
            writing = writer.submit(_write_case, read, result, network_s, out_dir, names, rank)
            del result
        if writing is not None:
            report(writing.result())
    return outcomes
