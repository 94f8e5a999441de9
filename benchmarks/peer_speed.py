"""Peer speed: NSLF against the networks a Slicer user would pick instead, on one brain box on the CPU.

Networks (``--networks``; all by default):

- ``nslf-shipped``: the shipped default model (:func:`nslfcore.model_store.load_model`; from v3
  the ``fast`` configuration), the bare network: :meth:`nslfcore.models.NSLF.predict` (fusion and
  segmentation from one batched pass). The reference of the ratios.
- ``nslf-shipped-run``: the same model through :func:`nslfcore.inference.run` end to end on the
  whole 240 x 240 x 155 case in memory (brain mask, crop, normalisation, the pass it chooses, paste
  back, labels); its own memory format (channels-last-3d) and mode (``auto``).
- ``nslf-compact``, ``nslf-compact-run``: the same for ``PRESETS["compact"]`` (full resolution,
  the default up to v2) with seeded random weights (the speed does not depend on them).
- ``nslf-fast``, ``nslf-fast-run``: the same for ``PRESETS["fast"]`` (the compact widths with
  ``feature_stride=2``: CU-Net, FCD and FSD on the 2x coarser grid; issue 14's redesign), random weights.
- ``nslf-paper``, ``nslf-paper-run``: the same for ``PRESETS["paper"]`` with seeded random weights.
- ``segresnet16``: MONAI's BraTS bundle network, :class:`monai.networks.nets.SegResNet` (init
  filters 16, blocks down 1-2-2-4, up 1-1-1, 4 in, 3 out; 4.70 M parameters).
- ``segresnet32``: the SlicerMONAIAuto3DSeg BraTS size, :class:`~monai.networks.nets.SegResNet`
  (init filters 32, blocks down 1-2-2-4-4, up 1-1-1-1; 82.6 M parameters). Auto3DSeg trains the
  deep-supervision variant ``SegResNetDS`` (same encoder and decoder, instance norm, 87.2 M); at
  inference it costs the same convolutions, so the plain class stands in for it.
- ``nnunet``: nnU-Net v2's default 3-D full-resolution U-Net as nnU-Net plans it for BraTS, built
  with MONAI's :class:`~monai.networks.nets.DynUNet` (30.8 M parameters): 6 stages of two
  conv-instance norm-leaky ReLU (0.01) blocks, kernels 3, features 32-64-128-256-320-320 (capped
  at 320), strides (1, 2, 2, 2, 2, 2) with the last (2, 2, 1). Why that plan: nnU-Net's BraTS
  patch is 128 x 160 x 112 (z, y, x: the median brain box, ~140 x 171 x 137, shrunk to fit its GPU
  memory target), and its planner halves an axis while the feature map stays >= 8 voxels and
  even: z 128 -> 4 and y 160 -> 5 take 5 poolings, x 112 -> 7 only 4, hence (2, 2, 1) last. Deep
  supervision heads are off, as at nnU-Net's inference. The whole box is padded to (32, 32, 16).

Input: the brain box of one BraTS-size phantom case (:func:`nslfcore.data.phantom.generate_case`,
seed 11, as ``inference_speed.py``), cropped and normalised as :func:`nslfcore.inference.run`
does (:func:`nslfcore.data.transforms.preprocess_case`), ``(1, 4, z, y, x)`` float32; the whole
box in one pass, zero-padded by each network to its multiple (NSLF pads itself, to 16). Peers
have seeded random weights: the speed of a dense network does not depend on them.

Procedure: one process, ``torch.inference_mode``, the default thread count for every network,
``--precision bf16``: :func:`torch.autocast` ``("cpu", bfloat16)`` around every call (``run()``
included). Each network first runs once on a small box (so one-time initialisation is paid before
anything is timed), then once on the full box in each memory format (contiguous and
channels-last-3d); the faster one is kept and reported. Then ``--rounds`` interleaved rounds (A,
B, C, ..., A, B, C, ...); median and min-max per network, and the ratio of each median to the
shipped model's bare-network median (> 1: the shipped NSLF is faster). Peak resident memory
(``VmHWM``) of each network in a fresh child process (``--child NAME``: one call on the box read from a file, in
the kept format), with what the process held before the call.

Writes ``benchmarks/results/peer_speed_cpu_<precision>.json`` (or ``--out``) and prints a
Markdown table.

    python benchmarks/peer_speed.py [--precision fp32|bf16] [--networks A,B,...] [--rounds N]
                                    [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from inference_speed import CASE_SEED, RESULTS, build_model, peak_rss_mib  # noqa: E402

from nslfcore.data.brats import find_cases, load_case  # noqa: E402
from nslfcore.data.case import Case  # noqa: E402
from nslfcore.data.phantom import generate_case, generate_tiny_case, write_case  # noqa: E402
from nslfcore.data.transforms import preprocess_case  # noqa: E402
from nslfcore.inference import run  # noqa: E402

#: ``--quick``: a tiny phantom (z, y, x) whose brain box still pads to every network's multiple.
QUICK_SIZE = (40, 48, 44)
#: The small box each network runs on once before anything is timed.
WARMUP_BOX = (32, 32, 32)
#: The reference every ratio is taken against.
REFERENCE = "nslf-shipped"
#: ``run()``'s own precision option where it has one (else it runs fp32 on the CPU), so the outer autocast decides.
RUN_PRECISION = {p: {"precision": p} for p in ("fp32", "bf16")} if "precision" in inspect.signature(run).parameters else {}
FORMATS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


@dataclass(frozen=True)
class Entry:
    """One row of the table: how to build the network and what one timed call does.

    ``multiple``: the padding multiple per axis (z, y, x) of a peer (``None``: NSLF pads itself);
    ``end_to_end``: the call is :func:`nslfcore.inference.run` on the case, not the network on the box.
    """

    label: str
    build: Callable[[], torch.nn.Module]
    multiple: tuple[int, int, int] | None = None
    end_to_end: bool = False


def _nslf(config: str) -> Callable[[], torch.nn.Module]:
    return lambda: build_model(config)[0]


def _segresnet(init_filters: int, blocks_down: tuple[int, ...]) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from monai.networks.nets import SegResNet

        torch.manual_seed(0)
        blocks_up = (1,) * (len(blocks_down) - 1)
        net = SegResNet(blocks_down=blocks_down, blocks_up=blocks_up, init_filters=init_filters, in_channels=4, out_channels=3)
        return net.eval()

    return build


NNUNET_STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 1))
NNUNET_FEATURES = (32, 64, 128, 256, 320, 320)


def _nnunet() -> torch.nn.Module:
    """nnU-Net's 3-D full-resolution BraTS plan as a MONAI DynUNet (see the module docstring)."""
    from monai.networks.nets import DynUNet

    torch.manual_seed(0)
    net = DynUNet(
        spatial_dims=3, in_channels=4, out_channels=3, kernel_size=[(3, 3, 3)] * len(NNUNET_STRIDES),
        strides=NNUNET_STRIDES, upsample_kernel_size=NNUNET_STRIDES[1:], filters=NNUNET_FEATURES,
        norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        deep_supervision=False, res_block=False,
    )  # fmt: skip
    return net.eval()


def _multiple(strides: tuple[tuple[int, int, int], ...]) -> tuple[int, int, int]:
    return tuple(int(np.prod([s[axis] for s in strides])) for axis in range(3))  # type: ignore[return-value]


ENTRIES: dict[str, Entry] = {
    "nslf-shipped": Entry("NSLF shipped default, network: fuse + segment", _nslf("shipped")),
    "nslf-shipped-run": Entry("NSLF shipped default, `run()` end to end", _nslf("shipped"), end_to_end=True),
    "nslf-compact": Entry("NSLF compact (full resolution; random weights), network: fuse + segment", _nslf("compact")),
    "nslf-compact-run": Entry("NSLF compact (random weights), `run()` end to end", _nslf("compact"), end_to_end=True),
    "nslf-fast": Entry("NSLF fast (feature stride 2; random weights), network: fuse + segment", _nslf("fast")),
    "nslf-fast-run": Entry("NSLF fast (random weights), `run()` end to end", _nslf("fast"), end_to_end=True),
    "nslf-paper": Entry("NSLF paper (random weights), network: fuse + segment", _nslf("paper")),
    "nslf-paper-run": Entry("NSLF paper (random weights), `run()` end to end", _nslf("paper"), end_to_end=True),
    "segresnet16": Entry("SegResNet-16 (MONAI BraTS bundle: init 16, blocks 1-2-2-4)", _segresnet(16, (1, 2, 2, 4)), (8, 8, 8)),
    "segresnet32": Entry(
        "SegResNet-32 (MONAIAuto3DSeg BraTS: init 32, blocks 1-2-2-4-4)", _segresnet(32, (1, 2, 2, 4, 4)), (16, 16, 16)
    ),
    "nnunet": Entry("nnU-Net 3d_fullres (DynUNet, 32-320, strides to (2, 2, 1))", _nnunet, _multiple(NNUNET_STRIDES)),
}


def pad_to(x: torch.Tensor, multiple: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad ``x`` ``(B, C, z, y, x)`` symmetrically to ``multiple`` per axis; the slices that crop it back."""
    pads, crop = [], []
    for size, m in zip(x.shape[2:], multiple):
        total = -size % m
        pads.append((total // 2, total - total // 2))
        crop.append(slice(total // 2, total // 2 + size))
    return F.pad(x, [v for pair in reversed(pads) for v in pair]), (Ellipsis, *crop)


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


class Call:
    """One timed unit of work of an :class:`Entry`: the network on the box, or ``run()`` on the case."""

    def __init__(self, entry: Entry, box: np.ndarray, case: Case, precision: str) -> None:
        self.entry, self.case, self.precision = entry, case, precision
        self.model = entry.build()
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.box = torch.from_numpy(np.ascontiguousarray(box))[None]
        self.format = "channels_last_3d (run's own)" if entry.end_to_end else "contiguous"
        self.run_info: dict[str, object] = {}

    def set_format(self, name: str) -> None:
        self.format = name
        self.model.to(memory_format=FORMATS[name])
        self.box = self.box.contiguous(memory_format=FORMATS[name])

    def __call__(self, box: torch.Tensor | None = None) -> float:
        """Seconds for one call (on ``box`` instead of the full box or case when given)."""
        x = self.box if box is None else box.contiguous(memory_format=FORMATS.get(self.format, torch.contiguous_format))
        start = time.perf_counter()
        with torch.inference_mode(), precision_context(self.precision):
            if self.entry.end_to_end and box is None:
                result = run(self.case, self.model, device="cpu", **RUN_PRECISION.get(self.precision, {}))
                self.run_info = {"mode": result.mode, "precision": getattr(result, "precision", self.precision)}
                self.run_info["timings_s"] = result.timings
            elif self.entry.multiple is None:
                self.model.predict(x)  # type: ignore[operator]
            else:
                padded, crop = pad_to(x, self.entry.multiple)
                self.model(padded)[crop]
        return time.perf_counter() - start


def load_input(quick: bool) -> tuple[Case, np.ndarray]:
    """The case (seed :data:`CASE_SEED`; tiny with ``quick``) and its normalised brain box ``(4, z, y, x)``."""
    case = generate_tiny_case(seed=CASE_SEED, size=QUICK_SIZE) if quick else generate_case(seed=CASE_SEED)
    return case, preprocess_case(case).image


def child(name: str, precision: str, memory_format: str, case_dir: Path) -> None:
    """Build one network, read the case, call it once; print peak RSS (MiB) and RSS before the call as JSON."""
    case = load_case(find_cases(case_dir)[0])
    call = Call(ENTRIES[name], preprocess_case(case).image, case, precision)
    if not ENTRIES[name].end_to_end:
        call.set_format(memory_format)
    before = peak_rss_mib()
    call()
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "before_mib": before}))


def measure_rss(name: str, precision: str, memory_format: str, case_dir: Path) -> dict[str, float]:
    args = [sys.executable, __file__, "--child", name, "--precision", precision, "--memory-format", memory_format,
            "--case-dir", str(case_dir)]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-RSS child for {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False).stdout.rstrip()


def environment() -> dict[str, object]:
    """CPU, cores, torch, threads, date, and the commit measured (with nslfcore's uncommitted files, if any)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {
        "cpu": model or os.uname().machine,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in cpuinfo,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1_5_15": os.getloadavg(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "nslfcore_uncommitted": sorted(line[3:] for line in _git("status", "--porcelain", "NSLFCore/nslfcore").splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--networks", default=",".join(ENTRIES), help=f"comma-separated, of {', '.join(ENTRIES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"tiny {QUICK_SIZE} phantom, 1 round (a test)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=tuple(ENTRIES), help=argparse.SUPPRESS)
    parser.add_argument("--memory-format", choices=tuple(FORMATS), default="contiguous", help=argparse.SUPPRESS)
    parser.add_argument("--case-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.precision, args.memory_format, args.case_dir)
        return
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ENTRIES))
    if unknown:
        parser.error(f"unknown networks {unknown}; choose from {', '.join(ENTRIES)}")
    rounds = 1 if args.quick else args.rounds

    load_at_start = os.getloadavg()
    case, box = load_input(args.quick)
    print(f"brain box {box.shape[1:]} (z, y, x), {args.precision}, {torch.get_num_threads()} threads", flush=True)
    calls = {name: Call(ENTRIES[name], box, case, args.precision) for name in names}
    warmup = torch.rand(1, 4, *WARMUP_BOX)
    format_s: dict[str, dict[str, float]] = {}
    for name, call in calls.items():
        call(warmup)
        if call.entry.end_to_end:
            format_s[name] = {"warm-up": call()}
            continue
        for fmt in FORMATS:
            call.set_format(fmt)
            format_s.setdefault(name, {})[fmt] = call()
        call.set_format(min(format_s[name], key=format_s[name].get))
        print(f"{name}: {', '.join(f'{k} {v:.2f} s' for k, v in format_s[name].items())} -> {call.format}", flush=True)

    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name, call in calls.items():
            times[name].append(call())
        print(f"round {index + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)

    with tempfile.TemporaryDirectory(prefix="nslf-peer-") as folder:
        write_case(case, folder)
        rss = {name: measure_rss(name, args.precision, call.format.split()[0], Path(folder)) for name, call in calls.items()}

    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = medians.get(REFERENCE)
    networks = {
        name: {
            "label": call.entry.label,
            "parameters": call.parameters,
            "memory_format": call.format,
            "format_trial_s": format_s[name],
            "times_s": times[name],
            "median_s": medians[name],
            "min_s": min(times[name]),
            "max_s": max(times[name]),
            "peak_rss_mib": rss[name]["peak_rss_mib"],
            "rss_before_call_mib": rss[name]["before_mib"],
            "ratio_vs_nslf_shipped": None if reference is None else medians[name] / reference,
            "run": call.run_info or None,
        }
        for name, call in calls.items()
    }
    result = {
        "benchmark": "peer_speed",
        "environment": {**environment(), "load_average_at_start": load_at_start},
        "device": "cpu",
        "precision": args.precision,
        "rounds": rounds,
        "quick": args.quick,
        "case": f"phantom seed {CASE_SEED}, grid {case.geometry.shape}, brain box {tuple(box.shape[1:])} (z, y, x)",
        "reference": REFERENCE,
        "networks": networks,
    }
    path = args.out or RESULTS / f"peer_speed_cpu_{args.precision}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print("\n| network | parameters | memory format | median (s) | min - max (s) | peak RSS (GiB) | ratio to NSLF shipped |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for row in networks.values():
        ratio = "n/a" if row["ratio_vs_nslf_shipped"] is None else f"{row['ratio_vs_nslf_shipped']:.2f}"
        print(f"| {row['label']} | {row['parameters'] / 1e6:.2f} M | {row['memory_format']} | {row['median_s']:.2f} | "
              f"{row['min_s']:.2f} - {row['max_s']:.2f} | {row['peak_rss_mib'] / 1024:.2f} | {ratio} |")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
