"""``nslf evaluate``: per-case CSV and a Markdown summary in the paper's layout (optionally with a segmentation baseline).

``--model classical:<name>`` scores a classical fusion method (:mod:`nslfcore.fusion_baselines`)
through the same inference and metrics (fusion columns only); ``--hd95 max|pooled`` picks the HD95
definition (:func:`nslfcore.metrics.hd95`), which the CSV columns and the summary name;
``--metrics-2d [N]`` adds the paper's 2-D fusion metrics (FSIM, VIFP, NMI, IFC) on up to ``N``
axial slices per case (120, the paper's, when no number is given; needs ``nslfcore[metrics2d]``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nslfcore.data.validation import DataValidationError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a model on labelled cases (paper metrics)")
    parser.add_argument("--data", type=Path, required=True, help="folder of labelled BraTS-layout cases")
    parser.add_argument("--model", default=None,
                        help="a model id from models.json, a .pt file (default: the shipped model), or classical:NAME "
                             "for a classical fusion method (mean, max, pca, laplacian, guided)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.csv and summary.md")
    parser.add_argument("--baseline", type=Path, default=None, metavar="FILE",
                        help="also evaluate a segmentation baseline file (nslf baseline) and add its rows")  # fmt: skip
    parser.add_argument("--hd95", choices=("max", "pooled"), default="max",
                        help="HD95 definition: max of the one-way 95th percentiles (MONAI, default) or pooled (medpy, "
                             "the authors' scripts)")  # fmt: skip
    parser.add_argument("--metrics-2d", type=int, nargs="?", const=120, default=None, metavar="N",
                        help="also score FSIM, VIFP, NMI and IFC on N axial slice pairs per case (default N: 120, the "
                             "paper's; slices with the most brain, evenly spaced; needs nslfcore[metrics2d])")  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases")
    parser.add_argument("--window", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="infer with a sliding window of this size in voxels (default: the whole brain box where it "
                             "fits), as nslf compare --window")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.baseline import load_baseline
    from nslfcore.data.brats import find_cases
    from nslfcore.evaluation import evaluate, summary_markdown, write_csv
    from nslfcore.fusion_baselines import CLASSICAL_PREFIX, ClassicalFusion
    from nslfcore.model_store import load_model
    from nslfcore.models import Network

    def progress(i: int, n: int, name: str) -> None:
        print(f"[{i}/{n}] {name}", file=sys.stderr)

    try:
        if not args.data.is_dir():
            raise FileNotFoundError(f"--data {args.data}: no such folder.")
        cases = find_cases(args.data)[: args.limit]
        if not cases:
            raise ValueError(f"--data {args.data}: no cases found.")
        model: Network
        if args.model is not None and args.model.startswith(CLASSICAL_PREFIX):
            model, model_id = ClassicalFusion(args.model.removeprefix(CLASSICAL_PREFIX)), args.model
            method = model_id
        else:
            model, info = load_model(args.model)
            model_id, method = info.id, "NSLF"
        baseline = load_baseline(args.baseline) if args.baseline is not None else None
        rows = evaluate(cases, model, args.device, progress=progress, hd95_definition=args.hd95, slices_2d=args.metrics_2d,
                        window=args.window)  # fmt: skip
        baseline_rows = (
            evaluate(cases, baseline, args.device, progress=progress, hd95_definition=args.hd95, window=args.window)
            if baseline is not None else None
        )  # fmt: skip
    except (ValueError, FileNotFoundError, DataValidationError, ImportError) as error:
        print(f"nslf evaluate: error: {error}", file=sys.stderr)
        return 1
    from nslfcore.data.output import OutputLock, atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    with OutputLock(args.out, "nslf evaluate"):
        written = [write_csv(rows, args.out / "metrics.csv")]
        if baseline_rows is not None:
            written.append(write_csv(baseline_rows, args.out / "metrics_baseline.csv"))
        title = f"NSLF evaluation: {model_id} on {args.data}"
        if args.window is not None:
            title += ", sliding window " + " x ".join(map(str, args.window)) + " (z, y, x)"
        names = {} if baseline is None else {"baseline": f"{baseline.title} baseline"}
        summary = summary_markdown(rows, title, baseline_rows, method=method, **names)
        written.append(atomic_write_text(args.out / "summary.md", summary))
    print(f"nslf evaluate: wrote {', '.join(str(p) for p in written)}")
    return 0
