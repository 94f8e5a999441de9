#!/usr/bin/env bash
# The same-budget rows (benchmarks/cpu_same_budget.py, recipe cpu-1216) trained on a lent GPU:
# several methods and seeds side by side on one GPU, each in its own process, in float32 as on the
# CPU (--device cuda: no autocast, no TF32). Trains only; the models come back and are scored with
# cpu_same_budget.py on the held-out cases like every other row.
#
#   benchmarks/same_budget_gpu.sh OUT METHOD:SEED [METHOD:SEED ...]     (carry .whl; see device_run.sh)
#
# 1. the training cases of the CPU rows (nslf phantom --n 24 --seed 1000: a case depends only on the
#    seed and its index), two per process, in parallel;
# 2. one cpu_same_budget.py per METHOD:SEED, all at once, NSLF_WORKERS data-loading workers each;
# 3. as each ends: OUT/<method>-s<seed>.pt (split into OUT/<name>.pt.part-aa, -ab, ... when over
#    15 MiB, for the 16 MiB limit on a file brought back: rejoin with cat) and OUT/logs.tar.gz
#    (every log, same_budget.json, the NSLF stage-3 events and baseline logs), rewritten each time.
#
# A device call has at most 10 minutes, and four runs side by side need about 12 (RESULTS.md, "Run-to-run
# spread"). So NSLF_JOB_TIMEOUT=S ends each run after S seconds (then the logs still come back), and
# the same command again on the still-warm machine resumes every run after its last finished epoch
# from NSLF_SAME_BUDGET_WORK (default /tmp/nslf-same-budget; the cases are not generated again).
# Keep NSLF_WORKERS (data-loading workers per run, default 2) the same in both calls: a baseline
# refuses to resume with other options.
#
# NSLF_SCORE=1 also scores every finished model there, after all runs end: the 20 held-out cases
# (nslf phantom --n 20 --seed 2000 --start 1000, generated beside the training) with nslf compare
# --hd95 pooled on NSLF_DEVICE, whole box and 48 x 96 x 96 window, one process per model and mode,
# into OUT/scores.tar.gz (whole/<method>-s<seed>/, window/..., heldout-seg.md5: the MD5 of each
# decompressed label volume, to check the cases against the ones scored elsewhere). A device call
# brings back only a few files, hence the tarball.
#
# NSLF_DEVICE (default cuda), NSLF_PHANTOM_ARGS (e.g. --tiny) and NSLF_SAME_BUDGET_ARGS (e.g.
# --dry-run) let it run on the CPU for a check.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$1"; shift
[ $# -ge 1 ] || { echo "usage: $0 OUT METHOD:SEED..." >&2; exit 2; }
DEVICE="${NSLF_DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
WORK="${NSLF_SAME_BUDGET_WORK:-/tmp/nslf-same-budget}"
JOB_TIMEOUT="${NSLF_JOB_TIMEOUT:-0}"
WORKERS="${NSLF_WORKERS:-2}"
mkdir -p "$OUT" "$WORK/logs"
if "$PYTHON" -c 'import monai, nibabel, SimpleITK' 2>/dev/null; then
  export PYTHONPATH="$ROOT/NSLFCore:$ROOT/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
else
  eval "$("$ROOT/benchmarks/device_run.sh" --env)" || exit 1
fi
stamp() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$WORK/logs/driver.log"; }

count_cases() { find "$1" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l; }  # folder
phantoms() {  # folder, seed, first index, last index, log prefix: two cases per process, all at once
  local start
  for start in $(seq "$3" 2 "$4"); do
    OMP_NUM_THREADS=1 "$PYTHON" -m nslfcore.cli phantom --out "$1" --n 2 --seed "$2" --start "$start" \
      ${NSLF_PHANTOM_ARGS:-} > "$WORK/logs/$5-$start.log" 2>&1 &
  done
  wait
}
if [ "$(count_cases "$WORK/train")" = 24 ]; then
  stamp "phantoms: the 24 training cases of an earlier call, in $WORK/train"
else
  rm -rf "$WORK/train"
  stamp "phantoms: 24 training cases (seed 1000) in 12 processes"
  phantoms "$WORK/train" 1000 0 22 phantom
fi
SCORE="${NSLF_SCORE:-0}"
if [ "$SCORE" = 1 ] && [ ! -f "$WORK/heldout.done" ]; then
  rm -rf "$WORK/heldout"
  stamp "phantoms: 20 held-out cases (seed 2000, from 1000) in 10 processes, beside the training"
  (phantoms "$WORK/heldout" 2000 1000 1018 heldout && touch "$WORK/heldout.done") &
  HELDOUT_PID=$!
fi
cases=$(count_cases "$WORK/train")
stamp "phantoms: $cases cases"
[ "$cases" = 24 ] || { tail -n 5 "$WORK"/logs/phantom-*.log; exit 1; }

pack_logs() {  # OUT/logs.tar.gz, written under a name of this process's own, then renamed: runs end at once
  local part="$OUT/logs.tar.gz.$BASHPID"
  (cd "$WORK" && find logs runs -name '*.log' -o -name same_budget.json -o -name events.jsonl -path '*stage3*' \
     -o -name baseline_log.jsonl | tar czf "$part" -T - && mv "$part" "$OUT/logs.tar.gz")
}

bring_back() {  # method, seed
  local name="$1-s$2" run="$WORK/runs/$1-s$2"
  local model="$run/models/$1.pt"
  if [ -f "$model" ]; then
    if [ "$(stat -c %s "$model")" -gt $((15 * 1024 * 1024)) ]; then
      split -b 15M "$model" "$OUT/$name.pt.part-"
    else
      cp "$model" "$OUT/$name.pt"
    fi
  fi
  pack_logs
}

for job in "$@"; do
  method="${job%%:*}" seed="${job##*:}"
  (
    stamp "start $method seed $seed on $DEVICE"
    limit=(); [ "$JOB_TIMEOUT" != 0 ] && limit=(timeout "$JOB_TIMEOUT")
    OMP_NUM_THREADS=2 "${limit[@]}" "$PYTHON" "$ROOT/benchmarks/cpu_same_budget.py" --data "$WORK/train" \
      --test "$WORK/none" --out "$WORK/runs/$method-s$seed" --methods "$method" --seed "$seed" --device "$DEVICE" \
      --workers "$WORKERS" --no-evaluate ${NSLF_SAME_BUDGET_ARGS:-} >> "$WORK/logs/$method-s$seed.log" 2>&1
    code=$?
    [ $code = 124 ] && stamp "$method seed $seed: stopped after ${JOB_TIMEOUT} s; run the same command again to resume" \
      || stamp "end $method seed $seed: exit $code"
    bring_back "$method" "$seed"
  ) &
done
wait
stamp "all done"
pack_logs

score() {  # model path, name: nslf compare whole box and window, side by side
  local mode window
  for mode in whole window; do
    window=(); [ "$mode" = window ] && window=(--window 48 96 96)
    OMP_NUM_THREADS=1 "$PYTHON" -m nslfcore.cli compare --data "$WORK/heldout" --out "$WORK/scores/$mode/$2" \
      --methods "$1" --hd95 pooled --device "$DEVICE" --no-figures "${window[@]}" > "$WORK/logs/score-$mode-$2.log" 2>&1 &
  done
}
if [ "$SCORE" = 1 ]; then
  [ -f "$WORK/heldout.done" ] || wait "${HELDOUT_PID:-0}" 2>/dev/null
  [ "$(count_cases "$WORK/heldout")" = 20 ] || { stamp "held-out cases missing"; exit 1; }
  mkdir -p "$WORK/scores"
  (cd "$WORK/heldout" && for f in */*_seg.nii.gz; do echo "$(zcat "$f" | md5sum | cut -c1-32) $f"; done) \
    > "$WORK/scores/heldout-seg.md5"
  for job in "$@"; do
    method="${job%%:*}" seed="${job##*:}"
    model="$WORK/runs/$method-s$seed/models/$method.pt"
    if [ -f "$model" ]; then
      cp "$model" "$WORK/scores/$method-s$seed.pt"
      score "$WORK/scores/$method-s$seed.pt" "$method-s$seed"
    else
      stamp "$method seed $seed: no model yet, not scored"
    fi
  done
  wait
  stamp "scored"
  (cd "$WORK/scores" && tar czf "$OUT/scores.tar.gz" --exclude='*.pt' .)
  pack_logs
fi
ls -la "$OUT"
