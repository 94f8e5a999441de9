"""``nslf fuse | segment | run``: NSLF on one case (or a folder of cases), outputs with the inputs' exact geometry.

Everything is checked before any computation (inputs, device, model, output folder, existing
outputs); outputs are written under temporary names in the output folder and renamed at the end,
so a failure leaves no partial files. Every refusal is one line on stderr and exit code 1
(argument errors: 2).

Outputs: ``fused.nii.gz`` (float32, fuse and run), ``seg.nii.gz`` (uint8 BraTS labels, segment
and run), ``confidence.json`` (segment and run: agreement of the mirrored passes and mean entropy in
the predicted tumour, :mod:`nslfcore.inference.confidence`; also printed, with a warning when low)
and, with ``--probabilities``, ``probabilities.nii.gz`` (float32, four components per
voxel: background, NCR, ED, ET; a NIfTI vector image, nibabel shape ``(x, y, z, 1, 4)``).

Any three of the four images are enough (three files, or a case folder lacking one): the missing
sequence gets no fusion weight, and one line says which it is and what it costs
(:func:`nslfcore.inference.missing.missing_sentence`). Fewer than three are refused.

``--cases DIR``: every case of DIR into ``OUT/<case>/``, reading and writing overlapped with the
network, finished cases skipped, failed cases reported, shards over ``torchrun`` ranks, and
``OUT/summary.csv`` (:func:`nslfcore.cohort.run_cohort`); exit code 1 when a case failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from nslfcore import MODALITIES
from nslfcore.data.output import OutputLock


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    titles = (("fuse", "the fused volume"), ("segment", "the tumour segmentation"), ("run", "fused volume and segmentation"))
    for name, title in titles:
        parser = subparsers.add_parser(
            name,
            help=f"NSLF inference on one case: {title}",
            description=f"NSLF inference on one case ({title}); outputs keep the inputs' exact geometry.",
        )
        for modality in MODALITIES:
            parser.add_argument(f"--{modality}", type=Path, metavar="FILE",
                                help=f"{modality.upper()} image (one of the four may be left out)")  # fmt: skip
        parser.add_argument("--case", type=Path, metavar="DIR", help="a BraTS-layout case folder instead of the image files")
        parser.add_argument("--cases", type=Path, metavar="DIR",
                            help="a folder of cases (as nslf check-data reads it): each into OUT/<case>/, finished cases "
                            "skipped, OUT/summary.csv; under torchrun the cases are shared among the ranks")  # fmt: skip
        parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
        parser.add_argument(
            "--model",
            default=None,
            help="a model id from Resources/Models/models.json, a model file (.pt) or a URL "
            "(with #sha256=...); default: the registry's default model",
        )
        parser.add_argument("--download", action="store_true", help="download the model if it is not on this machine")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
        parser.add_argument("--mode", default="auto", choices=("auto", "whole", "sequential", "sliding"),
                            help="whole volume, whole volume one modality at a time (less memory), or sliding windows")
        parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                            help="the network's number format: auto = bf16 on CUDA and on CPUs with native bf16 "
                            "(AMX, AVX-512 BF16), else fp32")  # fmt: skip
        parser.add_argument("--mirror", default=None, choices=("none", "lr", "all"),
                            help="test-time mirroring, class probabilities averaged: none (one pass), lr (also flipped "
                            "left-right: two passes, about twice the network time), all (every flip of z, y, x: eight "
                            "passes); default none (nslfcore.inference.DEFAULT_MIRROR)")  # fmt: skip
        parser.add_argument("--label-convention", default="brats2021", choices=("brats2021", "brats2023"))
        parser.add_argument("--probabilities", action="store_true", help="also write probabilities.nii.gz (4 classes)")
        parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        raw = parser.add_argument_group("raw exams (sequences on different grids, thick or oblique slices, skull on)")
        raw.add_argument("--preprocess", action="store_true",
                         help="co-register the sequences to T1ce (rigid), extract the brain (deepbet), align to the atlas "
                         "(affine), run NSLF there and bring the results back onto the T1ce's own grid")  # fmt: skip
        raw.add_argument("--keep-preprocessed", action="store_true",
                         help="with --preprocess, also write brain_mask.nii.gz and OUT/preprocessed/ (co-registered "
                         "sequences, atlas-space inputs, transforms as .tfm files)")  # fmt: skip
        raw.add_argument("--brain-extractor", default="deepbet", choices=("deepbet", "hd-bet", "synthstrip"),
                         help="the brain-extraction network (hd-bet and synthstrip: their commands, when installed)")
        raw.add_argument("--bias-correction", action="store_true",
                         help="with --preprocess, N4 bias-field correction of each sequence inside the brain")
        parser.set_defaults(func=run, task=name)


def _source(args: argparse.Namespace) -> Path | dict[str, Path]:
    files = {m: getattr(args, m) for m in MODALITIES if getattr(args, m) is not None}
    if args.case is not None:
        if files:
            raise ValueError("Give either --case or the image files, not both.")
        return args.case
    from nslfcore.inference.missing import MIN_SEQUENCES

    missing = [f"--{m}" for m in MODALITIES if m not in files]
    if len(files) < MIN_SEQUENCES:
        raise ValueError(f"Missing inputs {' '.join(missing)}; give at least {MIN_SEQUENCES} of the four images "
                         f"(--t1, --t1ce, --t2, --flair) or --case DIR.")  # fmt: skip
    return files


def _check_out_is_not_an_input_folder(out: Path, source) -> None:
    """Refuse ``--out`` inside the ``--case`` folder or equal to an input's folder: a ``seg.nii.gz`` written
    there would be read back as that case's ground truth (``check-data``, training)."""
    target = Path(os.path.realpath(out))  # realpath: a symbolic-link loop is reported later, not raised here
    if isinstance(source, Path):
        folders, inside = [Path(os.path.realpath(source))], True
    else:
        folders, inside = sorted({Path(os.path.realpath(p)).parent for p in source.values()}), False
    for folder in folders:
        if target == folder or (inside and target.is_relative_to(folder)):
            raise ValueError(f"--out {out} is {'inside ' if target != folder else ''}the input folder {folder}; "
                             "choose a folder outside it (results there would be read as part of the case).")  # fmt: skip


def _preprocess_options(args: argparse.Namespace, device: str):
    """``preprocess=`` for :func:`nslfcore.inference.run` from the raw-exam flags (``False`` without ``--preprocess``)."""
    from nslfcore.preprocess.pipeline import PreprocessOptions

    if not args.preprocess:
        if args.keep_preprocessed or args.bias_correction or args.brain_extractor != "deepbet":
            raise ValueError("--keep-preprocessed, --bias-correction and --brain-extractor need --preprocess.")
        return False
    return PreprocessOptions(extractor=args.brain_extractor, bias_correction=args.bias_correction,
                             device="cuda" if str(device).startswith("cuda") else "cpu")  # fmt: skip


def _print_progress(fraction: float, message: str) -> None:
    if sys.stdout.isatty():
        print(f"\r{fraction:4.0%} {message[:60]:<60}", end="", flush=True)


def run(args: argparse.Namespace) -> int:
    from nslfcore.cohort import one_line, output_names, write_outputs
    from nslfcore.inference import DEFAULT_MIRROR, MODE_DESCRIPTIONS, Source, as_case, resolve_device
    from nslfcore.inference import run as infer
    from nslfcore.inference.missing import missing_sentence
    from nslfcore.model_store import REGISTRY_NAME, default_model, load_model, registry_folder

    if args.cases is not None:
        return _run_cohort(args)
    names = output_names(args.task != "segment", args.task != "fuse", args.probabilities, brain_mask=args.keep_preprocessed)
    outputs = [args.out / n for n in names]
    created = not args.out.exists()
    lock: OutputLock | None = None
    clock = time.perf_counter()
    try:
        source = _source(args)
        _check_out_is_not_an_input_folder(args.out, source)
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file; give a folder for the outputs.")
        existing = [str(p) for p in outputs if p.exists()]
        if existing and not args.overwrite:
            raise ValueError(f"{existing[0]} already exists; use --overwrite to replace it or choose another --out.")
        if args.model is None and default_model() is None:
            raise ValueError(
                f"--model is required: {registry_folder() / REGISTRY_NAME} names no default model (none is shipped yet); "
                "give a model file (.pt), a model id or a URL."
            )
        device = resolve_device(args.device)
        preprocess = _preprocess_options(args, str(device))
        inputs: Source
        if preprocess:
            from nslfcore.preprocess.pipeline import read_exam

            name, inputs = read_exam(source)  # reads and checks the raw sequences (each on its own grid)
        else:
            inputs = as_case(source)  # reads and validates the inputs
            name = inputs.name
        model, info = load_model(args.model, download=args.download)
        args.out.mkdir(parents=True, exist_ok=True)  # before computing: an unwritable folder fails now
        lock = OutputLock(args.out, f"nslf {args.task}").acquire()  # a second run into this folder is refused
        prepared_s = time.perf_counter() - clock
        result = infer(
            inputs, model, fuse=args.task != "segment", segment=args.task != "fuse", device=device, mode=args.mode,
            label_convention=args.label_convention, probabilities=args.probabilities, progress=_print_progress,
            precision=args.precision, mirror=args.mirror or DEFAULT_MIRROR, preprocess=preprocess,
        )  # fmt: skip
        if sys.stdout.isatty():
            print()
        start = time.perf_counter()
        write_outputs(result, args.out, names)  # all complete before any is renamed onto its name
        write_s = time.perf_counter() - start
        lock.release()
    except (ValueError, OSError, MemoryError, RuntimeError) as error:  # DataValidationError, ModelError: ValueErrors
        if lock is not None:
            lock.release()
        _clean_up(args.out if created else None)
        kind = "error" if isinstance(error, (ValueError, OSError)) else f"error ({type(error).__name__})"
        print(f"nslf {args.task}: {kind}: {one_line(error)}", file=sys.stderr)
        return 1
    except BaseException:
        if lock is not None:
            lock.release()
        _clean_up(args.out if created else None)
        raise
    t = result.timings
    print(f"nslf {args.task}: {name} with model {info.id!r}: {MODE_DESCRIPTIONS.get(result.mode, result.mode)} "
          f"on {result.device} ({result.precision}); wrote " + ", ".join(str(p) for p in outputs))  # fmt: skip
    print(f"nslf {args.task}: time {time.perf_counter() - clock:.1f} s (reading and model {prepared_s:.1f} s, "
          f"preprocessing {t['preprocess']:.1f} s, network {t['inference']:.1f} s, pasting back {t['postprocess']:.1f} s, "
          f"writing {write_s:.1f} s)")  # fmt: skip
    if result.preprocessed is not None:
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in result.preprocessed.timings.items())
        print(f"nslf {args.task}: preprocessing: {steps}; brain {result.preprocessed.brain.volume_ml:.0f} ml "
              f"({result.preprocessed.brain.method}); results on the {result.preprocessed.reference} grid")  # fmt: skip
        for warning in result.preprocessed.warnings():
            print(f"nslf {args.task}: warning: {warning}", file=sys.stderr)
    if result.advice is not None:
        print(f"nslf {args.task}: warning: {result.advice}", file=sys.stderr)
    if result.missing is not None:
        print(f"nslf {args.task}: {missing_sentence(result.missing, info.id, args.task != 'segment', args.task != 'fuse')}")
    if result.confidence is not None and args.task != "fuse":
        print(f"nslf {args.task}: confidence: {result.confidence.summary()}")
        if result.confidence.low:
            print(f"nslf {args.task}: warning: {result.confidence.warning}", file=sys.stderr)
    return 0


def _clean_up(created: Path | None) -> None:
    """Remove the output folder if this command created it and it is empty (outputs clean up after themselves)."""
    if created is not None and created.is_dir() and not any(created.iterdir()):
        created.rmdir()


def _run_cohort(args: argparse.Namespace) -> int:
    """``--cases DIR``: :func:`nslfcore.cohort.run_cohort` with a progress bar (one line per case off a terminal)."""
    from nslfcore.cohort import CohortError, run_cohort
    from nslfcore.inference import DEFAULT_MIRROR
    from nslfcore.inference.missing import missing_sentence

    if args.case is not None or any(getattr(args, m) is not None for m in MODALITIES):
        print(f"nslf {args.task}: error: give either --cases or one case (--case or the image files), not both.",
              file=sys.stderr)  # fmt: skip
        return 1
    reporter = _CaseReporter(args.task)
    try:
        summary = run_cohort(
            args.cases, args.out, args.model, fuse=args.task != "segment", segment=args.task != "fuse",
            device=args.device, mode=args.mode, label_convention=args.label_convention,
            probabilities=args.probabilities, overwrite=args.overwrite, download=args.download, progress=reporter,
            precision=args.precision, mirror=args.mirror or DEFAULT_MIRROR,
            preprocess=_preprocess_options(args, args.device), keep_preprocessed=args.keep_preprocessed,
        )  # fmt: skip
    except (CohortError, ValueError) as error:
        print(f"nslf {args.task}: error: {error}", file=sys.stderr)
        return 1
    finally:
        reporter.close()
    if summary.rank != 0:  # rank 0 reports for all
        return 1 if summary.failed else 0
    counts = summary.counts()
    ranks = f" on {summary.world_size} ranks" if summary.world_size > 1 else ""
    rate = f", {summary.seconds_per_case:.1f} s per case, {summary.cases_per_hour:.0f} cases per hour" if counts["done"] else ""
    print(f"nslf {args.task}: {len(summary.outcomes)} cases with model {summary.model!r}{ranks}: {counts['done']} done, "
          f"{counts['skipped']} skipped (outputs already complete), {counts['failed']} failed; "
          f"{summary.wall_s:.1f} s{rate}; summary in {summary.out_dir / 'summary.csv'}")  # fmt: skip
    for outcome in summary.failed:
        print(f"nslf {args.task}: {outcome.case} failed: {outcome.error}", file=sys.stderr)
    for missing in MODALITIES:  # one sentence per missing sequence, naming the cases that lacked it
        lacking = [o.case for o in summary.outcomes if o.missing == missing and o.status != "failed"]
        if lacking:
            sentence = missing_sentence(missing, summary.model, args.task != "segment", args.task != "fuse")
            print(f"nslf {args.task}: {len(lacking)} case(s) without {missing} ({', '.join(lacking)}): {sentence}")
    for outcome in summary.outcomes:
        if outcome.confidence is not None and outcome.confidence.low:
            print(f"nslf {args.task}: warning: {outcome.case}: {outcome.confidence.warning}", file=sys.stderr)
    return 1 if summary.failed else 0


class _CaseReporter:
    """A tqdm bar on an interactive terminal (one process), else one line per case on stdout."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.bar = None

    def __call__(self, outcome, finished: int, total: int) -> None:
        if self.bar is None and sys.stderr.isatty() and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"nslf {self.task}", unit="case", dynamic_ncols=True)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{outcome.case} {outcome.status}", refresh=False)
            self.bar.update(1)
            return
        rank = f"[rank {outcome.rank}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        low = "; low confidence" if outcome.confidence is not None and outcome.confidence.low else ""
        low += f"; without {outcome.missing}" if outcome.missing else ""
        detail = {"done": f"in {outcome.seconds:.1f} s ({outcome.mode} on {outcome.device}){low}",
                  "skipped": "(outputs already complete)", "failed": f": {outcome.error}"}[outcome.status]  # fmt: skip
        print(f"nslf {self.task}: {rank}[{finished}/{total}] {outcome.case} {outcome.status} {detail}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
