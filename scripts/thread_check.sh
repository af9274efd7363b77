#!/usr/bin/env bash
# Wall time of default runs alone and two at once, without and with the CPU thread budget (hardware.threads).
#
#   scripts/thread_check.sh            # on a quiet machine: ~6 default runs, 15-25 min on 2 cores
#   COLD=1 scripts/thread_check.sh     # every run trains its own SFT reference too (the slow, cold case)
#
# "before": every job takes all the CPUs it sees (hardware.threads=$(nproc): torch's own default), so two
#           concurrent jobs oversubscribe the cores.
# "after":  hardware.threads=null: each job takes its share, the CPUs divided by PREFRUN_CONCURRENT_JOBS.
# With fair sharing and no oversubscription, two jobs at once take about twice as long as one alone
# (on a machine whose cores they fill); the ratio column shows how far each case is from that.
# The SFT reference and the tiny model are built once beforehand into a shared cache (unless COLD=1);
# reference log-probs are recomputed by every run (cache.reference=off), so each run does its real work.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFRUN=${PREFRUN:-.venv/bin/prefrun}
ROOT=${ROOT:-outputs/thread_check}
CPUS=$(.venv/bin/python -c "import os; print(len(os.sched_getaffinity(0)))")
rm -rf "$ROOT"
mkdir -p "$ROOT"
REPORT="$ROOT/report.txt"

run() {  # run NAME CACHE JOBS THREADS: one default run; prints its wall seconds
  local name=$1 cache=$2 jobs=$3 threads=$4 start end
  start=$(date +%s.%N)
  PREFRUN_CONCURRENT_JOBS=$jobs "$PREFRUN" logger=none run.quiet=true cache.reference=off \
    "paths.output_dir=$ROOT/$name" "paths.cache_dir=$cache" "hardware.threads=$threads" \
    >"$ROOT/$name.log" 2>&1
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }'
}

cache_for() {  # cache_for NAME: the shared warm cache, or a fresh one per run when COLD=1
  if [[ "${COLD:-0}" == 1 ]]; then echo "$ROOT/cache-$1"; else echo "$ROOT/cache"; fi
}

if [[ "${COLD:-0}" != 1 ]]; then
  echo "warming the shared cache (tiny model + SFT reference) ..."
  run warmup "$ROOT/cache" 1 null >/dev/null
fi

printf "%-7s %-10s %8s %8s %8s\n" mode scenario run_a_s run_b_s ratio | tee "$REPORT"
for mode in before after; do
  if [[ $mode == before ]]; then threads=$CPUS; else threads=null; fi
  alone=$(run "$mode-alone" "$(cache_for "$mode-alone")" 1 "$threads")
  printf "%-7s %-10s %8.1f %8s %8s\n" "$mode" alone "$alone" - 1.00 | tee -a "$REPORT"
  tmp_a=$(mktemp) tmp_b=$(mktemp)
  run "$mode-a" "$(cache_for "$mode-a")" 2 "$threads" >"$tmp_a" &
  pid_a=$!
  run "$mode-b" "$(cache_for "$mode-b")" 2 "$threads" >"$tmp_b" &
  pid_b=$!
  wait "$pid_a"
  wait "$pid_b"
  a=$(cat "$tmp_a") b=$(cat "$tmp_b")
  rm -f "$tmp_a" "$tmp_b"
  ratio=$(awk -v a="$a" -v b="$b" -v c="$alone" 'BEGIN { printf "%.2f", (a + b) / 2 / c }')
  printf "%-7s %-10s %8.1f %8.1f %8.2f\n" "$mode" "2 at once" "$a" "$b" "$ratio" | tee -a "$REPORT"
done
echo "CPUs: $CPUS; torch threads per run (env.json):" | tee -a "$REPORT"
for env in "$ROOT"/*/default/sort/tiny/*/default/seed=0/env.json; do
  [[ -f $env ]] || continue
  echo "  $env: $(.venv/bin/python -c "import json,sys; e=json.load(open(sys.argv[1])); \
print(e.get('threads') or e.get('hardware', {}).get('torch_threads'))" "$env")" | tee -a "$REPORT"
done
echo "report: $REPORT"
