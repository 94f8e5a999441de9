"""Synthesis speed (issue 31 point 1): a label map, and one training crop synthesised on the fly.

Times, each the median of ``--repeats`` runs on ``--device``:

* ``label_map_s``: :func:`nslfcore.synthesis.label_map.generate_label_map` (numpy and SciPy, one
  process; a bank of N maps written with W workers costs about ``N / W`` times this);
* ``crop_s``: one item of :class:`nslfcore.synthesis.dataset.SynthesisCropDataset` (a fresh case
  from a bank map: warp, contrast, acquisition, brain box, robust normalisation, crop ``--crop``,
  flips), what a training step waits for with no data-loader workers;
* its parts: ``synthesis_s`` (:func:`~nslfcore.synthesis.generator.synthesise_images` with the
  warp), ``preprocess_torch_s`` (:func:`nslfcore.synthesis.preprocess.preprocess`) and, for
  comparison, ``preprocess_numpy_s`` (the same through ``nslfcore.data.transforms``' numpy brain mask,
  box and ``normalize``, what the dataset would cost without the torch twin).

The bank (``--repeats`` maps of ``--seed``) is written into a temporary folder with one worker.
Writes ``benchmarks/results/synthesis_speed.json`` (or ``--out``) with the machine and ``--note``.

    python benchmarks/synthesis_speed.py [--device cpu|cuda] [--repeats 3] [--crop 64 160 160] [--threads N] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nslfcore.data.transforms import SEGMENTATION_CROP, brain_bbox, brain_mask, normalize
from nslfcore.synthesis.bank import write_label_bank
from nslfcore.synthesis.dataset import WARP_MARGIN, SynthesisCropDataset
from nslfcore.synthesis.generator import synthesise_images, torch_generator
from nslfcore.synthesis.label_map import generate_label_map
from nslfcore.synthesis.preprocess import preprocess

RESULTS = Path(__file__).parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[int], object], repeats: int, device: torch.device) -> list[float]:
    """Seconds of ``function(i)`` for ``i`` in ``range(repeats)``."""
    times = []
    for index in range(repeats):
        _sync(device)
        start = time.perf_counter()
        function(index)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _numpy_preprocess(images: torch.Tensor) -> np.ndarray:
    stack = images.cpu().numpy()
    mask = brain_mask(stack)
    start, stop = brain_bbox(mask)
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    return normalize(stack[(slice(None), *box)], mask[box], "robust")


def _summary(times: list[float]) -> dict[str, float | list[float]]:
    return {"median": statistics.median(times), "runs": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", type=int, nargs=3, default=SEGMENTATION_CROP, metavar=("Z", "Y", "X"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (a data-loader worker uses 1; default: torch's choice)")
    parser.add_argument("--note", default="", help="what the machine was doing (e.g. shared with a training run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "synthesis_speed.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    label_map = timed(lambda i: generate_label_map(args.seed, i), args.repeats, torch.device("cpu"))
    print(f"label map: {statistics.median(label_map):.2f} s (median of {args.repeats})", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        bank = write_label_bank(folder, args.repeats, args.seed, workers=1)
        dataset = SynthesisCropDataset(bank, tuple(args.crop), seed=args.seed, device=device)
        dataset[0]  # warm-up (first CUDA calls, allocator)
        crop = timed(lambda i: dataset[i + 1], args.repeats, device)
        print(f"on-the-fly crop {tuple(args.crop)}: {statistics.median(crop):.2f} s", flush=True)
        padded = [torch.from_numpy(np.pad(bank.labels(i), WARP_MARGIN)) for i in range(args.repeats)]
        cases: list[tuple[torch.Tensor, torch.Tensor]] = []
        synthesis = timed(lambda i: cases.append(synthesise_images(padded[i], torch_generator(1, i), device, warp=True)),
                          args.repeats, device)  # fmt: skip
        torch_prep = timed(lambda i: preprocess(*cases[i]), args.repeats, device)
        numpy_prep = timed(lambda i: _numpy_preprocess(cases[i][0]), args.repeats, device)
    result = {
        "benchmark": "synthesis_speed",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "note": args.note,
        "repeats": args.repeats,
        "crop_zyx": list(args.crop),
        "label_map_s": _summary(label_map),
        "crop_s": _summary(crop),
        "synthesis_s": _summary(synthesis),
        "preprocess_torch_s": _summary(torch_prep),
        "preprocess_numpy_s": _summary(numpy_prep),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key in ("label_map_s", "crop_s", "synthesis_s", "preprocess_torch_s", "preprocess_numpy_s"):
        print(f"{key}: {result[key]['median']:.2f} s")  # type: ignore[index]
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
