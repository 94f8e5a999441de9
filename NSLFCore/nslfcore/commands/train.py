"""``nslf train``: nested three-stage NSLF training (see :mod:`nslfcore.training`)."""

from __future__ import annotations

import argparse
import sys

from nslfcore.config import PRESETS, NSLFConfig, get_config
from nslfcore.data.augmentation import AUGMENTATION_LEVELS
from nslfcore.data.validation import DataValidationError
from nslfcore.training.options import TrainingOptions
from nslfcore.training.recipe import RecipeError, list_recipes, load_recipe
from nslfcore.training.run import TrainingSetupError, train

_STAGES = {"1": (1,), "2": (2,), "3": (3,), "all": (1, 2, 3)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainingOptions()
    parser.add_argument("--data", required=True,
                        help="BraTS-layout folder, phantom:N, phantom-tiny:N or synth:BANK (nslf synth --bank); "
                             "with --recipe, the folder of the recipe's cases (generated there when it holds none)")  # fmt: skip
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help=f"train as a recipe says ({', '.join(list_recipes())}, or a recipe .json file): its cases "
                             "into --data, its stages into --out/stage<N>, the model as --out/<NAME>.pt; it fixes every "
                             "training option (only --device, --resume, --cache-dir and --events go with it)")  # fmt: skip
    parser.add_argument("--stage", default="all", choices=sorted(_STAGES), help="stage to train (default: all)")
    parser.add_argument("--config", default=None,
                        help=f"network configuration: {sorted(PRESETS)} or a .json file (default: the --init file's, "
                             "else fast, the shipped model's)")  # fmt: skip
    parser.add_argument("--out", required=True, help="run folder (checkpoints, run.json, events)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
    parser.add_argument("--init", default=None, metavar="FILE",
                        help="start from this model's weights (fine-tune), e.g. a stage3_best.pt or a shipped model")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="maximum epochs per stage")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="learning rate of the trained parts")
    parser.add_argument("--fine-tune-lr", type=float, default=defaults.fine_tune_lr)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs,
                        help="linear learning-rate warm-up, in epochs (may be fractional)")  # fmt: skip
    parser.add_argument("--patience", type=int, default=defaults.patience, help="early-stopping patience (epochs)")
    parser.add_argument("--fusion-crop", type=int, nargs=3, default=defaults.fusion_crop, metavar=("Z", "Y", "X"))
    parser.add_argument("--segmentation-crop", type=int, nargs=3, default=defaults.segmentation_crop, metavar=("Z", "Y", "X"))
    parser.add_argument("--tumour-fraction", type=float, default=defaults.tumour_fraction)
    parser.add_argument("--et-fraction", type=float, default=defaults.et_fraction,
                        help="share of training crops centred on enhancing tumour (default 0)")  # fmt: skip
    parser.add_argument("--augmentation", choices=AUGMENTATION_LEVELS, default=defaults.augmentation,
                        help="training augmentation level (default light; strong for robustness to unseen scanners, "
                             "strong-bright also to structures brighter than the tumour)")  # fmt: skip
    parser.add_argument("--samples-per-case", type=int, default=defaults.samples_per_case,
                        help="random training crops of each case per epoch")  # fmt: skip
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="cap the steps of an epoch")
    parser.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                        help="stop gracefully after N epochs of a stage "
                             "(the schedule still spans --epochs; --resume continues)")  # fmt: skip
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="wall-clock seconds per stage; past it the epoch ends early, "
                             "is validated and the stage finishes")  # fmt: skip
    parser.add_argument("--case-validation-every", type=int, default=None, metavar="N",
                        help="stage 3: every N epochs and at the last, segment whole validation cases as "
                             "nslf run does and select the best epoch on their mean Dice (ET, TC, WT)")  # fmt: skip
    parser.add_argument("--case-validation-max-cases", type=int, default=defaults.case_validation_max_cases,
                        metavar="N", help="score at most the first N validation cases whole")  # fmt: skip
    parser.add_argument("--workers", type=int, default=defaults.num_workers, help="data-loading worker processes")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step")
    parser.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--no-contrastive", action="store_true", help="ablation: stage 1 without the contrastive term")
    parser.add_argument("--no-gmn", action="store_true", help="ablation: no geometric matching network")
    parser.add_argument("--fused-only", action="store_true", help="ablation: the segmenter sees only the fused volume")
    parser.add_argument("--segmentation-output", choices=("classes", "regions"), default=None,
                        help="FSD outputs: 4 softmax classes (the paper) or 3 sigmoid regions WT, TC, ET "
                             "(as nnU-Net trains BraTS); default: the configuration's")  # fmt: skip
    parser.add_argument(
        "--loss-weight", action="append", default=[], metavar="STAGEN.TERM=W",
        help="override a loss-term weight, e.g. stage2.ssim=2 (repeatable; terms as in nslfcore.losses)",
    )  # fmt: skip
    parser.add_argument("--sequence-dropout", type=float, default=defaults.sequence_dropout, metavar="P",
                        help="probability that a training crop loses one sequence (all zeros), so that the model "
                        "works on any three of the four (default 0)")  # fmt: skip
    parser.add_argument("--dice-average", default=defaults.dice_average, choices=("pooled", "class"),
                        help="stage-3 Dice over the tumour classes: pooled (public code) or class (per class, averaged; "
                             "helps small classes such as ET)")  # fmt: skip
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="keep preprocessed cases in DIR (memory-mapped .npy) so later runs skip preprocessing")  # fmt: skip
    parser.add_argument("--events", default=None, help="write JSON-lines events to FILE, or - for stdout")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train NSLF stage by stage (nested self-supervised training)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def _loss_weights(items: list[str]) -> tuple[tuple[str, float], ...]:
    pairs = []
    for item in items:
        name, _, value = item.partition("=")
        try:
            pairs.append((name.strip(), float(value)))
        except ValueError:
            raise ValueError(f"--loss-weight {item!r} must look like stage2.ssim=2.0.") from None
        if not name.startswith(("stage1.", "stage2.", "stage3.")):
            raise ValueError(f"--loss-weight {item!r} must name a stage: stage1., stage2. or stage3.")
    return tuple(pairs)


def options_from_args(args: argparse.Namespace) -> TrainingOptions:
    return TrainingOptions(
        loss_weights=_loss_weights(args.loss_weight),
        stages=_STAGES[args.stage],
        epochs=args.epochs,
        lr=args.lr,
        fine_tune_lr=args.fine_tune_lr,
        batch_size=args.batch_size,
        patience=args.patience,
        warmup_epochs=args.warmup_epochs,
        fusion_crop=tuple(args.fusion_crop),
        segmentation_crop=tuple(args.segmentation_crop),
        tumour_fraction=args.tumour_fraction,
        et_fraction=args.et_fraction,
        augmentation=args.augmentation,
        samples_per_case=args.samples_per_case,
        max_steps_per_epoch=args.steps_per_epoch,
        stop_after_epochs=args.stop_after_epochs,
        time_limit_s=args.time_limit,
        case_validation_every=args.case_validation_every,
        case_validation_max_cases=args.case_validation_max_cases,
        num_workers=args.workers,
        seed=args.seed,
        deterministic=args.deterministic,
        compile=args.compile,
        amp=not args.no_amp,
        contrastive=not args.no_contrastive,
        dice_average=args.dice_average,
        sequence_dropout=args.sequence_dropout,
    )


def default_config(init: str | None) -> NSLFConfig:
    """Without ``--config``: the configuration stored in the ``--init`` model file, else ``fast``."""
    if init is not None:
        from nslfcore.training.checkpoint import load_checkpoint

        try:
            return NSLFConfig.from_json(load_checkpoint(init)["config"])
        except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
            raise TrainingSetupError(f"--init {init}: {error}") from None
    return PRESETS["fast"]


#: What goes with ``--recipe``; every other argument is the recipe's to set.
_RECIPE_ARGUMENTS = ("recipe", "data", "out", "device", "resume", "cache_dir", "events")


def _fixed_by_recipe(args: argparse.Namespace) -> list[str]:
    """The arguments given with ``--recipe`` that the recipe fixes: those that differ from their defaults."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args(["--data", "-", "--out", "-"]))
    return [f"--{name.replace('_', '-')}" for name, default in defaults.items()
            if name not in _RECIPE_ARGUMENTS and _plain(getattr(args, name, default)) != _plain(default)]  # fmt: skip


def _plain(value: object) -> object:
    """A tuple default as the list argparse makes of a given value (``--fusion-crop 64 80 80``)."""
    return list(value) if isinstance(value, tuple) else value


def _train_recipe(args: argparse.Namespace) -> str:
    """``nslf train --recipe``: :func:`~nslfcore.training.recipe_run.run_recipe` on the recipe named."""
    from nslfcore.training.recipe_run import run_recipe

    fixed = _fixed_by_recipe(args)
    if fixed:
        raise RecipeError(f"--recipe {args.recipe} sets every training option; leave out {', '.join(fixed)} "
                          "(or train without --recipe).")  # fmt: skip
    recipe = load_recipe(args.recipe)
    status = run_recipe(recipe, args.data, args.out, args.device, args.resume, args.cache_dir, args.events,
                        progress=lambda message: print(f"nslf train: {message}", file=sys.stderr))  # fmt: skip
    if status == "completed":
        print(f"nslf train: recipe {recipe.name} completed; model {args.out}/{recipe.name}.pt", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    try:
        if args.recipe is not None:
            status = _train_recipe(args)
        else:
            config = get_config(args.config) if args.config is not None else default_config(args.init)
            if args.no_gmn:
                config = config.replace(use_gmn=False)
            if args.fused_only:
                config = config.replace(segmenter_input="fused_only")
            if args.segmentation_output is not None:
                config = config.replace(segmentation_output=args.segmentation_output)
            status = train(args.data, args.out, config, options_from_args(args), args.device, args.events, args.resume,
                           args.init, args.cache_dir)
    except (TrainingSetupError, DataValidationError, FileNotFoundError, ValueError) as error:
        print(f"nslf train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nslf train: interrupted; continue with --resume", file=sys.stderr)
        return 130
    print(f"nslf train: {status}; run folder {args.out}", file=sys.stderr)
    return 0 if status == "completed" else 3
