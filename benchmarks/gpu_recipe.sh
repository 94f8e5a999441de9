#!/usr/bin/env bash
# One training recipe (nslf train --recipe) on a lent GPU machine, and what comes back from it.
#
#   benchmarks/device_run.sh --prepare                  here, once (PyPI reachable): the wheels in .whl/
#   benchmarks/gpu_recipe.sh OUT RECIPE                 there (carry .whl): nslf train --recipe RECIPE
#                                                       --data $WORK/data --out $WORK/run --device cuda
#   benchmarks/gpu_recipe.sh OUT RECIPE --dry-run       here: the same on the CPU, the recipe cut down
#                                                       (3 minutes on 2 busy cores)
#
# e.g. the run device call: benchmarks/gpu_recipe.sh "$OUT" nslf-synth-fast-v6 (timeout_s 600).
#
# The run ends after NSLF_TIMEOUT seconds (default 560: a device call has at most 600), so that its
# logs still come back; the same command again on the still-warm machine resumes it (--resume) from
# its last finished epoch in NSLF_GPU_RECIPE_WORK (default /tmp/nslf-gpu-recipe; the data is kept).
# OUT receives:
#   <name>.pt             the recipe's model (once every stage finished), split into <name>.pt.part-aa,
#                         -ab, ... when over 15 MiB (the 16 MiB limit on a file brought back: rejoin with cat)
#   events.jsonl.gz       the training events (--events) of every stage
#   summary.txt           per stage and epoch: the validation metrics, and each stage's crops/s and end
#   train.log             the command's output (its last 2000 lines)
#
# --dry-run writes RECIPE cut down into $WORK/<name>-dry-run.json: a bank of 2 maps (or the recipe's
# first 2 cases of each entry), and in every stage 1 epoch of 1 step, batch 1, 32 x 64 x 64 crops,
# whole-case validation on 1 case, no time limit; everything else as RECIPE. PYTHON (default the
# checkout's .venv, else python3) and NSLF_DEVICE (default cuda, cpu with --dry-run) choose the rest.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 OUT RECIPE [--dry-run]" >&2; exit 2; }
OUT="$1" RECIPE="$2" DRY="${3:-}"
[ -z "$DRY" ] || [ "$DRY" = --dry-run ] || { echo "usage: $0 OUT RECIPE [--dry-run]" >&2; exit 2; }
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3; [ -x "$ROOT/.venv/bin/python" ] && PYTHON="$ROOT/.venv/bin/python"
fi
WORK="${NSLF_GPU_RECIPE_WORK:-/tmp/nslf-gpu-recipe}"
TIMEOUT="${NSLF_TIMEOUT:-560}"
DEVICE="${NSLF_DEVICE:-cuda}"
[ "$DRY" = --dry-run ] && DEVICE="${NSLF_DEVICE:-cpu}"
mkdir -p "$OUT" "$WORK"
if "$PYTHON" -c 'import monai, nibabel, SimpleITK' 2>/dev/null; then
  export PYTHONPATH="$ROOT/NSLFCore${PYTHONPATH:+:$PYTHONPATH}"
else
  eval "$(PYTHON="$PYTHON" "$ROOT/benchmarks/device_run.sh" --env)" || exit 1
fi
export PYTHONUNBUFFERED=1
STARTED=$(date +%s)

if [ "$DRY" = --dry-run ]; then  # RECIPE cut down, under its own name
  RECIPE="$("$PYTHON" - "$RECIPE" "$WORK" <<'EOF'
import json, sys
from pathlib import Path
from nslfcore.training.recipe import Recipe, load_recipe

recipe = load_recipe(sys.argv[1]).to_dict()
recipe["name"] += "-dry-run"
recipe["data"] = [{**entry, "n": 2} for entry in recipe["data"]]
if recipe["split"] is not None:  # the first case of each entry trains, the second validates
    names = [Recipe.from_dict(recipe).data[i].case_names() for i in range(len(recipe["data"]))]
    recipe["split"] = {"train": [n[0] for n in names], "valid": [n[1] for n in names]}
for stage in recipe["stages"]:
    options = stage["options"]
    options.pop("time_limit_s", None)
    options.update(epochs=1, max_steps_per_epoch=1, batch_size=1, samples_per_case=1, warmup_epochs=0.0,
                   case_validation_max_cases=1, fusion_crop=[32, 64, 64], segmentation_crop=[32, 64, 64])
path = Path(sys.argv[2]) / f"{recipe['name']}.json"
Recipe.from_dict(recipe, source=str(path))
path.write_text(json.dumps(recipe, indent=1))
print(path)
EOF
)" || exit 1
fi
NAME="$("$PYTHON" -c 'import sys; from nslfcore.training.recipe import load_recipe; print(load_recipe(sys.argv[1]).name)' "$RECIPE")" || exit 1

RESUME=(); [ -f "$WORK/run/recipe.json" ] && RESUME=(--resume)
echo "[$(date -u +%H:%M:%S)] nslf train --recipe $RECIPE on $DEVICE ${RESUME[*]} (ends after $TIMEOUT s)" | tee "$WORK/train.log"
timeout "$TIMEOUT" "$PYTHON" -m nslfcore.cli train --recipe "$RECIPE" --data "$WORK/data" --out "$WORK/run" \
  --device "$DEVICE" --events "$WORK/events.jsonl" "${RESUME[@]}" >> "$WORK/train.log" 2>&1
CODE=$?
[ $CODE = 124 ] && MESSAGE="stopped after $TIMEOUT s; run the same command again to resume" || MESSAGE="exit $CODE"
echo "[$(date -u +%H:%M:%S)] $MESSAGE, $(( $(date +%s) - STARTED )) s" | tee -a "$WORK/train.log"

MODEL="$WORK/run/$NAME.pt"
if [ -f "$MODEL" ]; then
  if [ "$(stat -c %s "$MODEL")" -gt $((15 * 1024 * 1024)) ]; then
    split -b 15M "$MODEL" "$OUT/$NAME.pt.part-"
  else
    cp "$MODEL" "$OUT/$NAME.pt"
  fi
fi
[ -f "$WORK/events.jsonl" ] && gzip -c "$WORK/events.jsonl" > "$OUT/events.jsonl.gz"
tail -n 2000 "$WORK/train.log" > "$OUT/train.log"
"$PYTHON" - "$WORK/events.jsonl" "$MESSAGE" > "$OUT/summary.txt" <<'EOF'
import json, sys
from collections import defaultdict
from pathlib import Path

path = Path(sys.argv[1])
events = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
print(f"{path.name}: {len(events)} events; {sys.argv[2]}")
speed = defaultdict(list)
for event in events:
    kind = event["event"]
    if kind == "iteration":
        speed[event["stage"]].append(event["samples_per_s"])
    elif kind == "run_start":
        print(f"run_start: {event['data']} on {event['device']}{' (resumed)' if event['resume'] else ''}")
    elif kind == "validation":
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in sorted(event["metrics"].items()))
        print(f"stage {event['stage']} epoch {event['epoch']}: {metrics}")
    elif kind in ("time_limit", "early_stop", "stage_end", "run_end", "error"):
        fields = {k: v for k, v in event.items() if k not in ("schema", "event", "time", "replica_digests")}
        print(f"{kind}: {fields}")
        if kind == "stage_end" and speed[event["stage"]]:
            rates = speed[event["stage"]]
            print(f"stage {event['stage']}: {len(rates)} steps, median {sorted(rates)[len(rates) // 2]:.3g} crops/s")
EOF
ls -la "$OUT"
exit $CODE
