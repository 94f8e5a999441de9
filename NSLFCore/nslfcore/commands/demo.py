"""``nslf demo``: the engine's main job without Slicer: the shipped model on a generated phantom case.

Generates a BraTS-like phantom case (never used in training: seed 7), runs
:func:`nslfcore.inference.run` with the registry's default model (or ``--model``), writes
``fused.nii.gz`` and ``labels.nii.gz`` (BraTS 2021 labels) on the case's grid, and prints the
segmentation and fusion metrics against the phantom's ground truth, with timings.
The repository's ``NSLFCore/run demo`` runs the same job through the Slicer module's batch script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the shipped model on a generated phantom case and print its metrics")
    parser.add_argument("--out", type=Path, default=Path("outputs/nslf-demo"), help="folder for the case and the results")
    parser.add_argument("--model", default=None, help="model id, .pt file or URL (default: the shipped model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--seed", type=int, default=7, help="phantom seed (the shipped model was trained on seed 1000)")
    parser.add_argument("--tiny", action="store_true",
                        help="a small procedural phantom (fast; not what the model was trained on)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.commands.score import format_scores
    from nslfcore.data.io import write_image
    from nslfcore.data.labels import from_internal
    from nslfcore.data.phantom import generate_case, generate_tiny_case, write_case
    from nslfcore.data.validation import DataValidationError
    from nslfcore.evaluation import score_case
    from nslfcore.inference import run as infer
    from nslfcore.model_store import load_model

    model, info = load_model(args.model)  # a ModelError reaches nslf's error path: one sentence, exit 1
    print(f"model {info.id}: {info.title or info.path} ({info.config.get('name', '?')} configuration)")
    start = time.perf_counter()
    case = generate_tiny_case(seed=args.seed) if args.tiny else generate_case(seed=args.seed)
    case_dir = write_case(case, args.out / "case")
    assert case.label is not None  # a phantom carries its ground truth
    truth = from_internal(case.label, "brats2021")
    print(f"phantom case {case.name}: {case.geometry.shape} voxels (z, y, x), written to {case_dir} "
          f"in {time.perf_counter() - start:.1f} s")  # fmt: skip

    def progress(fraction: float, message: str) -> None:
        print(f"  {fraction:4.0%} {message}", flush=True)

    try:
        result = infer(case, model, device=args.device, progress=progress)
    except (ValueError, DataValidationError, MemoryError) as error:
        print(f"nslf demo: error: {error}", file=sys.stderr)
        return 1
    assert result.fused is not None and result.labels is not None  # inference.run: fusion and segmentation
    results = args.out / "results"
    fused_path = write_image(result.fused, case.geometry, results / "fused.nii.gz", np.float32)
    labels_path = write_image(result.labels, case.geometry, results / "labels.nii.gz", np.uint8)
    t = result.timings
    print(f"NSLF ({result.mode} volume on {result.device}): {t['total']:.1f} s "
          f"(preprocess {t['preprocess']:.1f}, network {t['inference']:.1f}, paste back {t['postprocess']:.1f})")  # fmt: skip
    print(f"wrote {fused_path} and {labels_path}")
    print(f"metrics against the phantom's ground truth (tumour voxels: {int((truth > 0).sum())}):")
    print(format_scores(score_case(case, result.fused, result.labels)))
    return 0
