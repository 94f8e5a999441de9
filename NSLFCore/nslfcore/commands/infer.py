"""``nslf fuse | segment | run``: NSLF on one case, outputs with the inputs' exact geometry.

Everything is checked before any computation (inputs, model, existing outputs); outputs are written
under temporary names and renamed at the end, so a failure leaves no partial files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from nslfcore import MODALITIES
from nslfcore.data.validation import DataValidationError

_OUTPUTS = {"fuse": ("fused.nii.gz",), "segment": ("seg.nii.gz",), "run": ("fused.nii.gz", "seg.nii.gz")}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for name, title in (("fuse", "the fused volume"), ("segment", "the tumour segmentation"), ("run", "both")):
        parser = subparsers.add_parser(name, help=f"NSLF inference on one case: {title}")
        for modality in MODALITIES:
            parser.add_argument(f"--{modality}", type=Path, metavar="FILE", help=f"{modality.upper()} image")
        parser.add_argument("--case", type=Path, metavar="DIR", help="a BraTS-layout case folder instead of four files")
        parser.add_argument("--out", type=Path, required=True, help="output folder")
        parser.add_argument("--model", required=True, help="a model id from Resources/Models/models.json or a .pt file")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
        parser.add_argument("--mode", default="auto", choices=("auto", "whole", "sliding"))
        parser.add_argument("--label-convention", default="brats2021", choices=("brats2021", "brats2023"))
        parser.add_argument("--probabilities", action="store_true", help="also write probabilities.nii.gz (4 classes)")
        parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        parser.set_defaults(func=run, task=name)


def _source(args: argparse.Namespace) -> Path | dict[str, Path]:
    files = {m: getattr(args, m) for m in MODALITIES if getattr(args, m) is not None}
    if args.case is not None:
        if files:
            raise ValueError("Give either --case or the four image files, not both.")
        return args.case
    missing = [f"--{m}" for m in MODALITIES if m not in files]
    if missing:
        raise ValueError(f"Missing inputs {' '.join(missing)}; give all four images or --case DIR.")
    return files


def run(args: argparse.Namespace) -> int:
    from nslfcore.inference import as_case
    from nslfcore.inference import run as infer

    names = list(_OUTPUTS[args.task]) + (["probabilities.nii.gz"] if args.probabilities else [])
    outputs = [args.out / n for n in names]
    temps = [p.with_name(f".partial-{p.name}") for p in outputs]  # hidden, still ending in .nii.gz
    try:
        existing = [str(p) for p in outputs if p.exists()]
        if existing and not args.overwrite:
            raise ValueError(f"{existing[0]} already exists; use --overwrite to replace it or choose another --out.")
        case = as_case(_source(args))  # reads and validates the inputs
        model = _load_model(args.model)
        start = time.perf_counter()
        result = infer(
            case, model, fuse=args.task != "segment", segment=args.task != "fuse", device=args.device, mode=args.mode,
            label_convention=args.label_convention, probabilities=args.probabilities,
        )  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        arrays = {"fused.nii.gz": result.fused, "seg.nii.gz": result.labels, "probabilities.nii.gz": result.probabilities}
        for name, temp in zip(names, temps):
            array = arrays[name]
            if name == "probabilities.nii.gz":
                array = np.moveaxis(array, 0, -1)  # (z, y, x, class): a 4-D NIfTI with the class last
            _write(array, result.geometry, temp)
        for temp, final in zip(temps, outputs):
            temp.replace(final)
    except (ValueError, FileNotFoundError, DataValidationError) as error:
        for temp in temps:
            temp.unlink(missing_ok=True)
        print(f"nslf {args.task}: error: {error}", file=sys.stderr)
        return 1
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    print(f"nslf {args.task}: {case.name} in {seconds:.1f} s ({result.mode} on {result.device}); wrote "
          + ", ".join(str(p) for p in outputs))  # fmt: skip
    return 0


def _write(array: np.ndarray, geometry, temp: Path) -> None:
    """Write ``array`` ``(z, y, x[, c])`` with ``geometry`` as compressed NIfTI to ``temp`` (a temporary name)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=array.ndim == 4)
    sitk.WriteImage(geometry.apply_to(image), str(temp), True, imageIO="NiftiImageIO")


def _load_model(spec: str):
    """An NSLF model in eval mode from a registry id or a model file (checksum-verified for registry ids)."""
    from nslfcore.model_store import load_model

    return load_model(spec)[0]
