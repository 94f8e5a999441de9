"""Inference speed: our ``nslfcore.inference.run`` versus the public code's procedure on one full case.

One BraTS-size phantom case (240 x 240 x 155, 4 modalities, seed 11, never used in training).
Ours: :func:`nslfcore.inference.run` as users call it (crop to the brain box, one whole-volume
pass when it fits in memory, else Gaussian sliding windows; channels-last-3d; bf16 on CUDA; fused
volume and labels from one pass). Public: :class:`public_inference.PublicProcedure` (112 windows
of 160 x 160 x 64, four CU-Net calls per window, fp32, uniform averaging) on the whole normalised
volume. Same weights (``compact``: the shipped default model; ``paper``: seeded random weights, as
no trained paper-size weights exist), same machine, one process, repetitions interleaved
(ours, public, ours, public, ...) after a warm-up of ours.

Peak resident memory (RSS, ``VmHWM``) of each is measured in a fresh child process running that
procedure once (``--child``; the public one on its first 4 windows, where its peak is reached) on
the case read from files, so the two never share a high-water mark and the phantom generator's
memory never counts.

With ``--public-windows N`` the public procedure is timed on its first N windows only and its
full time extrapolated (N / 112 of the work; windows all have the same size, so the per-window
time is constant); the agreement is then not measured. Use it where the full public run would
take hours (the ``paper`` configuration on a small CPU).

Writes ``benchmarks/results/inference_speed_<config>_<device>.json`` and prints a Markdown row.

    python benchmarks/inference_speed.py [--config shipped|compact|fast|paper] [--device cpu|cuda] [--reps N]
                                         [--public-windows N] [--no-warmup]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from public_inference import STRIDES, WINDOW, PublicProcedure, window_starts  # noqa: E402

from nslfcore.config import PRESETS  # noqa: E402
from nslfcore.data.labels import REGIONS  # noqa: E402
from nslfcore.data.brats import find_cases, load_case  # noqa: E402
from nslfcore.data.phantom import generate_case, write_case  # noqa: E402
from nslfcore.data.transforms import brain_mask, normalize  # noqa: E402
from nslfcore.inference import run  # noqa: E402
from nslfcore.metrics import overlap_metrics  # noqa: E402
from nslfcore.model_store import load_model  # noqa: E402
from nslfcore.models import NSLF  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CASE_SEED = 11
#: Windows the public procedure runs when only its peak memory is measured.
RSS_WINDOWS = 4


def build_model(config: str) -> tuple[NSLF, str]:
    """The shipped default model (``"shipped"``) or a seeded random model of preset ``config``, and a description of the weights."""
    if config == "shipped":
        model, info = load_model(None)
        return model, f"shipped model {info.id} ({info.config['name']})"
    torch.manual_seed(0)
    return NSLF(PRESETS[config]).eval(), f"seeded random weights ({config}, per-modality CU-Net)"


def public_input(case) -> np.ndarray:
    """The whole normalised ``(4, z, y, x)`` volume, normalised as the public code does (no brain crop)."""
    stack = case.stacked()
    return normalize(stack, brain_mask(stack))


class PartialPublic(PublicProcedure):
    """The public procedure stopped after ``limit`` windows (for extrapolated timings)."""

    def __init__(self, model: NSLF, limit: int, device: str) -> None:
        super().__init__(model, device)
        self.limit = limit

    def __call__(self, image, progress=None):
        class Enough(Exception):
            pass

        def stop(done: int, total: int) -> None:
            if done >= self.limit:
                raise Enough

        try:
            return super().__call__(image, stop)
        except Enough:
            return None, None


def region_dice(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Dice of two internal label maps per BraTS region (:func:`nslfcore.metrics.overlap_metrics`; both empty -> 1)."""
    return {name: overlap_metrics(np.isin(a, classes), np.isin(b, classes))["dice"] for name, classes in REGIONS.items()}


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` of ``/proc/self/status`` on Linux.

    ``ru_maxrss`` is not used there: Linux carries it across ``exec`` from the parent, so a child
    would report its parent's high-water mark.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, Linux KiB


def child(kind: str, config: str, device: str, public_windows: int | None, case_dir: Path) -> None:
    """Run one procedure once and print its peak RSS (MiB) as JSON (a fresh process per measurement).

    The case is read from ``case_dir`` (written by the parent), so the phantom generator's own
    memory never counts.
    """
    model, _ = build_model(config)
    case = load_case(find_cases(case_dir)[0])
    base = peak_rss_mib()
    if kind == "ours":
        run(case, model, device=device)
    else:
        procedure = PartialPublic(model, public_windows, device) if public_windows else PublicProcedure(model, device)
        procedure(public_input(case))
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "before_mib": base}))


def peak_rss(kind: str, config: str, device: str, case_dir: Path) -> float:
    """Peak RSS (MiB) of one procedure in a fresh child; the public one runs :data:`RSS_WINDOWS` windows.

    Its peak is reached within them: the full-volume accumulators are allocated before the first
    window and every window has the same size, so later windows allocate nothing new.
    """
    args = [sys.executable, __file__, "--child", kind, "--config", config, "--device", device, "--case-dir", str(case_dir)]
    if kind == "public":
        args += ["--public-windows", str(RSS_WINDOWS)]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="shipped", choices=("shipped", "compact", "fast", "paper"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--public-windows", type=int, default=None, help="time only the first N public windows and extrapolate")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run of ours (for runs of minutes)")
    parser.add_argument("--child", choices=("ours", "public"), help=argparse.SUPPRESS)
    parser.add_argument("--case-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.config, args.device, args.public_windows, args.case_dir)
        return

    model, weights = build_model(args.config)
    case = generate_case(seed=CASE_SEED)
    image = public_input(case)
    total_windows = int(np.prod([len(window_starts(s, w, st)) for s, w, st in zip(image.shape[1:], WINDOW, STRIDES)]))
    public = PartialPublic(model, args.public_windows, args.device) if args.public_windows else PublicProcedure(model, args.device)
    scale = total_windows / args.public_windows if args.public_windows else 1.0

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    print(f"{weights}, {args.device}, public procedure: {total_windows} windows", flush=True)
    if not args.no_warmup:
        run(case, model, device=args.device)
    ours_s, public_s = [], []
    public_out = (None, None)
    for rep in range(args.reps):
        sync()
        start = time.perf_counter()
        ours = run(case, model, device=args.device)
        sync()
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        public_out = public(image)
        sync()
        public_s.append((time.perf_counter() - start) * scale)
        print(f"rep {rep + 1}: ours {ours_s[-1]:.2f} s, public {public_s[-1]:.2f} s"
              f"{' (extrapolated)' if args.public_windows else ''}", flush=True)  # fmt: skip

    agreement = None
    if public_out[0] is not None:
        from nslfcore.data.labels import to_internal

        brain = brain_mask(case.stacked())
        ours_labels = to_internal(ours.labels, "brats2021")
        dice = region_dice(ours_labels, np.where(brain, public_out[1], 0))
        agreement = {
            "dice": dice,
            "dice_mean": float(np.mean(list(dice.values()))),
            "fused_max_abs_diff_in_brain": float(np.abs(ours.fused - public_out[0])[brain].max()),
            "fused_mean_abs_diff_in_brain": float(np.abs(ours.fused - public_out[0])[brain].mean()),
        }
    with tempfile.TemporaryDirectory(prefix="nslf-bench-") as folder:
        write_case(case, folder)
        rss = {kind: peak_rss(kind, args.config, args.device, Path(folder)) for kind in ("ours", "public")}
    result = {
        "benchmark": "inference_speed",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "config": args.config,
        "weights": weights,
        "case": f"phantom seed {CASE_SEED}, {case.geometry.shape} (z, y, x)",
        "ours_mode": ours.mode,
        "ours_s": ours_s,
        "public_s": public_s,
        "public_windows_timed": args.public_windows or total_windows,
        "public_windows_total": total_windows,
        "ours_median_s": statistics.median(ours_s),
        "public_median_s": statistics.median(public_s),
        "speedup": statistics.median(public_s) / statistics.median(ours_s),
        "peak_rss_mib": rss,
        "agreement": agreement,
    }
    RESULTS.mkdir(exist_ok=True)
    device_tag = "cuda" if args.device.startswith("cuda") else "cpu"
    path = RESULTS / f"inference_speed_{args.config}_{device_tag}.json"
    path.write_text(json.dumps(result, indent=2))
    agree = (f"{agreement['dice_mean']:.4f} | {agreement['fused_max_abs_diff_in_brain']:.4f}" if agreement else "n/a | n/a")
    print(f"| {result['date']} | {result['machine']} | {result['device']} | {args.config} | "
          f"{result['ours_median_s']:.2f} | {result['public_median_s']:.1f}"
          f"{' (extrapolated from %d of %d windows)' % (args.public_windows, total_windows) if args.public_windows else ''} | "
          f"{result['speedup']:.1f}x | {rss['ours'] / 1024:.2f} | {rss['public'] / 1024:.2f} | {agree} |")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
