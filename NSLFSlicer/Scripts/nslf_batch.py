"""Batch NSLF: fuse and segment BraTS-like cases from the command line, inside Slicer or in plain Python.

    Slicer --no-main-window --python-script nslf_batch.py -- --case DIR --out DIR [--model M] [--device D]
    python nslf_batch.py --cases DIR --out DIR [--model M] [--device D] [--mirror none|lr|all] [--no-render] [--overwrite]
                         [--preprocess [--keep-preprocessed DIR]]

Per case (a folder with T1, T1ce, T2 and FLAIR files named like BraTS 2021 ``*_t1.nii.gz``, 2023
``*-t1n.nii.gz`` or as :func:`nslfcore.data.modality_names.modality_of` reads names): the volumes are read through MRML storage nodes, the logic runs, and
``<out>[/<case>]/`` receives fused.nii.gz, segmentation.seg.nrrd, labels.nii.gz (BraTS 2021
labels), tumor_volumes.csv (with the case's confidence columns), scene.mrb and render.png (offscreen
3-D view); the confidence is printed, with a warning when low. A case whose output
folder already holds results is refused unless ``--overwrite``. ``--cases`` processes every
sub-folder in turn, skips failed cases and prints a report; the exit code is 1 if any case failed.
A case folder may lack one of the four sequences: the case is processed from the other three and a
line says which was missing and what that costs (:func:`nslfcore.inference.missing.missing_sentence`);
a folder lacking two or more is refused.

``--preprocess`` takes raw exams (issue 32: sequences on different grids, skull on, thick or oblique
slices): the logic co-registers, skull-strips and aligns them to the atlas first (what the panel's
"Raw scans: register and skull-strip" option does; needs deepbet), the results are on the T1ce's
grid, and ``scene.mrb`` also holds the brain mask segment and the registrations' transform nodes.
``--keep-preprocessed DIR`` also keeps the intermediate files (brain mask, co-registered and
atlas-space sequences, ``.tfm`` transforms) in ``DIR`` (``DIR/<case>`` with ``--cases``).

Nothing is lost or half-written: the input files are checked by the engine first (truncated
``.nii.gz``, NaN/Inf, impossible header sizes, label maps or identical images given as modalities:
Slicer's readers would zero-fill or accept them); the output folder is locked for the run
(:class:`nslfcore.data.output.OutputLock`); results are written into a private staging folder,
each read back (:func:`nslfcore.data.output.verify_written`, ``scene.mrb`` as a zip), and only then
moved onto their final names, so a failure (a full disk) leaves the previous results as they were.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the module folder holding NSLFSlicerLib
from NSLFSlicerLib import ensure_engine_on_path  # noqa: E402

ensure_engine_on_path()
from NSLFSlicerLib.app_setup import create_standalone_context, in_slicer_application  # noqa: E402
from NSLFSlicerLib.assign import load_case_folder  # noqa: E402
from NSLFSlicerLib.logic import NSLFLogicCore  # noqa: E402
from NSLFSlicerLib.rendering import render_png  # noqa: E402
from NSLFSlicerLib.scene_io import existing_results, save_results  # noqa: E402

from nslfcore.data.discovery import find_cases  # noqa: E402
from nslfcore.data.output import OutputLock, install, verify_written  # noqa: E402
from nslfcore.data.validation import DataValidationError, case_problems  # noqa: E402
from nslfcore.inference.missing import MIN_SEQUENCES, too_few_sequences  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nslf_batch.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--case", type=Path, help="one case folder")
    source.add_argument("--cases", type=Path, help="a folder of case folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", default=None, help="model id, .pt path or URL (default: the shipped model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--mirror", default=None, choices=("none", "lr", "all"),
                        help="test-time mirroring (default: the engine's, none); lr doubles the time")
    parser.add_argument("--no-render", action="store_true", help="skip render.png")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    parser.add_argument("--preprocess", action="store_true",
                        help="raw exams: co-register, skull-strip (deepbet) and align to the atlas first")  # fmt: skip
    parser.add_argument("--keep-preprocessed", type=Path, default=None, metavar="DIR",
                        help="with --preprocess, keep the brain mask, registered sequences and transforms in DIR")  # fmt: skip
    args = parser.parse_args([a for a in argv if a != "--"] if argv[:1] == ["--"] else argv)
    if args.keep_preprocessed is not None and not args.preprocess:
        parser.error("--keep-preprocessed needs --preprocess.")
    return args


def process_case(
    case_dir: Path, out_dir: Path, model: str | None, device: str, render: bool, overwrite: bool = False,
    mirror: str | None = None, preprocess: bool = False, keep_preprocessed: Path | None = None,
) -> dict[str, Path]:
    """Process one case folder into ``out_dir`` in a fresh scene; returns the written files.

    ``preprocess``: a raw exam (see the module docstring); ``keep_preprocessed``: where its intermediate files go.
    """
    existing = existing_results(out_dir, ("render.png",))
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds results ({existing[0].name}); use --overwrite or another --out.")
    check_inputs(case_dir, same_grid=not preprocess)
    logic = NSLFLogicCore(create_standalone_context())
    nodes = load_case_folder(logic.context, case_dir)
    missing = [m for m in ("t1", "t1ce", "t2", "flair") if m not in nodes]
    if len(nodes) < MIN_SEQUENCES:
        raise ValueError(f"Case folder {case_dir} has no file for {', '.join(missing)}; NSLF needs at least "
                         f"{MIN_SEQUENCES} of the four, so add the files named like <case>_t1ce.nii.gz.")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(out_dir, "NSLF batch run"):
        outputs = logic.process(**nodes, model=model, device=device, mirror=mirror, preprocess=preprocess,
                                keepPreprocessed=keep_preprocessed,
                                progressCallback=lambda f, m: print(f"  {f:4.0%} {m}", flush=True))  # fmt: skip
        if outputs.confidence is not None:
            print(f"  confidence: {outputs.confidence.summary()}", flush=True)
            if outputs.confidence.low:
                print(f"  WARNING: {outputs.confidence.warning}", flush=True)
        if outputs.message:  # a sequence was missing: which, and what it costs
            print(f"  {outputs.message}", flush=True)
        staging = out_dir / f".staging-{os.getpid()}"
        try:
            staged = save_results(logic.scene, outputs, staging, outputs.reference, logic.context.segmentations)
            if render:
                try:
                    render_png(outputs.fused, outputs.segmentation, staging / "render.png")
                    staged["render"] = staging / "render.png"
                except RuntimeError as error:  # the results are saved; only the picture is missing
                    print(f"  render.png skipped: {error}", flush=True)
            for path in staged.values():
                verify_result(path)
            install([(path, out_dir / path.name) for path in staged.values()], verify=False)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {key: out_dir / path.name for key, path in staged.items()}


def check_inputs(case_dir: Path, same_grid: bool = True) -> None:
    """The engine's checks of the case's files (Slicer's readers zero-fill truncated files and read NaN as 0).

    One sequence may lack a file; two or more missing are refused in one sentence. Without
    ``same_grid`` (a raw exam) each file is checked on its own, so grids may differ.
    """
    if not case_dir.is_dir():
        raise FileNotFoundError(f"Case folder {case_dir} does not exist; check the path.")
    found = find_cases(case_dir)
    if len(found) != 1:
        raise ValueError(f"{case_dir} holds {len(found)} cases; give the folder of one case.")
    if 4 - len(found[0].missing) < MIN_SEQUENCES:
        raise DataValidationError([too_few_sequences(found[0].name, found[0].missing, "file")])
    files = dataclasses.replace(found[0], label=None)
    if same_grid:
        problems = case_problems(files, require_label=False, missing_ok=True)
    else:
        problems = [p for m, path in files.images.items()
                    for p in case_problems(dataclasses.replace(files, images={m: path}), require_label=False, missing_ok=True)]  # fmt: skip
    if problems:
        raise DataValidationError(problems)


def verify_result(path: Path) -> None:
    """Read one staged result back: images by header and gzip stream, the scene bundle as a zip, others non-empty."""
    if path.suffix == ".mrb":
        try:
            with zipfile.ZipFile(path) as bundle:
                broken = bundle.testzip()
        except (OSError, zipfile.BadZipFile) as error:
            raise OSError(f"{path.name} was not written completely ({error}; the disk may be full); no result was replaced.") from None
        if broken is not None:
            raise OSError(f"{path.name} was not written completely ({broken} is damaged); no result was replaced.")
        return
    verify_written(path)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    folder = args.case or args.cases
    if not folder.is_dir():
        print(f"nslf_batch: {folder} is not a folder; give {'a case folder' if args.case else 'a folder of case folders'}.",
              file=sys.stderr)  # fmt: skip
        return 2
    cases = [args.case] if args.case else sorted(p for p in args.cases.iterdir() if p.is_dir() and not p.name.startswith("."))
    failures: list[tuple[str, str]] = []
    for case_dir in cases:
        out_dir = args.out if args.case else args.out / case_dir.name
        start = time.perf_counter()
        print(f"{case_dir.name}:", flush=True)
        try:
            keep = args.keep_preprocessed and (args.keep_preprocessed if args.case else args.keep_preprocessed / case_dir.name)
            paths = process_case(case_dir, out_dir, args.model, args.device, not args.no_render, args.overwrite, args.mirror,
                                 args.preprocess, keep)  # fmt: skip
            print(f"  done in {time.perf_counter() - start:.1f} s; results in {out_dir}:", flush=True)
            for key, path in paths.items():
                print(f"    {key:12s} {path}", flush=True)
        except Exception as error:  # a failed case is reported and skipped
            text = " ".join(str(error).split())
            failures.append((case_dir.name, text))
            print(f"  FAILED: {text}", flush=True)
    print(f"{len(cases) - len(failures)} of {len(cases)} case(s) processed.")
    for name, reason in failures:
        print(f"  skipped {name}: {reason}")
    return 1 if failures else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    if in_slicer_application():
        import slicer.util

        slicer.util.exit(code)
    sys.exit(code)
