#!/usr/bin/env bash
# Run (or resume) the committed CPU studies one after another, then archive each finished one and write its report
# under results/: what regenerates every results/<study>/ from nothing, and what picks up where a stopped machine
# left off (finished cells are skipped, interrupted ones resume from their checkpoints).
#
# usage: bash launch/studies.sh [STUDY...]     (default: all, in this order)
#   warmup_depth             experiment=warmup_depth             -> results/warmup_depth             (~50 min)
#   multi30k_ablation        experiment=multi30k_ablation        -> results/multi30k_ablation        (~10 h)
#   cifar_lr_robustness      experiment=cifar_lr_robustness_cpu  -> results/cifar_lr_robustness      (~5.6 h)
#   warmup_mechanisms        experiment=warmup_mechanisms        -> results/warmup_mechanisms        (~3 h)
# on 2 cores (two jobs side by side, one torch thread each). Run folders go to $RADAM_REPRO_RUNS (default runs/).
# A study is archived and reported only when every one of its cells has ended; else the next study starts and a
# later call finishes it. The Multi30k grid runs its claims' lr (6e-4) for every cell first.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
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
STUDIES=("$@")
[[ ${#STUDIES[@]} -gt 0 ]] || STUDIES=(warmup_depth multi30k_ablation cifar_lr_robustness warmup_mechanisms)

for study in "${STUDIES[@]}"; do
  experiment=${EXPERIMENT[$study]:?"unknown study $study; use one of ${!EXPERIMENT[*]}"}
  echo "[studies] $study: python -m radam_repro experiment=$experiment"
  if [[ $study == multi30k_ablation ]]; then
    python -m radam_repro experiment="$experiment" optimizer.lr=6e-4 || true
  fi
  python -m radam_repro experiment="$experiment" || true  # a failed cell is recorded in its folder; go on
  if python - "$RUNS/$experiment" "$experiment" <<'EOF'; then
import sys
from pathlib import Path

from benchmarks.paper_cost import sweep
from radam_repro.report.runs import load_runs
from radam_repro.run_folder import ENDED

runs, cells = load_runs([Path(sys.argv[1])]), len(sweep(sys.argv[2]))
ended = sum(r.status in ENDED for r in runs)
print(f"[studies] {sys.argv[2]}: {ended} of {cells} cells ended")
sys.exit(0 if ended == cells else 1)
EOF
    rm -rf "results/$study/runs"
    python -m radam_repro.report.archive "$RUNS/$experiment" "results/$study/runs"
    python -m radam_repro.report "results/$study/runs" --out "results/$study"
  else
    echo "[studies] $study: not every cell has ended; rerun this script to finish it"
  fi
done
