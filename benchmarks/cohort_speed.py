"""Cohort throughput: ``nslf run --cases`` against ``nslf run`` case after case, in cases per hour.

N BraTS-size phantom cases (240 x 240 x 155, four modalities, realistic phantoms, seed 21) in a
temporary folder (or ``--data``), the shipped default model, this machine's CPU. Three
ways to process them, each a fresh process (interpreter start, imports and model loading count,
as they do for a user), outputs into an empty folder:

* ``loop``: ``nslf run --case CASE --out OUT/CASE`` once per case, one after the other (a shell loop);
* ``sequential``: one process that loads the model once and then reads, runs and writes each case
  in turn (``--child sequential``: :func:`nslfcore.inference.run` and
  :func:`nslfcore.cohort.write_outputs`, nothing overlapped);
* ``cohort``: ``nslf run --cases DIR --out OUT`` (reading and writing overlapped with the network);
* ``cohort-2ranks``: the same under ``torchrun --standalone --nproc_per_node=2`` (two gloo ranks of
  one thread each instead of one process of two threads; each rank holds its own cases in memory).

Rounds rotate the order. The label maps are compared with the loop's (voxel agreement; one
thread per rank may round differently from two). The load average before and after is recorded: time only on a quiet machine.

Writes ``benchmarks/results/cohort_speed_<device>.json`` and prints a Markdown table.

    python benchmarks/cohort_speed.py [--cases 4] [--rounds 1] [--device cpu] [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

RESULTS = Path(__file__).parent / "results"
CASE_SEED = 21
METHODS = ("loop", "sequential", "cohort", "cohort-2ranks")


def _nslf(*args: str) -> list[str]:
    return [sys.executable, "-m", "nslfcore.cli", *args]


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def run_method(method: str, data: Path, out: Path, device: str) -> float:
    """Wall-clock seconds of ``method`` on every case of ``data``, outputs into ``out`` (emptied first)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cases = sorted(p for p in data.iterdir() if p.is_dir())
    if method == "loop":
        return sum(_timed(_nslf("run", "--case", str(c), "--out", str(out / c.name), "--device", device)) for c in cases)
    if method == "sequential":
        return _timed([sys.executable, __file__, "--child", "sequential", "--data", str(data), "--out", str(out),
                       "--device", device])  # fmt: skip
    cohort = ["run", "--cases", str(data), "--out", str(out), "--device", device]
    if method == "cohort":
        return _timed(_nslf(*cohort))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nslfcore.cli"]
    return _timed([*torchrun, *cohort])  # torchrun sets OMP_NUM_THREADS=1 per rank


def sequential_child(data: Path, out: Path, device: str) -> None:
    """One process, model loaded once, each case read, run and written in turn (no overlap)."""
    from nslfcore.cohort import output_names, write_outputs
    from nslfcore.inference import as_case, run
    from nslfcore.model_store import load_model

    model, _ = load_model(None)
    for case_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        result = run(as_case(case_dir), model, device=device)
        (out / case_dir.name).mkdir()
        write_outputs(result, out / case_dir.name, output_names())


def _labels(folder: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "seg.nii.gz")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4, help="number of BraTS-size phantom cases (default 4)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the four ways, order rotated (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, help="use (or fill, when empty) this folder of phantom cases")
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("sequential",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sequential_child(args.data, args.out, args.device)
        return

    from nslfcore.data.phantom import write_phantom_dataset
    from nslfcore.model_store import default_model

    work = Path(tempfile.mkdtemp(prefix="nslf-cohort-speed-"))
    data = args.data or work / "cases"
    if not data.is_dir() or not any(data.iterdir()):
        start = time.perf_counter()
        write_phantom_dataset(data, args.cases, seed=CASE_SEED)
        print(f"generated {args.cases} BraTS-size phantom cases in {time.perf_counter() - start:.0f} s", flush=True)
    n = sum(p.is_dir() for p in data.iterdir())
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for round_index in range(args.rounds):
        order = METHODS[round_index % len(METHODS) :] + METHODS[: round_index % len(METHODS)]
        for method in order:
            seconds[method].append(run_method(method, data, work / method, args.device))
            print(f"round {round_index + 1} {method}: {seconds[method][-1]:.1f} s for {n} cases", flush=True)
    load_after = os.getloadavg()

    names = sorted(p.name for p in data.iterdir() if p.is_dir())
    agreement = {m: float(np.mean([np.mean(_labels(work / "loop" / c) == _labels(work / m / c)) for c in names]))
                 for m in METHODS}  # fmt: skip
    with open(work / "cohort" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    phases = {k: statistics.mean(float(r[k]) for r in rows) for k in ("read_s", "network_s", "write_s")}
    median = {m: statistics.median(s) for m, s in seconds.items()}
    per_hour = {m: 3600.0 * n / median[m] for m in METHODS}
    record = {
        "benchmark": "cohort_speed",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": args.device},  # fmt: skip
        "model": default_model().id if default_model() else None,
        "cases": n,
        "case_size_xyz": [240, 240, 155],
        "rounds": args.rounds,
        "seconds": seconds,
        "median_seconds": median,
        "seconds_per_case": {m: median[m] / n for m in METHODS},
        "cases_per_hour": per_hour,
        "ratio_cohort_vs_loop": per_hour["cohort"] / per_hour["loop"],
        "ratio_cohort_vs_sequential": per_hour["cohort"] / per_hour["sequential"],
        "cohort_phase_means_s": phases,
        "label_voxel_agreement_with_loop": agreement,
        "load_average_before_after": [load_before[0], load_after[0]],
        "command": f"python benchmarks/cohort_speed.py --cases {args.cases} --rounds {args.rounds} --device {args.device}",
    }
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"cohort_speed_{args.device.split(':')[0]}.json"
    target.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n| way ({n} cases) | seconds | s per case | cases per hour | vs loop |\n| --- | ---: | ---: | ---: | ---: |")
    for m in METHODS:
        print(f"| {m} | {median[m]:.1f} | {median[m] / n:.1f} | {per_hour[m]:.0f} | {per_hour[m] / per_hour['loop']:.2f}x |")
    print(f"\nlabel voxel agreement with the loop: {agreement}; cohort phases per case (s): {phases}; wrote {target}")
    shutil.rmtree(work, ignore_errors=True)  # the outputs (and generated cases; --data is left alone)


if __name__ == "__main__":
    main()
