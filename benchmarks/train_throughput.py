"""Training throughput: our stage-2 and stage-3 steps versus the public code's loop.

The reference re-states the authors' training loop (github ImZhangyYing/NLSF,
``train_fusenet_gsvl.py`` and ``train_segnet.py``) on the same networks and data: the four
modalities and the fused volume each go through CU-Net in a separate call (five calls in stage 2,
four in stage 3), the FCD up-samples each modality separately, each loss term is computed per
source, 3-D SSIM uses a full (non-separable) 11^3 Gaussian window as the public ``SSIM3D`` does,
and everything runs in fp32 with the default memory format. Ours is :class:`StageStep` (one
batched CU-Net call, separable SSIM, grouped losses) in channels-last-3d (faster with oneDNN on
CPU and cuDNN on GPU) plus, on CUDA, bf16 autocast: exactly what the trainer runs.

Both run in one process on the same crops, interleaved in rounds, after warm-up steps.
Writes ``benchmarks/results/train_throughput.json`` and a Markdown row to stdout.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--config compact|paper] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nslfcore.config import PRESETS
from nslfcore.losses import CLASS_WEIGHTS, DVFSmoothnessLoss, SourceLNCCLoss
from nslfcore.models import NSLF
from nslfcore.models.cunet import CUNetOutput
from nslfcore.training.options import TrainingOptions
from nslfcore.training.stages import STAGES, StageStep, stage_for

RESULTS = Path(__file__).parent / "results"


def _full_window_ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM with a full 3-D Gaussian window and zero padding, averaged over all voxels (public SSIM3D)."""
    coords = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None, None] * g[None, :, None] * g[None, None, :]).reshape(1, 1, window, window, window)
    pad = window // 2
    mu_a, mu_b = F.conv3d(a, kernel, padding=pad), F.conv3d(b, kernel, padding=pad)
    s_aa = F.conv3d(a * a, kernel, padding=pad) - mu_a**2
    s_bb = F.conv3d(b * b, kernel, padding=pad) - mu_b**2
    s_ab = F.conv3d(a * b, kernel, padding=pad) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))).mean()


class PublicLoop:
    """The authors' per-modality training step on our networks (shared CU-Net weights, fp32)."""

    def __init__(self, model: NSLF, stage: int, options: TrainingOptions) -> None:
        self.model, self.stage = model, stage
        stage_object = stage_for(stage, options, model)
        stage_object.configure_trainable(model)
        self.optimizers = stage_object.build_optimizers(model, options)
        self.ncc = SourceLNCCLoss()
        self.smooth = DVFSmoothnessLoss(difference="forward")
        self.class_weights = torch.tensor(CLASS_WEIGHTS)

    def _features(self, xs: list[torch.Tensor]) -> list[CUNetOutput]:
        return [self.model.cunet(x) for x in xs]  # one call per image, as the public code

    def _fuse(self, outs: list[CUNetOutput], xs: list[torch.Tensor]) -> torch.Tensor:
        fcd = self.model.fcd
        raw = []
        for o in outs:  # FuseNet runs its up-sampler once per modality
            up = fcd.upsample(o.global_features[:, 0])
            raw.append(fcd.weight_head(torch.cat((up, o.local_features[:, 0]), dim=1)))
        total = sum(raw) + fcd.eps
        return sum(w / total * x for w, x in zip(raw, xs))

    def step(self, image: torch.Tensor, label: torch.Tensor) -> float:
        xs = [image[:, i : i + 1] for i in range(4)]
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        outs = self._features(xs)
        fused = self._fuse(outs, xs)
        voxels = fused[0, 0].numel()
        if self.stage == 2:
            fo = self.model.cunet(fused)  # the fifth CU-Net call
            reg = self.model.gmn(
                torch.cat([o.global_features for o in outs], 1),
                torch.cat([o.local_features for o in outs], 1),
                fo.global_features,
                fo.local_features,
                fused,
            )
            ncc = sum(self.ncc(reg.warped, x) for x in xs) / 4
            mse = sum(torch.norm(fused - x, 2) for x in xs) / 4
            ssim = sum(_full_window_ssim(fused, x) for x in xs) / 4
            light = torch.norm(fused - image.max(dim=1, keepdim=True).values, 2) / voxels
            loss = mse / voxels + ncc + self.smooth(reg.dvf) + 5 * light - 5 * ssim
        else:
            logits = self.model.fsd(torch.stack([o.local_features[:, 0] for o in outs], 1), fused)
            ce = F.cross_entropy(logits, label, weight=self.class_weights.to(logits.device))
            prob = logits.softmax(1)[:, 1:]
            onehot = F.one_hot(label, 4).permute(0, 4, 1, 2, 3)[:, 1:].float()
            dice = 1 - (2 * (prob * onehot).sum() + 1e-5) / (prob.sum() + onehot.sum() + 1e-5)
            loss = 0.5 * ce + 0.5 * dice
        loss.backward()
        for opt in self.optimizers.values():
            opt.step()
        return float(loss.detach())


class OurLoop:
    """Our training step: :class:`StageStep` (batched CU-Net), channels-last-3d, bf16 on CUDA."""

    def __init__(self, model: NSLF, stage: int, options: TrainingOptions, device: torch.device) -> None:
        stage_object = stage_for(stage, options, model)
        stage_object.configure_trainable(model)
        self.step_module = StageStep(model, stage_object, options)
        self.optimizers = stage_object.build_optimizers(model, options)
        self.cuda = device.type == "cuda"
        model.to(memory_format=torch.channels_last_3d)

    def step(self, image: torch.Tensor, label: torch.Tensor) -> float:
        image = image.contiguous(memory_format=torch.channels_last_3d)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else torch.autocast("cpu", enabled=False)
        with ctx:
            loss = self.step_module(image, label)["total"]
        loss.backward()
        for opt in self.optimizers.values():
            opt.step()
        return float(loss.detach())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(stage: int, args: argparse.Namespace, device: torch.device) -> dict:
    options = TrainingOptions()
    crop = tuple(args.crop) if args.crop else STAGES[stage]().crop(options)  # the paper's crop of the stage
    torch.manual_seed(0)
    base = PRESETS[args.config].replace(cunet_weights="shared")  # the public code shares CU-Net weights
    ours_model = NSLF(base).to(device)
    ref_model = NSLF(base).to(device)
    ref_model.load_state_dict(ours_model.state_dict())
    loops = {"ours": OurLoop(ours_model, stage, options, device), "public": PublicLoop(ref_model, stage, options)}
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 4, *crop, generator=g).to(device)
    label = torch.randint(0, 4, (1, *crop), generator=g).to(device)
    times: dict[str, list[float]] = {k: [] for k in loops}
    for name, loop in loops.items():
        for _ in range(args.warmup):
            loop.step(image, label)
    for _ in range(args.rounds):
        for name, loop in loops.items():  # interleaved rounds
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                loop.step(image, label)
            _sync(device)
            times[name].append((time.perf_counter() - start) / args.steps)
    per_step = {k: statistics.median(v) for k, v in times.items()}
    return {
        "stage": stage,
        "crop_zyx": list(crop),
        "samples_per_s": {k: 1.0 / v for k, v in per_step.items()},
        "seconds_per_step": per_step,
        "speedup": per_step["public"] / per_step["ours"],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="compact", choices=sorted(PRESETS))
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--crop", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = [measure(stage, args, device) for stage in args.stages]
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{_cpu_model()} ({os.cpu_count()} cores), {torch.get_num_threads()} threads"
    )
    report = {"benchmark": "train_throughput", "config": args.config, "device": str(device), "machine": machine,
              "torch": torch.__version__, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for r in results:
        print(f"| train_throughput | stage {r['stage']} | {args.config} | {machine} | crop {r['crop_zyx']} | "
              f"ours {r['samples_per_s']['ours']:.3f} samples/s | public {r['samples_per_s']['public']:.3f} samples/s | "
              f"x{r['speedup']:.2f} |")


if __name__ == "__main__":
    main()
