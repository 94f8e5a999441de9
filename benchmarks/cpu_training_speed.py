"""CPU training cost per sample (issue 15, point 1): the training step of each stage, per configuration and number format.

What one training sample costs on this machine's CPU, for the configurations a CPU user would
train: ``compact`` (the v2 default, full resolution) and ``fast`` (``feature_stride=2``, the
redesign of issue 14), each in fp32 and under bf16 autocast (what ``TrainingOptions.amp`` does on
CPUs with native bf16). The step is the trainer's own (:class:`~nslfcore.training.stages.StageStep`
through ``train_throughput.OurLoop``: one batched CU-Net call, channels-last-3d, losses in fp32),
on random crops of the recipe's sizes (``z, y, x``); the data pipeline is timed separately
(``--augmentation``: one augmented training crop from a preprocessed BraTS-size phantom, as the
data-loading workers make it).

Rounds are interleaved (every variant once per round) after warm-up steps; the median per
variant is reported with samples per second and the ratio to ``compact`` fp32 of the same stage.
Writes ``benchmarks/results/cpu_training_speed.json`` (or ``--out``) and prints a Markdown table.

    python benchmarks/cpu_training_speed.py [--stages 1 2 3] [--rounds 3] [--steps 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from train_throughput import OurLoop  # noqa: E402

from nslfcore.config import PRESETS  # noqa: E402
from nslfcore.inference.precision import cpu_has_native_bf16  # noqa: E402
from nslfcore.models import NSLF  # noqa: E402
from nslfcore.training.options import TrainingOptions  # noqa: E402

RESULTS = Path(__file__).parent / "results"
#: Crops ``(z, y, x)`` per stage: multiples of 32, as the recipes of ``device_run.py`` use.
CROPS = {1: (64, 96, 96), 2: (64, 96, 96), 3: (64, 160, 160)}
QUICK_CROPS = {1: (64, 64, 64), 2: (64, 64, 64), 3: (64, 64, 64)}  # fast needs > 1 bottleneck voxel
CONFIGS = ("compact", "fast")


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def measure_stage(stage: int, crop: tuple[int, int, int], formats: list[str], rounds: int, steps: int) -> list[dict]:
    """Seconds per step (batch 1) of every configuration x number format for ``stage``, interleaved."""
    options = TrainingOptions(dice_average="class")
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 4, *crop, generator=g)
    label = torch.randint(0, 4, (1, *crop), generator=g)
    variants = {}
    for config in CONFIGS:
        for fmt in formats:
            torch.manual_seed(0)
            variants[(config, fmt)] = OurLoop(NSLF(PRESETS[config]), stage, options, torch.device("cpu"))

    def step(key: tuple[str, str]) -> None:
        with _autocast(key[1] == "bf16"):
            variants[key].step(image, label)

    for key in variants:
        step(key)  # warm-up
    times: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
    for _ in range(rounds):
        for key in variants:
            start = time.perf_counter()
            for _ in range(steps):
                step(key)
            times[key].append((time.perf_counter() - start) / steps)
    reference = statistics.median(times[("compact", "fp32")])
    rows = []
    for (config, fmt), values in times.items():
        median = statistics.median(values)
        rows.append({"stage": stage, "config": config, "precision": fmt, "crop_zyx": list(crop),
                     "seconds_per_step": median, "min_s": min(values), "max_s": max(values),
                     "samples_per_s": 1.0 / median, "speedup_vs_compact_fp32": reference / median})  # fmt: skip
    return rows


def measure_augmentation(level: str, crop: tuple[int, int, int], repeats: int, quick: bool) -> dict | None:
    """Median seconds to make one augmented training crop (crop + augmentation) from a preprocessed case."""
    try:
        from nslfcore.data.augmentation import training_augmentation  # type: ignore[attr-defined]
    except ImportError:
        return None
    from nslfcore.data.phantom import generate_case, generate_tiny_case
    from nslfcore.data.transforms import preprocess_case

    case = generate_tiny_case(0) if quick else generate_case(11)
    prepared = preprocess_case(case)
    augment = training_augmentation(level)
    z, y, x = crop
    sample = {"image": torch.from_numpy(prepared.image[:, :z, :y, :x].copy()),
              "label": torch.from_numpy(prepared.label[None, :z, :y, :x].copy())}  # fmt: skip
    times = []
    for index in range(repeats + 1):
        if hasattr(augment, "set_random_state"):
            augment.set_random_state(seed=index)
        start = time.perf_counter()
        augment(dict(sample))
        times.append(time.perf_counter() - start)
    return {"level": level, "crop_zyx": list(crop), "seconds_per_crop": statistics.median(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny crops, one round (a test)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_training_speed.json")
    args = parser.parse_args()
    crops = QUICK_CROPS if args.quick else CROPS
    rounds, steps = (1, 1) if args.quick else (args.rounds, args.steps)
    formats = ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    rows = []
    for stage in args.stages:
        rows += measure_stage(stage, crops[stage], formats, rounds, steps)
        print(f"stage {stage} done", flush=True)
    augmentation = [a for a in (measure_augmentation(level, crops[3], 1 if args.quick else 5, args.quick)
                                for level in ("light", "strong")) if a is not None]  # fmt: skip
    result = {
        "benchmark": "cpu_training_speed", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
        "rounds": rounds, "steps": steps, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "cpu_bf16": cpu_has_native_bf16(),
        "rows": rows, "augmentation": augmentation,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("\n| stage | crop (z, y, x) | config | precision | s / sample | samples / s | vs compact fp32 |")
    print("| ---: | --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['stage']} | {' x '.join(map(str, r['crop_zyx']))} | {r['config']} | {r['precision']} | "
              f"{r['seconds_per_step']:.2f} | {r['samples_per_s']:.3f} | {r['speedup_vs_compact_fp32']:.2f}x |")  # fmt: skip
    for a in augmentation:
        print(f"augmentation {a['level']}: {a['seconds_per_crop'] * 1000:.0f} ms per {a['crop_zyx']} crop")


if __name__ == "__main__":
    main()
