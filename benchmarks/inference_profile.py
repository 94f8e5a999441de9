"""Where NSLF's inference time goes: per part (CU-Net, FCD, FSD, pre- and post-processing), fp32 and bf16.

One BraTS-size phantom case (seed 11, as ``inference_speed.py``), cropped to its brain box as
:func:`nslfcore.inference.run` does. For each precision the network pass is run once to warm up,
then ``--reps`` times with forward hooks on the NSLF parts that record the wall time spent inside
each (CPU execution is synchronous; on CUDA the hooks synchronise). Multiply-accumulates per part
come from the convolution shapes (``out voxels x out channels x in channels / groups x kernel``),
so the table shows both what each part costs in arithmetic and in time. ``run()``'s own timings
give pre-processing (brain mask, crop, normalisation) and post-processing (paste back, argmax).

Writes ``benchmarks/results/inference_profile_<config>_<device>.json`` and prints a Markdown table.

    python benchmarks/inference_profile.py [--config shipped|compact|fast|paper] [--reps N] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from nslfcore.config import PRESETS
from nslfcore.data.phantom import generate_case
from nslfcore.data.transforms import preprocess_case
from nslfcore.inference import run
from nslfcore.inference.precision import autocast, resolve_precision
from nslfcore.model_store import load_model
from nslfcore.models import NSLF
from torch import nn
from train_throughput import _cpu_model  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("cunet", "fcd", "fsd")


def conv_macs(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Multiply-accumulates of every Conv3d/ConvTranspose3d per top-level part for one pass on ``x``."""
    macs: dict[str, float] = defaultdict(float)
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            part = name.split(".")[0]

            def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor, part: str = part) -> None:
                kernel = mod.kernel_size[0] * mod.kernel_size[1] * mod.kernel_size[2]
                inp = inputs[0]
                # transposed: every input voxel scatters a kernel; plain: every output voxel gathers one
                voxels = inp[0, 0].numel() if isinstance(mod, nn.ConvTranspose3d) else output[0, 0].numel()
                macs[part] += voxels * mod.out_channels * mod.in_channels / mod.groups * kernel * inp.shape[0]

            hooks.append(module.register_forward_hook(hook))
    with torch.inference_mode():
        model.predict(x)
    for h in hooks:
        h.remove()
    return dict(macs)


def timed_parts(model: NSLF, x: torch.Tensor, dtype: torch.dtype, reps: int) -> dict[str, list[float]]:
    """Wall seconds inside each part and in the whole ``predict`` per repetition (after a warm-up)."""
    seconds: dict[str, list[float]] = defaultdict(list)
    current: dict[str, float] = {}
    hooks = []
    for part in PARTS:
        module = getattr(model, part)

        def pre(mod: nn.Module, inputs: tuple, part: str = part) -> None:
            current[part] = time.perf_counter()

        def post(mod: nn.Module, inputs: tuple, output: object, part: str = part) -> None:
            if seconds[part]:  # not during the warm-up
                seconds[part][-1] += time.perf_counter() - current[part]

        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    device = x.device
    with torch.inference_mode(), autocast(device, dtype):
        model.predict(x)  # warm-up (oneDNN picks its kernels)
        for _ in range(reps):
            for part in PARTS:
                seconds[part].append(0.0)
            clock = time.perf_counter()
            model.predict(x)
            seconds["network"].append(time.perf_counter() - clock)
    for h in hooks:
        h.remove()
    return dict(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("shipped", "compact", "fast", "paper"), default="shipped")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    args = parser.parse_args()

    device = torch.device("cpu")
    if args.config == "shipped":
        model, info = load_model(None)
        weights = info.id
    else:
        torch.manual_seed(0)
        model, weights = NSLF(PRESETS[args.config]).eval(), "seeded random"
    assert isinstance(model, NSLF)
    model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    case = generate_case(seed=11)
    box = preprocess_case(case).image
    x = torch.from_numpy(box)[None].contiguous(memory_format=torch.channels_last_3d)
    macs = conv_macs(model, x)
    result: dict = {
        "config": args.config, "weights": weights, "box_zyx": list(box.shape[1:]), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu": _cpu_model(), "python": platform.python_version(),
        "gmacs": {k: round(v / 1e9, 2) for k, v in macs.items()}, "precisions": {},
    }  # fmt: skip
    for precision in args.precisions:
        dtype = resolve_precision(precision, device)
        parts = timed_parts(model, x, dtype, args.reps)
        end_to_end = run(case, model, device="cpu", mode="whole", precision=precision)
        result["precisions"][precision] = {
            "median_s": {k: round(statistics.median(v), 3) for k, v in parts.items()},
            "run_timings_s": {k: round(v, 3) for k, v in end_to_end.timings.items()},
        }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"inference_profile_{args.config}_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    total_macs = sum(macs.values())
    print(f"NSLF {args.config} ({weights}), brain box {tuple(box.shape[1:])} (z, y, x), {result['threads']} threads, "
          f"{result['cpu']}\n")  # fmt: skip
    header = "| part | GMAC | share | " + " | ".join(f"{p} s" for p in args.precisions) + " |"
    print(header + "\n|" + " --- |" * (header.count("|") - 1))
    for part in (*PARTS, "network"):
        gmac = total_macs if part == "network" else macs.get(part, 0.0)
        times = " | ".join(f"{result['precisions'][p]['median_s'][part]:.2f}" for p in args.precisions)
        print(f"| {part} | {gmac / 1e9:.1f} | {gmac / total_macs:.0%} | {times} |")
    for p in args.precisions:
        t = result["precisions"][p]["run_timings_s"]
        print(f"\nrun() {p}: preprocess {t['preprocess']:.2f} s, network {t['inference']:.2f} s, "
              f"postprocess {t['postprocess']:.2f} s, total {t['total']:.2f} s")  # fmt: skip
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
