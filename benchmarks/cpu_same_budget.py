"""Same-budget comparison on a CPU: NSLF, its ablations and the segmentation baselines, all trained
from scratch with one small recipe, then scored on the held-out cases (issues 15.6, 16.3, 16.4).

The shipped default was trained on a lent GPU (about 10,000 stage-3 samples); a baseline trained
with that budget needs the same GPU. This script makes the like-for-like rows a 2-core CPU can
afford: every method sees the same training cases, split, crops, crops per case, ET share,
augmentation, loss and schedule (:data:`RECIPES`, ``--recipe``; NSLF's stage 3 and each baseline share
:func:`device_run.stage_options`), counted in samples, not seconds, so a busy machine changes the
time and not the result. NSLF and its ablations (:data:`device_run.ABLATIONS`) run all three
stages; a baseline trains what NSLF's stage 3 trains, with the same options. Model selection is
the centre-crop validation loss for all (no whole-case validation: the baselines have none).

Each trained model lands in ``OUT/models/<name>.pt`` as soon as it exists, with its training
figures in ``OUT/same_budget.json``; a rerun skips the models already there and resumes an
interrupted one after its last completed epoch (NSLF's stage checkpoints, a baseline's
``baseline_last.pt``), then scores them all with :func:`nslfcore.compare.compare` on ``--test``
(``OUT/compare``: per-case CSVs, ``tables.md``, figures; resumable as well; with ``--window Z Y X``
every model infers with a sliding window of that size instead of the whole brain box, into
``OUT/compare-window-ZxYxX``). Every run also draws
each method's stage-3 validation Dice against the samples seen (``OUT/validation_curves.png``
and ``.json``).

To stop an NSLF method without losing the epoch in progress, create the file ``STOP`` in its
stage's folder (``OUT/work/<method>/stage<N>/STOP``): the trainer saves its state after the
current step, and the script exits with status 3 without starting another stage or method; the
next run resumes from that step (it removes the ``STOP`` file). A baseline resumes after its last
completed epoch.

``--device cuda`` trains and scores with the same recipe on a GPU (``benchmarks/same_budget_gpu.sh``
runs several methods and seeds side by side on a lent one): in float32 as on the CPU, with no bf16
autocast and no TF32, so that only the hardware's order of arithmetic differs from a CPU row.

    python benchmarks/cpu_same_budget.py --data TRAIN_DIR --test HELDOUT_DIR --out OUT \
        [--recipe cpu-1216] [--methods nslf unet ...] [--no-evaluate] [--window Z Y X] [--device cpu|cuda] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from device_run import ABLATIONS, stage_options  # noqa: E402

#: The first recipe, per stage: crop ``(z, y, x)``, batch, crops per training case per epoch,
#: epochs, learning rates and stage 3's options of the GPU recipe (per-class Dice, 90 % of crops
#: on tumour, 40 % on enhancing tumour, strong augmentation with bright structures). With the 19
#: training cases of ``nslf phantom --n 24 --seed 1000`` (the seeded 80/20 split): 228 stage-1,
#: 228 stage-2 and 304 stage-3 samples: 36 min for NSLF (three stages) and 39 min for the U-Net on
#: this project's 2-core CPU while other jobs shared it (``benchmarks/RESULTS.md``). Too short for
#: either to segment; kept so that its rows stay reproducible.
RECIPE_304: dict[int, dict[str, Any]] = {
    1: {"crop": (64, 96, 96), "batch_size": 2, "samples_per_case": 4, "epochs": 3, "lr": 1e-3,
        "fine_tune_lr": 1e-4, "augmentation": "light"},
    2: {"crop": (64, 96, 96), "batch_size": 2, "samples_per_case": 4, "epochs": 3, "lr": 1e-3,
        "fine_tune_lr": 1e-4, "augmentation": "light"},
    3: {"crop": (64, 128, 128), "batch_size": 2, "samples_per_case": 4, "epochs": 4, "lr": 1e-3,
        "fine_tune_lr": 1e-4, "dice_average": "class", "tumour_fraction": 0.9, "et_fraction": 0.4,
        "augmentation": "strong-bright"},
}  # fmt: skip
#: The default: stages 1-2 as :data:`RECIPE_304` (so one NSLF stage 1-2 serves both), stage 3
#: with 4x the samples in smaller crops: 16 epochs of 48 x 96 x 96, 1,216 samples (over 1,000 per
#: method), 1.69x the stage-3 voxels of :data:`RECIPE_304`.
RECIPE_1216: dict[int, dict[str, Any]] = RECIPE_304 | {3: RECIPE_304[3] | {"crop": (48, 96, 96), "epochs": 16}}
#: The recipes by name (``--recipe``).
RECIPES: dict[str, dict[int, dict[str, Any]]] = {"cpu-304": RECIPE_304, "cpu-1216": RECIPE_1216}
#: The same on tiny procedural phantoms (``--dry-run``, for the tests).
DRY_RECIPE: dict[int, dict[str, Any]] = {
    stage: spec | {"crop": (32, 64, 64), "samples_per_case": 1, "epochs": 1} for stage, spec in RECIPE_1216.items()
}
#: NSLF variants (trained through all three stages) and segmentation baselines
#: (:data:`nslfcore.segmentation_baselines.ARCHITECTURES`), in the order they train by default:
#: the rows issue 15 asks for first, then issue 16's.
NSLF_METHODS: dict[str, str] = {"nslf": "none", "fused-only": "fused-only", "no-gmn": "no-gmn",
                                "no-contrastive": "no-contrastive", "detail": "detail"}  # fmt: skip
BASELINE_METHODS = ("unet", "segresnet", "attention_unet", "vnet", "unetplusplus", "voxresnet")
DEFAULT_ORDER = ("nslf", "unet", "segresnet", "fused-only", "no-gmn", "no-contrastive", "attention_unet",
                 "voxresnet", "vnet", "unetplusplus")  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _stage_spec(recipe: dict[int, dict[str, Any]], stage: int) -> dict[str, Any]:
    return recipe[stage] | {"time_limit_s": None}


class MethodStopped(Exception):
    """An NSLF stage was stopped by its ``STOP`` file; its state is saved and a rerun resumes it."""


def float32_on(device: str) -> None:
    """Make ``device`` compute in plain float32 as the CPU does: TF32 off for convolutions and matrix
    products on CUDA (the recipe's options also turn bf16 autocast off); nothing to do on the CPU."""
    if device.startswith("cuda"):
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def train_nslf(name: str, data: Path, work: Path, recipe: dict[int, dict[str, Any]], workers: int,
               seed: int, device: str = "cpu") -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """NSLF ``fast`` (or the ablation ``NSLF_METHODS[name]``) through stages 1-3 from scratch; its stage-3 best file."""
    from nslfcore.config import PRESETS
    from nslfcore.training.checkpoint import load_checkpoint
    from nslfcore.training.progress import StageProgress
    from nslfcore.training.run import train
    from nslfcore.training.trainer import STOP_FILE

    ablation = ABLATIONS[NSLF_METHODS[name]]
    network = PRESETS["fast"].replace(**ablation.get("config", {}))
    stats: dict[str, Any] = {"kind": "nslf", "ablation": NSLF_METHODS[name], "stages": {}}
    previous: Path | None = None
    for stage in (1, 2, 3):
        run_dir = work / name / f"stage{stage}"
        best, state_file = run_dir / f"stage{stage}_best.pt", run_dir / f"stage{stage}.pt"
        started = StageProgress.from_checkpoint(load_checkpoint(state_file)) if state_file.exists() else None
        clock, finished = time.perf_counter(), started is not None and started.finished
        if not finished:  # a finished stage of an interrupted method is kept, an unfinished one resumed
            if started is None and run_dir.exists():
                shutil.rmtree(run_dir)
            options = stage_options(stage, _stage_spec(recipe, stage), workers, seed=seed, amp=False,
                                    **ablation.get("options", {}))  # fmt: skip
            where = f", resuming after epoch {started.epoch}" if started is not None else ""
            log(f"{name} stage {stage}: {options.epochs} epochs, crop {recipe[stage]['crop']}{where}")
            status = train(str(data), run_dir, network, options, device, run_dir / "events.jsonl", init=previous,
                           cache_dir=work / "cache", resume=started is not None)  # fmt: skip
            if status == "stopped":
                raise MethodStopped(f"{name} stage {stage} stopped by {run_dir / STOP_FILE}; its state is saved, rerun to resume")
        progress = load_checkpoint(state_file)["progress"]
        stats["stages"][str(stage)] = {"epochs": progress["epoch"], "steps": progress["step"],
                                       "samples": progress["step"] * recipe[stage]["batch_size"],
                                       "best_epoch": progress["best_epoch"],
                                       "seconds": None if finished else round(time.perf_counter() - clock, 1),
                                       "resumed_after_epoch": None if started is None or finished else started.epoch}  # fmt: skip
        previous = best
    assert previous is not None
    return previous, stats


def train_baseline_method(arch: str, data: Path, work: Path, recipe: dict[int, dict[str, Any]], workers: int,
                          seed: int, device: str = "cpu") -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Baseline ``arch`` with NSLF's stage-3 options of ``recipe``; its best file."""
    from nslfcore.baseline import train_baseline

    options = stage_options(3, _stage_spec(recipe, 3), workers, seed=seed, amp=False)
    log(f"{arch}: {options.epochs} epochs, crop {recipe[3]['crop']}")
    best = train_baseline(data, work / arch, arch=arch, recipe=options, device=device, seed=seed,
                          log=lambda line: log(f"   {line}"), resume=True)  # fmt: skip
    epochs = [json.loads(line) for line in (work / arch / "baseline_log.jsonl").read_text().splitlines() if line]
    steps = sum(e["steps"] for e in epochs)
    best_epoch = min(epochs, key=lambda e: e["loss"])["epoch"]
    return best, {"kind": "baseline", "arch": arch, "epochs": len(epochs), "steps": steps,
                  "samples": steps * options.batch_size, "best_epoch": best_epoch,
                  "seconds": round(sum(e["seconds"] for e in epochs), 1)}  # fmt: skip


def validation_curves(work: Path, summary: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """Per trained method, its stage-3 validation after each epoch: ``samples`` (stage-3 samples
    seen so far) and the centre-crop region Dice ``dice_et``, ``dice_tc``, ``dice_wt`` (NSLF's
    ``events.jsonl``, a baseline's ``baseline_log.jsonl``)."""
    batch = int(summary["recipe"]["3"]["batch_size"])
    curves: dict[str, list[dict[str, float]]] = {}
    for name, stats in summary.get("trained", {}).items():
        if stats["kind"] == "nslf":
            lines = (work / name / "stage3" / "events.jsonl").read_text().splitlines()
            events = [json.loads(line) for line in lines if '"validation"' in line or '"iteration"' in line]
            steps: dict[int, int] = {}  # the last optimiser step of each epoch
            for event in events:
                if event["event"] == "iteration":
                    steps[event["epoch"]] = event["step"]
            valid = {e["epoch"]: e["metrics"] for e in events if e["event"] == "validation" and e.get("stage") == 3}
            points = [{"samples": steps.get(epoch, 0) * batch, **metrics} for epoch, metrics in sorted(valid.items())]
        else:
            rows = [json.loads(line) for line in (work / name / "baseline_log.jsonl").read_text().splitlines() if line]
            seen = 0
            points = []
            for row in rows:
                seen += row["steps"] * batch
                points.append({"samples": seen, **row})
        curves[name] = [{key: float(p[key]) for key in ("samples", "dice_et", "dice_tc", "dice_wt")} for p in points]
    return curves


def validation_figure(curves: dict[str, list[dict[str, float]]], path: Path) -> Path:
    """ET, TC and WT validation Dice against stage-3 samples seen, one line per method (PNG)."""
    from nslfcore.comparison_figures import _pyplot  # matplotlib, headless, with nslf compare's install hint

    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for axis, region in zip(axes, ("et", "tc", "wt")):
        for name, points in curves.items():
            style = "-" if name in NSLF_METHODS else "--"
            axis.plot([p["samples"] for p in points], [p[f"dice_{region}"] for p in points], style, marker="o",
                      markersize=3, label=name)  # fmt: skip
        axis.set_title(f"{region.upper()}: validation Dice (centre crops)")
        axis.set_xlabel("stage-3 samples seen")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[-1].legend(loc="upper left", fontsize=8, title="solid: NSLF, dashed: baselines", title_fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="training cases (e.g. nslf phantom --n 24 --seed 1000)")
    parser.add_argument("--test", type=Path, required=True, help="held-out labelled cases to score on")
    parser.add_argument("--out", type=Path, required=True, help="models/, same_budget.json, compare/ (resumes what is there)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_ORDER),
                        choices=(*NSLF_METHODS, *BASELINE_METHODS), help="what to train, in this order")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="data-loading worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-evaluate", action="store_true", help="train only")
    parser.add_argument("--metrics-2d", type=int, default=None, help="also the 2-D fusion metrics on N slices per case")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N held-out cases")
    parser.add_argument("--recipe", choices=RECIPES, default="cpu-1216", help="training budget (default cpu-1216)")
    parser.add_argument("--window", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="score with a sliding window of this size (voxels), e.g. the stage-3 crop, into "
                             "OUT/compare-window-ZxYxX (default: whole brain box, OUT/compare)")  # fmt: skip
    parser.add_argument("--device", default="cpu",
                        help="torch device to train and score on (default cpu; cuda: float32, no autocast, no TF32)")
    parser.add_argument("--dry-run", action="store_true", help="tiny crops and one epoch per stage (tests)")
    args = parser.parse_args(argv)
    # The memory-mapped case cache hands MONAI read-only arrays; its transforms copy them anyway.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

    recipe = DRY_RECIPE if args.dry_run else RECIPES[args.recipe]
    float32_on(args.device)
    models, work = args.out / "models", args.out / "work"
    models.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "same_budget.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    written_recipe = {str(stage): {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
                      for stage, spec in recipe.items()}  # fmt: skip
    if summary.get("trained") and summary.get("recipe") != written_recipe:
        parser.error(f"{args.out} holds models trained with another recipe ({summary.get('recipe_name', 'unnamed')}); "
                     "use another --out")  # fmt: skip
    summary["recipe"] = written_recipe
    summary |= {"data": str(args.data.resolve()), "seed": args.seed, "dry_run": args.dry_run, "device": args.device,
                "recipe_name": "dry-run" if args.dry_run else args.recipe}
    trained = summary.setdefault("trained", {})
    for name in args.methods:
        target = models / f"{name}.pt"
        if target.exists():
            log(f"{name}: {target} exists, skipped")
            continue
        trainer = train_nslf if name in NSLF_METHODS else train_baseline_method
        try:
            best, stats = trainer(name, args.data, work, recipe, args.workers, args.seed, args.device)
        except MethodStopped as stopped:
            summary_path.write_text(json.dumps(summary, indent=1))
            log(str(stopped))
            return 3
        shutil.copyfile(best, target)
        trained[name] = stats | {"finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        summary_path.write_text(json.dumps(summary, indent=1))
        log(f"{name}: done -> {target}")
    summary_path.write_text(json.dumps(summary, indent=1))
    curves = validation_curves(work, summary)
    (args.out / "validation_curves.json").write_text(json.dumps(curves, indent=1))
    if curves:
        log(f"validation curves: {validation_figure(curves, args.out / 'validation_curves.png')}")
    if args.no_evaluate:
        return 0

    from nslfcore.compare import compare

    methods = [str(models / f"{name}.pt") for name in args.methods if (models / f"{name}.pt").exists()]
    scores = args.out / ("compare" if args.window is None else "compare-window-" + "x".join(map(str, args.window)))
    written = compare(args.test, scores, methods=methods, device=args.device, hd95_definition="pooled",
                      slices_2d=args.metrics_2d, limit=args.limit, figures=not args.dry_run,
                      progress=lambda method, done, total, case: log(f"[{method} {done}/{total}] {case}"),
                      window=args.window)  # fmt: skip
    log(f"tables: {written['tables']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
