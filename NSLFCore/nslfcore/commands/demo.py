"""``nslf demo``: the main job on the embedded default.

Builds the NSLF networks, prints their parameter counts, generates a 4-modality BraTS-like
phantom volume, and runs one fusion + segmentation forward pass, printing shapes and timings.
"""

from __future__ import annotations

import argparse
import time

import torch

from nslfcore.config import PRESETS
from nslfcore.models import NSLF


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run NSLF on a generated phantom case and print shapes and timings")
    parser.add_argument("--config", default="compact", choices=sorted(PRESETS), help="network configuration")
    parser.add_argument("--tiny", action="store_true", help="a small procedural phantom instead of the BraTS-size one")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run(args: argparse.Namespace) -> int:
    from nslfcore.data.phantom import generate_case, generate_tiny_case
    from nslfcore.data.transforms import preprocess_case

    config = PRESETS[args.config]
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = NSLF(config).eval()
    build_s = time.perf_counter() - start
    print(f"NSLF '{config.name}' ({config.cunet_weights} CU-Net), built in {build_s:.2f} s")
    for name in ("cunet", "fcd", "gmn", "fsd"):
        part = getattr(model, name)
        print(f"  {name.upper():5s} {_count(part):>12,d} parameters")
    print(f"  total {_count(model):>12,d} parameters")

    start = time.perf_counter()
    case = generate_tiny_case(seed=args.seed) if args.tiny else generate_case(seed=args.seed)
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = preprocess_case(case)  # brain mask, crop to the brain's box, normalise to [0, 1]
    x = torch.from_numpy(prepared.image).unsqueeze(0)
    prep_s = time.perf_counter() - start
    print(f"phantom case {case.name}: {case.geometry.shape} voxels (z, y, x), generated in {gen_s:.2f} s; "
          f"cropped to the brain {tuple(x.shape[2:])} and normalised in {prep_s:.2f} s")

    with torch.inference_mode():
        start = time.perf_counter()
        fusion, logits = model.fuse_and_segment(x)
        forward_s = time.perf_counter() - start
    labels = logits.argmax(dim=1)
    print(f"input {tuple(x.shape)} (batch, [t1, t1ce, t2, flair], z, y, x)")
    print(f"fused volume {tuple(fusion.fused.shape)}, fusion weights {tuple(fusion.weights.shape)}")
    print(f"segmentation logits {tuple(logits.shape)}, label map {tuple(labels.shape)}")
    voxels = x.shape[2] * x.shape[3] * x.shape[4]
    print(f"fusion + segmentation forward pass: {forward_s:.2f} s ({voxels / forward_s / 1e6:.2f} Mvoxel/s, "
          f"{torch.get_num_threads()} CPU threads)")
    print("note: weights are untrained here; the shipped default model arrives with issue 5.")
    return 0
