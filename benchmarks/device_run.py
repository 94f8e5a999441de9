"""One prepared GPU run: every GPU measurement and the default model's training, within a time budget.

Made for a lent GPU machine (one CUDA GPU, 16 cores, no network, minutes of time): one command
that measures everything the project needs measured on a GPU and trains the default model with
the GPU recipe, writing each result as soon as it exists, so that a run cut off at any point
still returns what it had. In order:

1. **environment**: GPU name, memory, driver, CUDA, torch, CPU count;
2. **phantom cases** start generating at once in parallel child processes (``nslf phantom``,
   one process per core but two): the inference case, the training cases and the held-out cases
   (those of ``benchmarks/accuracy.py``), while the GPU benchmarks run;
3. **training throughput** (:mod:`train_throughput`): our stage-2 and stage-3 steps against the
   public loop, ``compact`` and ``paper``;
4. **inference** on one full 240 x 240 x 155 case, ``compact`` (the shipped model) and ``paper``
   (seeded random weights): ``nslfcore.inference.run`` as users call it; the network pass in
   fp32, bf16 and fp16 autocast, channels-last-3d, with and without ``torch.compile``, each with
   its peak GPU memory and its label agreement with fp32; the public procedure
   (:mod:`public_inference`) on its first windows, extrapolated to all 112;
5. **training** of the default model (``fast``, or ``--train-config``) with the GPU recipe (:data:`GPU_RECIPE`):
   stages 1, 2, 3 one after the other, each with its share of the remaining time
   (``TrainingOptions.time_limit_s``), every stage's best checkpoint kept, the events in
   ``events.jsonl``. A ``STOP`` file in the stage's run folder (``WORK/runs/stage<N>/STOP``) makes
   the trainer save its state after the current step; the run then starts no later stage or
   section and exits with status 3;
6. **baselines** (``--sections baselines``, not in the default run): segmentation baselines
   (``--baseline-archs``) trained with stage 3 of the recipe, the "same budget" rows of the
   comparison tables (``baseline_<arch>.pt``);
7. **evaluation** of the new model and of the shipped one on the held-out cases (whole-case
   inference, Dice ET / TC / WT per case and mean).

Outputs in ``--out`` (``$OUT`` on the device machine; at most 8 files come back from there):
``device_run.json`` (rewritten after every section), ``events.jsonl`` and ``model.pt`` (the
newest best model: stage 3 when it ran, else the last finished stage). ``--dry-run`` does the
same on tiny procedural phantoms and crops on the CPU in well under a minute (the test suite
runs it), so the script is known to work before a GPU is ever used.

    python benchmarks/device_run.py --out OUT [--budget 480] [--device cuda] [--dry-run]

``benchmarks/device_run.sh`` wraps it for the device machine (installs the carried wheels).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

#: The default wall-clock budget of the whole run, in seconds.
DEFAULT_BUDGET_S = 480.0
#: Seconds kept at the end for evaluation and writing (the evaluation stops early if it runs out).
EVALUATION_RESERVE_S = 45.0
#: Held-out cases: those of ``benchmarks/accuracy.py`` (``nslf phantom --n 20 --seed 2000 --start 1000``).
TEST_SEED, TEST_START = 2000, 1000
#: Training cases: half from the v2 model's seed (``--seed 1000``), half from another seed range,
#: so the training set is not one generator stream.
TRAIN_SEEDS = (1000, 3000)
#: The inference benchmark's case (``benchmarks/inference_speed.py``'s seed 11).
BENCH_SEED = 11

#: The GPU training recipe of the default model: per stage, crop ``(z, y, x)`` (multiples of 32 for
#: ``fast``), batch, learning rates, share of the training time and the options of issue 15.
#: Stage 3 uses a per-class Dice so that ET, the smallest class, weighs as much as edema, centres
#: most crops on tumour and a guaranteed share on enhancing tumour, augments strongly (intensity
#: per modality, flips, rotations, scaling; since v3 also structures brighter than the tumour,
#: ``strong-bright``: v3, trained with ``strong``, loses Dice when vessels brighten T1ce) and
#: selects its model on whole-case Dice.
GPU_RECIPE: dict[int, dict[str, Any]] = {
    1: {"crop": (64, 96, 96), "batch_size": 4, "samples_per_case": 4, "lr": 1e-3, "fine_tune_lr": 1e-4, "share": 0.10,
        "augmentation": "light"},
    2: {"crop": (64, 96, 96), "batch_size": 4, "samples_per_case": 4, "lr": 1e-3, "fine_tune_lr": 1e-4, "share": 0.15,
        "augmentation": "light"},
    3: {"crop": (64, 128, 128), "batch_size": 4, "samples_per_case": 8, "lr": 1e-3, "fine_tune_lr": 1e-4,
        "share": 0.75, "dice_average": "class", "tumour_fraction": 0.9, "et_fraction": 0.4,
        "augmentation": "strong-bright", "case_validation_every": 3},
}
#: Samples per second each stage of the recipe is expected to train at on one H100 when the run
#: does not measure it: it sets the epochs so that the cosine schedule fits the time (too high only
#: cuts the schedule short). Stage 3 is bound by its data-loading workers, not the GPU: run 3 (H200,
#: 14 workers) trained ``fast`` at 7.2 samples/s on 96 x 160 x 160 crops with ``strong``
#: augmentation, which costs 0.86 s of one core per crop on this project's CPU against 0.31 s at
#: 64 x 128 x 128 (hence the stage-3 crop); 20/s is that ratio applied to run 3.
EXPECTED_SAMPLES_PER_S: dict[int, float] = {1: 30.0, 2: 15.0, 3: 20.0}
#: The same recipe on tiny procedural phantoms for ``--dry-run``.
DRY_RECIPE: dict[int, dict[str, Any]] = {
    1: {"crop": (32, 64, 64), "batch_size": 2, "lr": 1e-3, "fine_tune_lr": 1e-4, "share": 0.3},
    2: {"crop": (32, 64, 64), "batch_size": 2, "lr": 1e-3, "fine_tune_lr": 1e-4, "share": 0.3},
    3: {"crop": (32, 64, 64), "batch_size": 2, "lr": 1e-3, "fine_tune_lr": 1e-4, "share": 0.4,
        "dice_average": "class", "tumour_fraction": 0.9, "et_fraction": 0.4, "augmentation": "strong-bright",
        "case_validation_every": 1},
}
#: Ablations of issue 16 (``--ablation``): what each changes in the configuration or the options
#: (``detail`` is not an ablation but the detail-preservation variant of point 7, trained the same way).
ABLATIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "no-contrastive": {"options": {"contrastive": False}},  # stage 1 with reconstruction only
    "no-gmn": {"config": {"use_gmn": False}},  # no geometric matching network, no registration term
    "fused-only": {"config": {"segmenter_input": "fused_only"}},  # the FSD sees only the fused volume
    # beyond the paper (issue 16 point 7): stage 2 with the max-gradient detail term
    "detail": {"options": {"loss_weights": (("stage2.detail", 50.0),)}},
}
#: The sections ``--sections`` may choose, in the order they run.
SECTIONS = ("throughput", "profile", "inference", "training", "baselines", "evaluation")
#: Tiny phantom size (z, y, x) for ``--dry-run``.
DRY_SIZE = (48, 64, 64)


# ------------------------------------------------------------------------------------ run state
class StageStopped(Exception):
    """A training stage was stopped by its ``STOP`` file (the trainer saved its state): the run ends there."""


@dataclass
class DeviceRun:
    """The run's settings, clock and results (written to ``device_run.json`` after every section)."""

    out: Path
    work: Path
    device: torch.device
    budget_s: float
    dry_run: bool
    start: float = field(default_factory=time.perf_counter)
    results: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # a section was stopped by a STOP file: no later section starts

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def write(self) -> Path:
        """Write ``device_run.json`` atomically (NaN/Inf as null)."""
        self.results["elapsed_s"] = round(self.elapsed(), 2)
        path = self.out / "device_run.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_finite(self.results), indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path

    def section(self, name: str, fn: Callable[[], Any], needs_s: float = 0.0, store: bool = True) -> Any:
        """Run ``fn`` as section ``name``: its result is stored under ``name`` (when ``store``), an error recorded, never raised."""
        record: dict[str, Any] = {"started_s": round(self.elapsed(), 2)}
        self.results.setdefault("sections", {})[name] = record
        if self.stopped:
            record["status"] = "skipped: the run was stopped"
            self.write()
            return None
        if self.remaining() < needs_s:
            record["status"] = f"skipped: {self.remaining():.0f} s left, {needs_s:.0f} s needed"
            log(f"== {name}: {record['status']}")
            self.write()
            return None
        log(f"== {name} ({self.remaining():.0f} s of the budget left)")
        clock = time.perf_counter()
        value = None
        try:
            value = fn()
            record["status"] = "ok"
            if value is not None and store:
                self.results[name] = value
        except StageStopped as stopped:
            record["status"] = "stopped"
            record["error"] = str(stopped)
            self.stopped = True
            log(f"   {name}: {stopped}; no later section starts")
        except Exception as error:  # noqa: BLE001 - one failed section must not lose the others
            record["status"] = "error"
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc(limit=8)
            log(f"   {name} failed: {record['error']}")
        record["seconds"] = round(time.perf_counter() - clock, 2)
        self.write()
        return value


def log(message: str) -> None:
    print(f"[device_run {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ---------------------------------------------------------------------------------- environment
def environment(device: torch.device) -> dict[str, Any]:
    """GPU, driver, CUDA, torch and CPU facts of this machine."""
    import monai
    import SimpleITK as sitk

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "monai": monai.__version__,
        "simpleitk": sitk.Version_VersionString(),
        "numpy": np.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_multiprocessors": props.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            env["nvidia_smi"] = smi.stdout.strip()
    for key, value in env.items():
        log(f"   {key}: {value}")
    return env


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------- phantom data
@dataclass
class Generation:
    """Phantom cases being written by child processes (``nslf phantom``), one range of cases each."""

    processes: list[tuple[subprocess.Popen, Path, str]]
    started: float
    folders: dict[str, Path]

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """Wait for every child (at most ``timeout_s``); raise if one failed or is still running."""
        deadline = time.perf_counter() + max(timeout_s, 0.0)
        failures = []
        for process, log_path, what in self.processes:
            try:
                process.wait(timeout=max(deadline - time.perf_counter(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                failures.append(f"{what}: still running after the time allowed")
                continue
            if process.returncode != 0:
                failures.append(f"{what}: exit {process.returncode}: {log_path.read_text()[-400:]}")
        if failures:
            raise RuntimeError("phantom generation failed: " + "; ".join(failures))
        counts = {name: sum(1 for p in folder.iterdir() if p.is_dir()) for name, folder in self.folders.items()}
        return {"cases": counts, "seconds": round(time.perf_counter() - self.started, 1), "processes": len(self.processes)}

    def ready(self, name: str) -> bool:
        """Whether every child writing into ``self.folders[name]`` has finished successfully."""
        mine = [p for p, _, what in self.processes if what.startswith(name)]
        return all(p.poll() == 0 for p in mine)


def start_generation(run: DeviceRun, n_train: int, n_test: int, workers: int, bench: bool = True,
                     train_seeds: tuple[int, ...] = TRAIN_SEEDS) -> Generation:  # fmt: skip
    """Start child processes writing the bench case (if ``bench``), ``n_train`` training and ``n_test`` held-out cases.

    The training cases are split evenly over the generator seeds ``train_seeds``. ``workers``
    processes in all (one more than the data-loading workers when the GPU has nothing else to do).
    """
    folders = {"bench": run.work / "bench", "train": run.work / "train", "test": run.work / "test"}
    for folder in folders.values():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    jobs: list[tuple[str, int, int, int]] = [("bench", BENCH_SEED, 0, 1)] if bench else []  # (what, seed, start, n)
    chunk = max(1, math.ceil((n_train + n_test) / max(workers - len(jobs), 1)))
    per_seed = [n_train // len(train_seeds) + (i < n_train % len(train_seeds)) for i in range(len(train_seeds))]
    # Each seed range writes distinct case names (start offsets), so they share one folder.
    ranges = [("train", seed, 500 * i, count) for i, (seed, count) in enumerate(zip(train_seeds, per_seed))]
    for name, seed, start, count in (*ranges, ("test", TEST_SEED, TEST_START, n_test)):
        for first in range(start, start + count, chunk):
            jobs.append((name, seed, first, min(chunk, start + count - first)))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    processes = []
    for what, seed, first, count in jobs:
        args = [sys.executable, __file__, "--child-generate", str(folders[what]), str(seed), str(first), str(count)]
        if what == "train":  # preprocessed once here, memory-mapped by every training stage
            args += ["--child-cache", str(run.work / "cache")]
        if run.dry_run:
            args += ["--dry-run"]
        log_path = run.work / f"phantom-{what}-{first}.log"
        with log_path.open("w") as handle:
            process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
        processes.append((process, log_path, f"{what} {first}..{first + count - 1}"))
    log(f"   {len(processes)} phantom processes started ({n_train} training, {n_test} held-out cases"
        f"{' and the bench case' if bench else ''})")  # fmt: skip
    return Generation(processes, time.perf_counter(), folders)


def child_generate(folder: Path, seed: int, start: int, count: int, cache: Path | None, tiny: bool) -> None:
    """Child process: write cases ``start .. start + count - 1`` of ``seed`` and preprocess them into ``cache``."""
    torch.set_num_threads(1)
    from nslfcore.data.brats import find_cases
    from nslfcore.data.cache import CaseCache
    from nslfcore.data.phantom import write_phantom_dataset

    clock = time.perf_counter()
    written = write_phantom_dataset(folder, count, seed=seed, tiny=tiny, size=DRY_SIZE if tiny else None, start=start)
    print(f"wrote {len(written)} cases in {time.perf_counter() - clock:.1f} s", flush=True)
    if cache is not None:
        store = CaseCache(cache_dir=cache, in_memory=False)
        names = {p.name for p in written}
        for files in find_cases(folder):
            if files.name in names:
                store.get(files)
        print(f"preprocessed into {cache} after {time.perf_counter() - clock:.1f} s", flush=True)


# ------------------------------------------------------------------------------------ throughput
def train_throughput(run: DeviceRun, configs: list[str]) -> dict[str, Any]:
    """:func:`train_throughput.measure` (ours vs the public loop) for stages 2 and 3 of each config."""
    from train_throughput import measure

    out: dict[str, Any] = {}
    for config in configs:
        rows = []
        for stage in (2, 3):
            crop = None
            if run.dry_run:
                crop = list(DRY_RECIPE[stage]["crop"])
            args = argparse.Namespace(config=config, crop=crop, warmup=1 if run.dry_run else 2,
                                      steps=1 if run.dry_run else 3, rounds=1 if run.dry_run else 3)  # fmt: skip
            row = measure(stage, args, run.device)
            log(f"   {config} stage {stage} {row['crop_zyx']}: ours {row['samples_per_s']['ours']:.2f} samples/s, "
                f"public {row['samples_per_s']['public']:.2f}, x{row['speedup']:.2f}")  # fmt: skip
            rows.append(row)
            out[config] = rows
            run.results["train_throughput"] = out
            run.write()
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def profile_steps(run: DeviceRun, config: str = "compact", steps: int = 3) -> dict[str, Any]:
    """Where a training step's time goes: ``torch.profiler`` over a few stage-2 and stage-3 steps (ours)."""
    from torch.profiler import ProfilerActivity, profile
    from train_throughput import OurLoop

    from nslfcore.config import PRESETS
    from nslfcore.models import NSLF
    from nslfcore.training.options import TrainingOptions

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
    out: dict[str, Any] = {}
    for stage in (2, 3):
        crop = DRY_RECIPE[stage]["crop"] if run.dry_run else GPU_RECIPE[stage]["crop"]
        torch.manual_seed(0)
        model = NSLF(PRESETS[config].replace(cunet_weights="shared")).to(run.device)
        loop = OurLoop(model, stage, TrainingOptions(), run.device)
        image = torch.rand(1, 4, *crop, device=run.device)
        label = torch.randint(0, 4, (1, *crop), device=run.device)
        for _ in range(2):
            loop.step(image, label)
        _sync(run.device)
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                loop.step(image, label)
            _sync(run.device)
            wall = (time.perf_counter() - start) / steps
        key = "self_device_time_total" if run.device.type == "cuda" else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:15]
        rows = [{"op": e.key, "calls": e.count, "self_device_ms": getattr(e, "self_device_time_total", 0.0) / 1e3 / steps,
                 "self_cpu_ms": e.self_cpu_time_total / 1e3 / steps} for e in events]  # fmt: skip
        device_total = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()) / 1e3 / steps
        out[f"stage{stage}"] = {"crop_zyx": list(crop), "wall_ms_per_step": wall * 1e3,
                                "device_busy_ms_per_step": device_total, "top_ops": rows}  # fmt: skip
        log(f"   stage {stage}: {wall * 1e3:.0f} ms per step, device busy {device_total:.0f} ms; top: "
            + ", ".join(f"{r['op']} {r['self_device_ms'] or r['self_cpu_ms']:.1f} ms" for r in rows[:5]))  # fmt: skip
        del model, loop
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------- inference
def _bench_case(run: DeviceRun, generation: Generation):
    from nslfcore.data.brats import find_cases, load_case

    deadline = time.perf_counter() + 180
    while not generation.ready("bench"):
        if time.perf_counter() > deadline:
            raise TimeoutError("the bench case was not written within 180 s")
        time.sleep(0.5)
    return load_case(find_cases(generation.folders["bench"])[0])


def _network_pass(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None, fn: Callable | None = None):
    """Fused volume and internal labels ``(z, y, x)`` of one whole-box pass, under autocast ``dtype`` (``None``: fp32)."""
    device_type = x.device.type
    autocast = torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        fusion, logits = (fn or model.fuse_and_segment)(x)
        return fusion.fused[0, 0].float(), logits[0].argmax(dim=0).to(torch.uint8)


def _timed(fn: Callable[[], Any], reps: int, device: torch.device) -> tuple[list[float], Any]:
    times, value = [], None
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        value = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times, value


def _agreement(reference: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor], brain: np.ndarray) -> dict[str, Any]:
    from inference_speed import region_dice

    ref_fused, ref_labels = (t.cpu().numpy() for t in reference)
    fused, labels = (t.cpu().numpy() for t in other)
    dice = region_dice(np.where(brain, labels, 0), np.where(brain, ref_labels, 0))
    diff = np.abs(fused - ref_fused)[brain]
    return {"label_dice_vs_fp32": dice, "label_voxels_differing": int((labels != ref_labels)[brain].sum()),
            "fused_max_abs_diff": float(diff.max()), "fused_mean_abs_diff": float(diff.mean())}  # fmt: skip


def inference(run: DeviceRun, case, config: str, compile_ok: Callable[[], bool], public_windows: int) -> dict[str, Any]:
    """Users' path, network-pass variants and the public procedure for one config on ``case``."""
    from inference_speed import PartialPublic, build_model, public_input
    from public_inference import STRIDES, WINDOW, window_starts

    from nslfcore.data.transforms import brain_mask, preprocess_case
    from nslfcore.inference import run as infer

    device, reps = run.device, (1 if run.dry_run else 3)
    model, weights = build_model(config)
    result: dict[str, Any] = {"weights": weights, "case": f"phantom seed {BENCH_SEED}, {case.geometry.shape} (z, y, x)"}
    run.results.setdefault("inference", {})[config] = result  # filled in as it goes: a failure keeps what was measured

    # 1. nslfcore.inference.run as users call it (bf16 autocast on CUDA, whole volume when it fits).
    infer(case, model, device=device)  # warm-up (cuDNN autotuning, allocator)
    _reset_peak(device)
    runs = [infer(case, model, device=device) for _ in range(reps)]
    result["run"] = {
        "mode": runs[-1].mode,
        "total_s": [r.timings["total"] for r in runs],
        "total_median_s": statistics.median(r.timings["total"] for r in runs),
        "phases_median_s": {k: statistics.median(r.timings[k] for r in runs) for k in runs[0].timings},
        "peak_gpu_gib": _peak_gib(device),
    }
    log(f"   {config} run(): {result['run']['total_median_s']:.3f} s ({result['run']['mode']}), "
        f"network {result['run']['phases_median_s']['inference']:.3f} s")  # fmt: skip
    run.write()

    # 2. The network pass on the brain box: fp32 / bf16 / fp16, eager and compiled, channels-last-3d.
    prepared = preprocess_case(case)
    brain = brain_mask(prepared.image)
    model = model.to(device, memory_format=torch.channels_last_3d).eval()
    x = torch.from_numpy(np.ascontiguousarray(prepared.image))[None].to(device)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    result["box_zyx"] = list(prepared.image.shape[1:])
    dtypes: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["fp16"] = torch.float16
    variants: dict[str, Any] = {}
    result["variants"] = variants
    reference = None
    plans = [(name, dtype, False) for name, dtype in dtypes.items()] + [("bf16+compile", torch.bfloat16, True)]
    for name, dtype, compiled in plans:
        entry: dict[str, Any] = {}
        variants[name] = entry
        fn = None
        if compiled:
            if not compile_ok():
                entry["status"] = "skipped (time budget or dry run)"
                continue
            fn = torch.compile(model.fuse_and_segment)
        try:
            _reset_peak(device)
            first, _ = _timed(lambda: _network_pass(model, x, dtype, fn), 1, device)  # warm-up / compilation
            _reset_peak(device)
            times, out = _timed(lambda: _network_pass(model, x, dtype, fn), reps, device)
        except Exception as error:  # noqa: BLE001 - e.g. a compiler failure: record and go on
            entry["status"] = f"error: {type(error).__name__}: {str(error)[:300]}"
            log(f"   {config} {name}: {entry['status']}")
            continue
        entry |= {"status": "ok", "first_call_s": first[0], "times_s": times, "median_s": statistics.median(times),
                  "peak_gpu_gib": _peak_gib(device)}  # fmt: skip
        if reference is None:
            reference = out
        else:
            entry["agreement"] = _agreement(reference, out, brain)
        peak = "n/a" if entry["peak_gpu_gib"] is None else f"{entry['peak_gpu_gib']:.1f} GiB"
        log(f"   {config} {name}: {entry['median_s']:.3f} s (first call {first[0]:.1f} s), peak GPU memory {peak}")
        run.write()
    del x
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 3. The public procedure (fp32, four CU-Net calls per window, 112 windows), first windows only:
    # the paper's procedure, for the configurations on the paper's full-resolution grid.
    if model.config.feature_stride != 1:
        return result
    image = public_input(case)
    total = int(np.prod([len(window_starts(s, w, st)) for s, w, st in zip(image.shape[1:], WINDOW, STRIDES)]))
    windows = min(public_windows, total)
    PartialPublic(model, 1, str(device))(image)  # warm-up: one window
    _reset_peak(device)
    times, _ = _timed(lambda: PartialPublic(model, windows, str(device))(image), 1, device)
    public_s = times[0] * total / windows
    result["public"] = {"windows_timed": windows, "windows_total": total, "seconds_timed": times[0],
                        "extrapolated_s": public_s, "peak_gpu_gib": _peak_gib(device)}  # fmt: skip
    best = min((v["median_s"] for v in variants.values() if v.get("status") == "ok"), default=math.nan)
    result["speedup_vs_public"] = {
        "run_total": public_s / result["run"]["total_median_s"],
        "run_network": public_s / result["run"]["phases_median_s"]["inference"],
        "best_network_pass": public_s / best,
    }
    log(f"   {config} public: {public_s:.1f} s extrapolated from {windows}/{total} windows; "
        f"speed-up x{result['speedup_vs_public']['run_total']:.0f} (run), x{result['speedup_vs_public']['best_network_pass']:.0f} (best pass)")  # fmt: skip
    return result


# -------------------------------------------------------------------------------------- training
def stage_options(stage: int, spec: dict[str, Any], workers: int, **extra: Any) -> Any:
    """The ``TrainingOptions`` of one planned stage (an entry of :func:`_stage_plan`): what NSLF's
    stage and the same-recipe baselines train with; ``extra`` adds options (an ablation's)."""
    from nslfcore.training.options import TrainingOptions

    return TrainingOptions(
        stages=(stage,), epochs=spec["epochs"], lr=spec["lr"], fine_tune_lr=spec["fine_tune_lr"],
        batch_size=spec["batch_size"], fusion_crop=spec["crop"] if stage < 3 else TrainingOptions().fusion_crop,
        segmentation_crop=spec["crop"] if stage == 3 else TrainingOptions().segmentation_crop,
        tumour_fraction=spec.get("tumour_fraction", 0.5), dice_average=spec.get("dice_average", "pooled"),
        samples_per_case=spec.get("samples_per_case", 1), augmentation=spec.get("augmentation", "none"),
        et_fraction=spec.get("et_fraction", 0.0), case_validation_every=spec.get("case_validation_every"),
        num_workers=workers, time_limit_s=spec["time_limit_s"], patience=max(10, spec["epochs"]),
        warmup_epochs=min(1.0, spec["epochs"] / 10), **extra,
    )  # fmt: skip


def _stage_plan(run: DeviceRun, recipe: dict[int, dict[str, Any]], seconds: float, n_train: int) -> dict[int, dict[str, Any]]:
    """Per stage: time limit, and epochs estimated from the measured throughput so the schedule fits the time."""
    measured: dict[int, float] = dict(EXPECTED_SAMPLES_PER_S) if not run.dry_run else {}
    for row in run.results.get("train_throughput", {}).get("compact", []):
        measured[row["stage"]] = row["samples_per_s"]["ours"]
    plan = {}
    for stage, spec in recipe.items():
        limit = max(seconds * spec["share"], 1.0)
        samples_per_epoch = max(1, round(n_train * 0.8)) * spec.get("samples_per_case", 1)  # the seeded 80/20 split
        steps_per_epoch = max(1, math.ceil(samples_per_epoch / spec["batch_size"]))
        rate = measured.get(stage, math.nan)
        if math.isfinite(rate):
            # batches run a little faster per sample than the batch-1 benchmark; validation and data cost some
            steps = 0.8 * limit * rate / spec["batch_size"]
            epochs = max(2, int(steps // steps_per_epoch))
        else:
            epochs = 1000  # unknown speed: the time limit decides
        plan[stage] = spec | {"time_limit_s": round(limit, 1), "epochs": epochs, "estimated_samples_per_s": rate}
    return plan


def training(run: DeviceRun, generation: Generation, recipe: dict[int, dict[str, Any]], workers: int,
             init: Path | None, train_seconds: float | None = None, config: str = "fast",
             reserve_s: float = EVALUATION_RESERVE_S, ablation: str = "none") -> dict[str, Any]:  # fmt: skip
    """Train preset ``config`` stage by stage in the time left minus ``reserve_s`` (for evaluation), at most ``train_seconds``."""
    from nslfcore.config import PRESETS
    from nslfcore.training.checkpoint import load_checkpoint
    from nslfcore.training.run import train
    from nslfcore.training.trainer import STOP_FILE

    data = generation.wait(timeout_s=max(run.remaining() - reserve_s - 30, 5))
    run.results["data"] = data
    n_train = data["cases"]["train"]
    seconds = run.remaining() - reserve_s - 5 * len(recipe)  # set-up and checkpoint writing per stage
    if train_seconds is not None:
        seconds = min(seconds, train_seconds)
    if seconds < 3 * len(recipe):
        raise TimeoutError(f"only {seconds:.0f} s left for training")
    plan = _stage_plan(run, recipe, seconds, n_train)
    result: dict[str, Any] = {"config": config, "ablation": ablation, "recipe": {str(k): v for k, v in plan.items()},
                              "stages": {}, "init": init}  # fmt: skip
    network = PRESETS[config].replace(**ABLATIONS[ablation].get("config", {}))
    run.results["training"] = result
    run.write()
    events = run.out / "events.jsonl"
    previous = init
    for stage, spec in plan.items():
        options = stage_options(stage, spec, workers, **ABLATIONS[ablation].get("options", {}))
        run_dir = run.work / "runs" / f"stage{stage}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        clock = time.perf_counter()
        log(f"   stage {stage}: {spec['epochs']} epochs at most, {spec['time_limit_s']:.0f} s, crop {spec['crop']}, "
            f"batch {spec['batch_size']}")  # fmt: skip
        status = train(str(generation.folders["train"]), run_dir, network, options, str(run.device),
                       events, init=previous, cache_dir=run.work / "cache")  # fmt: skip
        if status == "stopped":  # as cpu_same_budget: later stages would start from a half-trained one
            result["stages"][str(stage)] = {"status": status, "seconds": round(time.perf_counter() - clock, 1)}
            run.write()
            raise StageStopped(f"stage {stage} stopped by {run_dir / STOP_FILE}: "
                               "the run ends here (device_run does not resume a stage)")
        best = run_dir / f"stage{stage}_best.pt"
        state = load_checkpoint(run_dir / f"stage{stage}.pt")["progress"]
        chosen = load_checkpoint(best)
        result["stages"][str(stage)] = {
            "status": status, "seconds": round(time.perf_counter() - clock, 1), "epochs_run": state["epoch"],
            "steps": state["step"], "best_epoch": state["best_epoch"], "best_validation_loss": state["best_metric"],
            "samples": state["step"] * spec["batch_size"],
        }  # fmt: skip
        validations = [json.loads(line) for line in events.read_text().splitlines() if '"validation"' in line]
        mine = [v["metrics"] for v in validations if v["stage"] == stage and v["epoch"] == chosen["epoch"]]
        if mine:
            result["stages"][str(stage)]["best_validation"] = mine[-1]
        shutil.copyfile(best, run.out / "model.pt")  # the newest usable model, in case the run is cut off
        result["model_stage"] = stage
        log(f"   stage {stage} done: {state['epoch']} epochs, {state['step']} steps in "
            f"{result['stages'][str(stage)]['seconds']:.0f} s; best epoch {state['best_epoch']}")  # fmt: skip
        run.write()
        previous = best
    return result


# ------------------------------------------------------------------------------------- baselines
def baselines(run: DeviceRun, generation: Generation, spec: dict[str, Any], workers: int, archs: list[str],
              seconds: float) -> dict[str, Any]:  # fmt: skip
    """Segmentation baselines (issues 15.6, 16.3) trained with stage 3 of the recipe, ``seconds`` shared among ``archs``.

    Same cases, split, crops, batch, crops per case, ET share, augmentation, per-class Dice, learning
    rate and schedule as the default model's stage 3 (:func:`nslfcore.baseline.train_baseline` with
    ``recipe``), each baseline for ``seconds / len(archs)``; files ``baseline_<arch>.pt`` in ``--out``.
    """
    from nslfcore.baseline import train_baseline

    data = generation.wait(timeout_s=max(run.remaining() - 30, 5))
    run.results.setdefault("data", data)
    share = max(min(seconds, run.remaining() - 10) / len(archs), 1.0)
    plan = _stage_plan(run, {3: spec | {"share": 1.0}}, share, data["cases"]["train"])[3]
    out: dict[str, Any] = {"archs": archs, "recipe": plan, "trained": {}}
    for arch in archs:
        options = stage_options(3, plan, workers)
        clock = time.perf_counter()
        log(f"   baseline {arch}: {plan['epochs']} epochs at most, {plan['time_limit_s']:.0f} s")
        best = train_baseline(generation.folders["train"], run.work / "baselines" / arch, arch=arch, recipe=options,
                              device=str(run.device), log=lambda line: log(f"   {line}"))  # fmt: skip
        shutil.copyfile(best, run.out / f"baseline_{arch}.pt")
        out["trained"][arch] = {"seconds": round(time.perf_counter() - clock, 1), "file": f"baseline_{arch}.pt"}
        run.write()
    return out


# ------------------------------------------------------------------------------------ evaluation
def evaluation(run: DeviceRun, generation: Generation) -> dict[str, Any]:
    """Dice ET / TC / WT of the new model and of the shipped one on the held-out cases (whole-case inference)."""
    from nslfcore.data.brats import find_cases, load_case
    from nslfcore.data.labels import REGIONS, to_internal
    from nslfcore.inference import run as infer
    from nslfcore.metrics import overlap_metrics
    from nslfcore.model_store import load_model

    models: dict[str, torch.nn.Module] = {"shipped": load_model(None, device="cpu")[0]}
    if (run.out / "model.pt").exists():
        models["new"] = load_model(run.out / "model.pt", device="cpu")[0]
    per_case: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    cases = find_cases(generation.folders["test"])
    for files in cases:
        if run.remaining() < 5:
            break
        case = load_case(files, require_label=True)
        for name, model in models.items():
            result = infer(case, model, device=run.device)
            predicted = to_internal(result.labels, "brats2021")
            row = {"case": case.name, "seconds": result.timings["total"]}
            row |= {region: overlap_metrics(np.isin(predicted, classes), np.isin(case.label, classes))["dice"]
                    for region, classes in REGIONS.items()}  # fmt: skip
            per_case[name].append(row)
        log(f"   {case.name}: " + ", ".join(
            f"{name} " + "/".join(f"{rows[-1][r]:.2f}" for r in REGIONS) for name, rows in per_case.items()))  # fmt: skip
    out: dict[str, Any] = {"cases": len(per_case["shipped"]), "regions": list(REGIONS), "per_case": per_case}
    means = {name: {r: float(np.mean([row[r] for row in rows])) for r in REGIONS} for name, rows in per_case.items() if rows}
    for name in means:
        means[name]["mean"] = float(np.mean([means[name][r] for r in REGIONS]))
    out["mean_dice"] = means
    if "new" in means and "shipped" in means:
        out["new_beats_shipped"] = means["new"]["mean"] > means["shipped"]["mean"]
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "outputs/device_run")),
                        help="where results go (default: $OUT)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for cases and runs (default: a temp folder)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="wall-clock seconds for everything")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-cases", type=int, default=None, help="training phantoms (default 56; dry run 6)")
    parser.add_argument("--test-cases", type=int, default=None, help="held-out phantoms (default 8; dry run 2)")
    parser.add_argument("--workers", type=int, default=None, help="CPU processes for phantoms and data loading")
    parser.add_argument("--configs", nargs="+", default=["paper", "compact"], help="configs to benchmark")
    parser.add_argument("--public-windows", type=int, default=None, help="public windows to time (default 12; dry run 1)")
    parser.add_argument("--sections", nargs="+", default=[s for s in SECTIONS if s != "baselines"], choices=SECTIONS,
                        help="what to run, in this order (default: all but baselines)")  # fmt: skip
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="train at most this long (default: all the budget leaves)")  # fmt: skip
    parser.add_argument("--init", type=Path, default=None, help="start training from this model (a previous run's model.pt)")
    parser.add_argument("--train-config", default="fast", help="the preset the training section trains (default: fast)")
    parser.add_argument("--ablation", choices=tuple(ABLATIONS), default="none",
                        help="train an ablation of issue 16 instead of the method (default: none)")
    parser.add_argument("--baseline-archs", nargs="+", default=["unet", "segresnet"],
                        help="segmentation baselines the baselines section trains (default: unet segresnet)")
    parser.add_argument("--baseline-seconds", type=float, default=None,
                        help="seconds for all baselines together (default: what the budget leaves)")
    parser.add_argument("--train-stages", nargs="+", type=int, default=None, choices=(1, 2, 3),
                        help="train only these stages of the recipe (e.g. 3 with --init; default: all)")
    parser.add_argument("--train-seeds", nargs="+", type=int, default=list(TRAIN_SEEDS),
                        help="phantom generator seeds of the training cases, split evenly (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="tiny phantoms and crops on any device, for tests")
    parser.add_argument("--started", type=float, default=None,
                        help="Unix time the budget counts from (default: now; device_run.sh passes its own start)")  # fmt: skip
    parser.add_argument("--child-generate", nargs=4, metavar=("FOLDER", "SEED", "START", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--child-cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_generate:
        folder, seed, start, count = args.child_generate
        child_generate(Path(folder), int(seed), int(start), int(count), args.child_cache, args.dry_run)
        return 0

    import tempfile

    # The memory-mapped case cache hands MONAI read-only arrays; its transforms copy them anyway.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="nslf-device-run-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    run = DeviceRun(out=args.out, work=work, device=device, budget_s=args.budget, dry_run=args.dry_run)
    if args.started is not None:  # the set-up before Python started counts too
        run.start -= max(0.0, time.time() - args.started)
    cores = os.cpu_count() or 2
    workers = args.workers or max(1, cores - 2)
    n_train = args.train_cases or (6 if args.dry_run else 56)
    n_test = args.test_cases if args.test_cases is not None else (2 if args.dry_run else 8)
    recipe = DRY_RECIPE if args.dry_run else GPU_RECIPE
    if args.train_stages:
        recipe = {stage: spec for stage, spec in recipe.items() if stage in args.train_stages}
    if n_test == 0 and "evaluation" in args.sections:
        parser.error("the evaluation section needs held-out cases (--test-cases >= 1)")
    public_windows = args.public_windows or (1 if args.dry_run else 12)
    run.results |= {"benchmark": "device_run", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": args.budget,
                    "dry_run": args.dry_run, "workers": workers, "argv": sys.argv[1:] if argv is None else argv}  # fmt: skip
    if (args.out / "events.jsonl").exists():
        (args.out / "events.jsonl").unlink()
    log(f"budget {args.budget:.0f} s, device {device}, {workers} worker processes, out {args.out}, work {work}")

    run.section("environment", lambda: environment(device))
    bench = "inference" in args.sections
    busy_gpu = bool({"throughput", "profile", "inference"} & set(args.sections))  # else one more generating process
    generation = start_generation(run, n_train, n_test, workers + (0 if busy_gpu else 2), bench, tuple(args.train_seeds))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # the benchmarks leave at least this much for training and evaluation
    training_reserve = 0.5 * args.budget if "training" in args.sections else EVALUATION_RESERVE_S

    def compile_ok() -> bool:
        return not args.dry_run and run.remaining() > training_reserve + 90

    if "throughput" in args.sections:
        run.section("train_throughput", lambda: train_throughput(run, args.configs), needs_s=training_reserve)
    if "profile" in args.sections:
        run.section("profile", lambda: profile_steps(run), needs_s=training_reserve)
    if "inference" in args.sections:
        case = run.section("bench_case", lambda: _bench_case(run, generation), store=False)
        if case is not None:
            for config in args.configs:
                run.section(f"inference_{config}", lambda c=config: inference(run, case, c, compile_ok, public_windows),
                            needs_s=training_reserve, store=False)  # fmt: skip
    if "training" in args.sections:
        reserve = EVALUATION_RESERVE_S if "evaluation" in args.sections else 5.0
        run.section("training", lambda: training(run, generation, recipe, workers, args.init, args.train_seconds,
                                                 args.train_config, reserve, args.ablation),
                    needs_s=reserve + 20)  # fmt: skip
    if "baselines" in args.sections:
        recipe3 = (DRY_RECIPE if args.dry_run else GPU_RECIPE)[3]
        run.section("baselines", lambda: baselines(run, generation, recipe3, workers, args.baseline_archs,
                                                   args.baseline_seconds or run.remaining() - 10),
                    needs_s=20)  # fmt: skip
    if "evaluation" in args.sections:
        run.section("evaluation", lambda: evaluation(run, generation), needs_s=10)
    statuses = {k: v.get("status") for k, v in run.results.get("sections", {}).items()}
    run.write()
    log(f"done in {run.elapsed():.0f} s of {args.budget:.0f}: {statuses}")
    with contextlib.suppress(OSError):
        for process, _, _ in generation.processes:
            if process.poll() is None:
                process.kill()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if run.stopped:
        return 3
    return 0 if all(s == "ok" or str(s).startswith("skipped") for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
