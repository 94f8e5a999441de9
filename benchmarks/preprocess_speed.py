"""Raw exams in, results on the exam's own grid out (issue 32 point 5): time, peak memory and Dice per step.

On N simulated raw exams (:func:`nslfcore.data.raw_exam.simulate_raw_exam`, ``seed=2000``,
``index=1000..``: held-out phantoms that no test or training run uses; four int16 sequences on
their own oblique thick-slice grids, a modelled head, a bias field) the whole product path runs in a
fresh child process per exam, as ``nslf run --preprocess`` would: read the four files,
:func:`nslfcore.inference.run` with ``preprocess=PreprocessOptions(...)`` (co-register, extract the
brain, align to the atlas, resample, optionally N4, the network, paste back, restore onto the T1ce's
native grid) and :func:`nslfcore.cohort.write_outputs` (``fused.nii.gz``, ``seg.nii.gz``,
``confidence.json``), torch, OpenMP and SimpleITK limited to ``--threads`` (2).

What is measured, per exam:

* **wall seconds per step**, from the step boundaries that ``run``'s ``progress`` messages mark
  (checked against ``result.timings``' preprocessing steps: ``step_mismatch_s``): ``startup`` (interpreter start and imports; the
  parent's clock around the child minus the child's own), ``load_model``, ``read``, ``coregister``,
  ``brain``, ``atlas``, ``resample``, ``bias`` (N4 only), ``normalise`` (atlas-space case to the
  network's input: brain box and normalisation), ``network``, ``paste`` (uncrop), ``restore``
  (back onto the native grid), ``write``; ``total`` is the parent's wall clock around the child
  process, start to exit. Beside each, the CPU seconds of all the process's threads
  (``time.process_time``; ``cpu_total_s``: the whole child, interpreter start included), and the
  1-minute load average before and after each exam: on a machine shared with other jobs the wall
  times grow with the load, the CPU seconds much less;
* **peak resident memory (RSS) per step**: the kernel's high-water mark of the child's resident set
  (``VmHWM`` in ``/proc/self/status``), read at the end of each step and then reset to the current
  RSS by writing ``5`` to ``/proc/self/clear_refs`` (Linux), so each step's value is the true peak
  of the resident set during that step, not a sample; the process's peak is the largest of them.
  This is RSS of the whole process (Python, torch, SimpleITK buffers, the model), not Python
  allocations;
* **Dice** ET / TC / WT (BraTS regions: ET = 4, TC = {1, 4}, WT > 0) of the written ``seg.nii.gz``
  against ``exam.truth`` (the phantom's labels on the T1ce's native grid), and of the same model on
  the clean phantom (``run(exam.clean)`` in this process, the BraTS grid) against its labels, and
  the difference clean - raw.

The targets (issue 32): every region's Dice within 0.05 of the clean case on the 8 exams (checked
per exam and on the mean); a whole raw exam to native-grid results in <= 90 s on 2 cores and
<= 4 GiB peak (checked on every exam's ``total`` and peak).

    python benchmarks/preprocess_speed.py [--cases 8] [--bias-correction] [--out benchmarks/results/preprocess_speed.json]
    python benchmarks/preprocess_speed.py --brainles /tmp/brainles/bin/python    # brainles-preprocessing, same exams

The simulated exams are kept under ``--work`` (pickled, ~30 s each to make) so that a second run
(``--bias-correction``) measures the same ones. Writes the JSON and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SEED, FIRST_INDEX = 2000, 1000
ORDER = ("ET", "TC", "WT")
TARGET_DICE_GAP, TARGET_SECONDS, TARGET_GIB = 0.05, 90.0, 4.0
STEPS = ("startup", "load_model", "read", "coregister", "brain", "atlas", "resample", "bias", "normalise", "network",
         "paste", "restore", "write")  # fmt: skip
# A progress message's start -> the step it begins (``run`` and ``prepare_exam`` word them so).
MESSAGE_STEPS = (("reading and checking", "read"), ("registering", "coregister"), ("extracting the brain", "brain"),
                 ("aligning", "atlas"), ("resampling", "resample"), ("N4", "bias"), ("preprocessed", "normalise"),
                 ("brain box", "network"), ("pasting the results back", "paste"),
                 ("bringing the results back", "restore"))  # fmt: skip


# ----------------------------------------------------------------------------------------- child
def engine_fingerprint(under: str = "") -> str:
    """The first 12 hex digits of the SHA-256 of the ``nslfcore`` source files (path and text) under ``under``: which code ran.

    The working tree may change between exams while other work goes on; rows with different
    fingerprints measured different code. ``under="data"``: the simulator's (the exams' cache key).
    """
    import hashlib

    package = Path(__file__).resolve().parents[1] / "NSLFCore" / "nslfcore"
    digest = hashlib.sha256()
    for path in sorted((package / under).rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


class StepMeter:
    """Wall seconds, CPU seconds (all threads) and peak RSS (MiB) per step of this process; :meth:`enter` ends a step."""

    def __init__(self, first: str) -> None:
        self.step, self.start, self.cpu_start = first, time.perf_counter(), time.process_time()
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}

    @staticmethod
    def _high_water_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise OSError("no VmHWM in /proc/self/status")

    def enter(self, step: str) -> None:
        if step == self.step:
            return
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds[self.step] = self.seconds.get(self.step, 0.0) + now - self.start
        self.cpu_seconds[self.step] = self.cpu_seconds.get(self.step, 0.0) + cpu - self.cpu_start
        self.peak_mib[self.step] = max(self.peak_mib.get(self.step, 0.0), self._high_water_mib())
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from the current RSS
        self.step, self.start, self.cpu_start = step, now, cpu


def child(raw: Path, out: Path, bias_correction: bool, threads: int, model_spec: str | None) -> None:
    """One raw exam end to end in this fresh process; prints one JSON line (seconds, peak MiB per step, run's timings)."""
    meter = StepMeter("imports")
    fingerprint = engine_fingerprint()
    import SimpleITK as sitk
    import torch
    from nslfcore.cohort import output_names, write_outputs
    from nslfcore.inference import run
    from nslfcore.model_store import load_model
    from nslfcore.preprocess.pipeline import PreprocessOptions

    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    meter.enter("load_model")
    model, _ = load_model(model_spec, device="cpu")

    def progress(fraction: float, message: str) -> None:
        text = message.split(": ", 1)[-1] if message.startswith(raw.name) else message
        for start, step in MESSAGE_STEPS:
            if text.startswith(start):
                meter.enter(step)
                return

    meter.enter("read")
    result = run(raw, model, device="cpu", preprocess=PreprocessOptions(bias_correction=bias_correction), progress=progress)
    meter.enter("write")
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(result, out, output_names())
    meter.enter("end")
    # The steps the progress messages mark against the pipeline's own clocks: a reworded message would show here.
    mismatch = max(abs(meter.seconds.get(k.removeprefix("preprocess_"), 0.0) - v) for k, v in result.timings.items()
                   if k.startswith("preprocess_"))  # fmt: skip
    print(json.dumps({"seconds": meter.seconds, "cpu_seconds": meter.cpu_seconds, "peak_mib": meter.peak_mib,
                      "timings": result.timings, "mode": result.mode, "precision": result.precision,
                      "engine": fingerprint, "step_mismatch_s": mismatch}))  # fmt: skip


# ---------------------------------------------------------------------------------------- parent
def exam_for(index: int, work: Path):
    """The simulated raw exam ``(SEED, index)`` and its files (no truth among them) under ``work/raw-<simulator>/<name>/``.

    Kept (pickled) per version of ``nslfcore.data`` (the simulator and the phantoms), so that a second
    run measures the same exams and a changed simulator makes new ones.
    """
    from nslfcore.data.raw_exam import simulate_raw_exam, write_raw_exam

    version = engine_fingerprint("data")
    cached = work / f"exam_{SEED}_{index}_{version}.pkl"
    if cached.exists():
        exam = pickle.loads(cached.read_bytes())
    else:
        exam = simulate_raw_exam(SEED, index)
        cached.write_bytes(pickle.dumps(exam))
    folder = work / f"raw-{version}" / exam.name
    if not folder.is_dir():
        write_raw_exam(exam, folder.parent)
        (folder / f"{exam.name}_seg.nii.gz").unlink()  # the truth stays out of what the child reads
    return exam, folder


def dice_per_region(predicted, reference) -> dict[str, float]:
    """Dice ET / TC / WT of BraTS 2021 labels ``(z, y, x)`` against internal labels on the same grid."""
    import numpy as np
    from nslfcore.data.labels import REGIONS, to_internal
    from nslfcore.metrics import overlap_metrics

    internal = to_internal(np.asarray(predicted), "brats2021")
    return {r: float(overlap_metrics(np.isin(internal, REGIONS[r]), np.isin(reference, REGIONS[r]))["dice"]) for r in ORDER}


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (every thread)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(exam, folder: Path, args, model) -> dict:
    """One exam: the child's raw run (time, memory, Dice on the native grid) and the clean run (Dice)."""
    import numpy as np
    import SimpleITK as sitk
    from nslfcore.inference import run

    acquisitions = {m: {"orientation": a.orientation, "tilt_degrees": round(a.tilt_degrees, 1),
                        "spacing_mm": [round(s, 2) for s in a.spacing], "size": list(a.size)}
                    for m, a in exam.acquisitions.items()}  # fmt: skip
    row: dict = {"case": exam.name, "acquisitions": acquisitions}
    with tempfile.TemporaryDirectory() as results:
        argv = [sys.executable, __file__, "--child", str(folder), "--child-out", results, "--threads", str(args.threads)]
        argv += ["--bias-correction"] if args.bias_correction else []
        argv += ["--model", args.model] if args.model else []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        load_before, cpu_before = os.getloadavg()[0], _children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        total = time.perf_counter() - start
        row.update(load_1min_before=load_before, load_1min_after=os.getloadavg()[0], cpu_total_s=_children_cpu() - cpu_before)
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            row["dice_raw"] = {r: 0.0 for r in ORDER}
        else:
            measured = json.loads(proc.stdout.strip().splitlines()[-1])
            seconds = measured["seconds"]
            seconds["startup"] = total - sum(seconds.values())
            seconds["startup"] += seconds.pop("imports")
            # The child's imports are its part of startup (its CPU seconds leave out the interpreter's start).
            for key in ("peak_mib", "cpu_seconds"):
                measured[key]["startup"] = measured[key].pop("imports")
            row.update(total_s=total, seconds=seconds, cpu_seconds=measured["cpu_seconds"], peak_mib=measured["peak_mib"],
                       peak_process_mib=max(measured["peak_mib"].values()), run_timings=measured["timings"],
                       mode=measured["mode"], precision=measured["precision"], engine=measured["engine"],
                       step_mismatch_s=measured["step_mismatch_s"])  # fmt: skip
            seg = sitk.ReadImage(str(Path(results) / "seg.nii.gz"))
            truth = exam.truth
            same_grid = (seg.GetSize() == truth.GetSize() and np.allclose(seg.GetOrigin(), truth.GetOrigin(), atol=1e-3)
                         and np.allclose(seg.GetDirection(), truth.GetDirection(), atol=1e-5)
                         and np.allclose(seg.GetSpacing(), truth.GetSpacing(), atol=1e-5))  # fmt: skip
            row["on_native_grid"] = bool(same_grid)
            row["dice_raw"] = dice_per_region(sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(truth))
    clean = run(exam.clean, model, device="cpu")
    row["dice_clean"] = dice_per_region(clean.labels, exam.clean.label)
    row["dice_gap"] = {r: row["dice_clean"][r] - row["dice_raw"][r] for r in ORDER}
    return row


def summarise(rows: list[dict]) -> dict:
    """Median / max seconds and peak MiB per step, mean Dice, and whether each target holds."""
    ok = [r for r in rows if "error" not in r]
    steps = [s for s in STEPS if any(s in r["seconds"] for r in ok)]
    per_step = {s: {"median_s": statistics.median(r["seconds"].get(s, 0.0) for r in ok),
                    "max_s": max(r["seconds"].get(s, 0.0) for r in ok),
                    "median_cpu_s": statistics.median(r["cpu_seconds"].get(s, 0.0) for r in ok),
                    "peak_mib_max": max(r["peak_mib"].get(s, 0.0) for r in ok)} for s in steps} if ok else {}  # fmt: skip
    mean = {k: {g: statistics.fmean(r[k][g] for r in rows) for g in ORDER} for k in ("dice_clean", "dice_raw", "dice_gap")}
    worst_gap = max(r["dice_gap"][g] for r in rows for g in ORDER)
    totals = [r["total_s"] for r in ok]
    peaks = [r["peak_process_mib"] for r in ok]
    return {
        "failed": [r["case"] for r in rows if "error" in r],
        "engines": sorted({r["engine"] for r in ok}),
        "step_mismatch_s": max((r["step_mismatch_s"] for r in ok), default=0.0),
        "steps": per_step,
        "total_s": {"median": statistics.median(totals), "max": max(totals)} if ok else None,
        "cpu_total_s": {"median": statistics.median(r["cpu_total_s"] for r in ok), "max": max(r["cpu_total_s"] for r in ok)}
        if ok
        else None,
        "load_1min": {
            "min": min(r["load_1min_before"] for r in rows),
            "max": max(max(r["load_1min_before"], r["load_1min_after"]) for r in rows),
        },
        "peak_process_mib": {"median": statistics.median(peaks), "max": max(peaks)} if ok else None,
        "mean_dice": mean,
        "worst_gap": worst_gap,
        "targets": {
            "dice_within_0.05_every_exam": worst_gap <= TARGET_DICE_GAP,
            "dice_within_0.05_on_mean": max(mean["dice_gap"].values()) <= TARGET_DICE_GAP,
            "total_within_90_s_every_exam": bool(ok) and len(ok) == len(rows) and max(totals) <= TARGET_SECONDS,
            "peak_within_4_gib_every_exam": bool(ok) and len(ok) == len(rows) and max(peaks) <= TARGET_GIB * 1024,
        },
    }


def print_tables(summary: dict, rows: list[dict]) -> None:
    print("\n| step | median s | max s | median CPU s | peak RSS (GiB, max over exams) |\n| --- | ---: | ---: | ---: | ---: |")
    for step, s in summary["steps"].items():
        print(f"| {step} | {s['median_s']:.1f} | {s['max_s']:.1f} | {s['median_cpu_s']:.1f} | {s['peak_mib_max'] / 1024:.2f} |")
    if summary["total_s"]:
        t, c, p = summary["total_s"], summary["cpu_total_s"], summary["peak_process_mib"]
        print(
            f"| **whole exam** | **{t['median']:.1f}** | **{t['max']:.1f}** | **{c['median']:.1f}** | **{p['max'] / 1024:.2f}** |"
        )
    print(f"\n1-minute load average during the run: {summary['load_1min']['min']:.1f} - {summary['load_1min']['max']:.1f}")
    print("\n| case | clean ET | TC | WT | raw ET | TC | WT | gap ET | TC | WT | s | peak GiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in [*rows, {"case": "**mean**", **{k: summary["mean_dice"][k] for k in ("dice_clean", "dice_raw", "dice_gap")}}]:
        cells = " | ".join(f"{r[k][g]:.3f}" for k in ("dice_clean", "dice_raw", "dice_gap") for g in ORDER)
        extra = "failed |" if "error" in r else "|"
        if "total_s" in r:
            extra = f"{r['total_s']:.1f} | {r['peak_process_mib'] / 1024:.2f}"
        print(f"| {r['case']} | {cells} | {extra} |")
    print("\ntargets: " + json.dumps(summary["targets"]))
    if summary["step_mismatch_s"] > 0.5:
        gap = summary["step_mismatch_s"]
        print(f"warning: the steps disagree with run()'s timings by up to {gap:.1f} s (progress messages reworded?)")
    if len(summary["engines"]) > 1:
        print(f"warning: the engine's code changed during the run ({len(summary['engines'])} versions: {summary['engines']})")


# ------------------------------------------------------------------------- brainles-preprocessing
BRAINLES_RUN = r"""
import json, sys, time
from pathlib import Path

from loguru import logger

case, out, atlas = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
marks = []
logger.add(lambda message: marks.append((time.perf_counter(), message.record["message"])))
from brainles_preprocessing.modality import CenterModality, Modality
from brainles_preprocessing.preprocessor import AtlasCentricPreprocessor
from brainles_preprocessing.registration import ANTsRegistrator

errors = {}
try:  # as its README configures it: the SRI-24 atlas and HD-BET, both fetched from Zenodo on first use
    from brainles_preprocessing.brain_extraction import HDBetExtractor

    AtlasCentricPreprocessor(center_modality=CenterModality("t1c", case / f"{case.name}_t1ce.nii.gz",
                                                            raw_bet_output_path=out / "default_t1c_bet.nii.gz"),
                             moving_modalities=[], brain_extractor=HDBetExtractor())
except Exception as error:
    errors["default_atlas"] = f"{type(error).__name__}: {error}"
try:
    from brainles_hd_bet.utils import maybe_download_parameters

    maybe_download_parameters(0)
except Exception as error:
    errors["hd_bet_weights"] = f"{type(error).__name__}: {error}"
path = lambda m: case / f"{case.name}_{m}.nii.gz"
center = CenterModality("t1c", path("t1ce"), raw_skull_output_path=out / "t1c.nii.gz", atlas_correction=False)
moving = [Modality(m, path(m), raw_skull_output_path=out / f"{m}.nii.gz", atlas_correction=False) for m in ("t1", "t2", "flair")]
start = time.perf_counter()
AtlasCentricPreprocessor(center_modality=center, moving_modalities=moving, registrator=ANTsRegistrator(),
                         brain_extractor=None, atlas_image_path=atlas).run()
end = time.perf_counter()
at = lambda text: next(t for t, m in marks if text in m)
seconds = {"coregister": at("Coregistration complete") - at("Starting Coregistration"),
           "atlas": at("Transformations complete") - at("Starting atlas registration"), "whole_run": end - start}
peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mib": peak, "errors": errors}))
"""


def brainles(args) -> None:
    """brainles-preprocessing on the same exams with ``args.brainles`` (a Python with it installed), one fresh process each.

    Its default pipeline cannot run offline (the SRI-24 atlas and HD-BET's weights come from Zenodo on
    first use; the errors are recorded); what runs is its ANTs co-registration (rigid) of T1, T2 and
    FLAIR to T1ce and the T1ce's atlas registration to the MNI152 T1 template NSLF ships, without
    brain extraction. Writes ``results/preprocess_speed_brainles.json``.
    """
    atlas = Path(__file__).resolve().parents[1] / "NSLFCore/nslfcore/data/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    version = subprocess.run([args.brainles, "-c", "import importlib.metadata as m; print(m.version('brainles-preprocessing'))"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(args.threads)}
    rows = []
    for i in range(args.cases):
        exam, folder = exam_for(FIRST_INDEX + i, args.work)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            proc = subprocess.run([args.brainles, "-c", BRAINLES_RUN, str(folder), out, str(atlas)],
                                  capture_output=True, text=True, env=env, check=False)  # fmt: skip
            total = time.perf_counter() - start
        row = {"case": exam.name, "index": FIRST_INDEX + i, "total_s": total, "load_1min_after": os.getloadavg()[0]}
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        else:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = args.out or RESULTS / "preprocess_speed_brainles.json"
    result = {"benchmark": "preprocess_speed (brainles-preprocessing)", "brainles_preprocessing": version, "seed": SEED,
              "indices": [r["index"] for r in rows], "threads": args.threads, "atlas": atlas.name, "rows": rows}  # fmt: skip
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--bias-correction", action="store_true", help="N4 on (PreprocessOptions(bias_correction=True))")
    parser.add_argument("--threads", type=int, default=2, help="torch, OpenMP and SimpleITK threads of the measured process")
    parser.add_argument("--model", default=None, help="model id or file (default: the shipped default model)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nslf-preprocess-speed",
                        help="where the simulated exams are kept between runs")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="default: results/preprocess_speed[_n4].json")
    parser.add_argument("--brainles", metavar="PYTHON", help="time brainles-preprocessing instead, with this Python")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child_out, args.bias_correction, args.threads, args.model)
        return
    if args.brainles:
        brainles(args)
        return

    import torch
    from nslfcore.model_store import load_model

    sys.path.insert(0, str(Path(__file__).parent))
    from peer_speed import environment

    torch.set_num_threads(args.threads)
    out = args.out or RESULTS / ("preprocess_speed_n4.json" if args.bias_correction else "preprocess_speed.json")
    args.work.mkdir(parents=True, exist_ok=True)
    model, info = load_model(args.model, device="cpu")
    rows = []
    for i in range(args.cases):
        exam, folder = exam_for(FIRST_INDEX + i, args.work)
        row = {"index": FIRST_INDEX + i, **measure(exam, folder, args, model)}
        rows.append(row)
        keys = ("case", "total_s", "peak_process_mib", "dice_clean", "dice_raw", "error")
        print(json.dumps({k: row.get(k) for k in keys}), flush=True)
    summary = summarise(rows)
    result = {"benchmark": "preprocess_speed", "model": info.id, "seed": SEED, "indices": [r["index"] for r in rows],
              "bias_correction": args.bias_correction, "threads": args.threads, "environment": environment(),
              "summary": summary, "rows": rows}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(summary, rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
