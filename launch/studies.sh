#!/usr/bin/env bash
# Run (or resume) the committed CPU studies one after another, then archive what has ended of each and write its
# report under results/: what regenerates every results/<study>/ from nothing, and what picks up where a stopped
# machine left off (finished cells are skipped, interrupted ones resume from their checkpoints).
#
# usage: bash launch/studies.sh [--archive-only] [STUDY...]     (default: all, in this order)
#   warmup_depth             experiment=warmup_depth             -> results/warmup_depth             (~50 min)
#   multi30k_ablation        experiment=multi30k_ablation        -> results/multi30k_ablation        (10.5-18 h)
#   cifar_lr_robustness      experiment=cifar_lr_robustness_cpu  -> results/cifar_lr_robustness      (~5.6 h)
#   warmup_mechanisms        experiment=warmup_mechanisms        -> results/warmup_mechanisms        (~3 h)
# on 2 cores (two jobs side by side, one torch thread each). Run folders go to $RADAM_REPRO_RUNS (default runs/).
# A study longer than one machine's lease is finished over several: the runs already committed under
# results/<study>/runs are restored into the sweep first (their cells are skipped), and after the sweep the ended
# runs are archived there again with a report that says "Partial: k of n cells" until every cell has ended.
# --archive-only trains nothing: it archives and reports what has ended (run it before a lease runs out).
# The Multi30k grid runs its claims' lr (6e-4) for every cell first.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
RUNS=${RADAM_REPRO_RUNS:-runs}
export OMP_NUM_THREADS=1 WANDB_SILENT=true TQDM_DISABLE=1

declare -A EXPERIMENT=(
  [warmup_depth]=warmup_depth
  [multi30k_ablation]=multi30k_ablation
  [cifar_lr_robustness]=cifar_lr_robustness_cpu
  [warmup_mechanisms]=warmup_mechanisms
)
TRAIN=1
if [[ "${1:-}" == "--archive-only" ]]; then
  TRAIN=0
  shift
fi
STUDIES=("$@")
[[ ${#STUDIES[@]} -gt 0 ]] || STUDIES=(warmup_depth multi30k_ablation cifar_lr_robustness warmup_mechanisms)

for study in "${STUDIES[@]}"; do
  experiment=${EXPERIMENT[$study]:?"unknown study $study; use one of ${!EXPERIMENT[*]}"}
  if [[ -d "results/$study/runs" ]]; then
    python -m radam_repro.report.archive --restore "results/$study/runs" "$RUNS/$experiment"
  fi
  if [[ $TRAIN == 1 ]]; then
    echo "[studies] $study: python -m radam_repro experiment=$experiment"
    if [[ $study == multi30k_ablation ]]; then
      python -m radam_repro experiment="$experiment" optimizer.lr=6e-4 || true
    fi
    python -m radam_repro experiment="$experiment" || true  # a failed cell is recorded in its folder; go on
  fi
  # "<ended> <cells>": how many runs of the sweep have ended, of how many cells it has
  read -r ended cells < <(python - "$RUNS/$experiment" "$experiment" <<'EOF'
import sys
from pathlib import Path

from benchmarks.paper_cost import sweep
from radam_repro.report.archive import ended_runs

folder = Path(sys.argv[1])
print(len(ended_runs(folder)) if folder.is_dir() else 0, len(sweep(sys.argv[2])))
EOF
  )
  [[ -n ${cells:-} ]] || { echo "[studies] $study: could not count its cells (see above)" >&2; exit 1; }
  echo "[studies] $study: $ended of $cells cells ended"
  if [[ $ended == 0 ]]; then
    continue
  fi
  rm -rf "results/$study/runs.new"
  python -m radam_repro.report.archive "$RUNS/$experiment" "results/$study/runs.new"
  rm -rf "results/$study/runs"
  mv "results/$study/runs.new" "results/$study/runs"
  if [[ $ended == "$cells" ]]; then
    python -m radam_repro.report "results/$study/runs" --out "results/$study"
  else
    python -m radam_repro.report "results/$study/runs" --out "results/$study" --cells "$cells"
    echo "[studies] $study: partial; rerun this script to finish it"
  fi
done
