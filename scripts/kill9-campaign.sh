#!/usr/bin/env bash
# Crash-safety campaign (RELIABILITY.md): kills a training program with SIGKILL at random
# moments, checks the run directory after every kill, resumes with --resume DIR, and at the end
# compares every checkpoint bit for bit with an uninterrupted run of the same command.
#   scripts/kill9-campaign.sh [--kills N] [--work DIR] [--seed S] -- PROGRAM ARGS...
# PROGRAM ARGS must fix --seed and --threads (bit-identical results need both) and must not
# contain --out (the script adds it). Example (make crash-test):
#   scripts/kill9-campaign.sh --kills 10 -- ./syncmnist_exp --preset tiny --threads 1 --quiet
# After each kill: every *.safetensors in the run directory must load with its CRC-32s intact
# (scripts/check_run_dir.py) and metrics.csv must hold whole rows only. Exit 0 when every check
# and the final comparison pass; 1 otherwise. Prints one line per kill and a summary line:
#   campaign: kills K resumes R restarts-before-config B completed-runs C corrupt 0 identical yes
# (B: kills before config.json existed, after which there is nothing to resume and the run
# starts again from scratch, as a user would.)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kills=20
work=""
seed=$$
while [ $# -gt 0 ]; do
  case "$1" in
    --kills) kills="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "kill9-campaign: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: kill9-campaign.sh [--kills N] [--work DIR] -- PROGRAM ARGS..." >&2; exit 2; }
command=("$@")
[ -n "$work" ] || work="$(mktemp -d /tmp/kill9-campaign.XXXXXX)"
mkdir -p "$work"
RANDOM=$seed
check="$here/check_run_dir.py"

# The uninterrupted reference run; its wall time bounds the random kill delays.
start=$(date +%s.%N)
"${command[@]}" --out "$work/reference" >"$work/reference.log" 2>&1 || {
  echo "kill9-campaign: the reference run failed (see $work/reference.log)" >&2; exit 1; }
end=$(date +%s.%N)
ref_ms=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%d", (b - a) * 1000 }')
echo "reference run: ${ref_ms} ms ($work/reference)"

done_kills=0 resumes=0 restarts=0 completed=0 corrupt=0 mismatched=0 attempt=0
run="$work/run-0"
fresh=1
while [ "$done_kills" -lt "$kills" ] || [ "$fresh" -eq 0 ]; do
  attempt=$((attempt + 1))
  # Killed before config.json was written: there is nothing to resume, start again.
  if [ "$fresh" -eq 0 ] && [ ! -f "$run/config.json" ]; then
    rm -rf "$run"; fresh=1; restarts=$((restarts + 1))
  fi
  if [ "$fresh" -eq 1 ]; then
    "${command[@]}" --out "$run" >>"$run.log" 2>&1 &
  else
    # The resumed run gets the same flags: the command line must agree with config.json.
    "${command[@]}" --resume "$run" >>"$run.log" 2>&1 &
    resumes=$((resumes + 1))
  fi
  pid=$!
  if [ "$done_kills" -lt "$kills" ]; then
    # Anywhere from startup to the end of a whole run: some kills land while a checkpoint or
    # metrics row is being written, some before the first checkpoint, some after the end.
    delay_ms=$(( (RANDOM * 32768 + RANDOM) % (ref_ms + 1) ))
    sleep "$(awk -v m="$delay_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
    if kill -9 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      done_kills=$((done_kills + 1))
      if python3 "$check" "$run" >"$work/check.log" 2>&1; then verdict=intact; else
        verdict="CORRUPT: $(tr '\n' ' ' <"$work/check.log")"; corrupt=$((corrupt + 1)); fi
      printf 'kill %2d at %5d ms (%s) run dir %s\n' "$done_kills" "$delay_ms" "$(basename "$run")" \
        "$verdict"
      fresh=0
      continue
    fi
  fi
  wait "$pid"
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "kill9-campaign: $(basename "$run") exited $status (see $run.log)" >&2
    mismatched=$((mismatched + 1))
  elif python3 "$check" "$run" --same-as "$work/reference" >"$work/check.log" 2>&1; then
    echo "$(basename "$run") completed after resuming: checkpoints bit-identical to the reference"
  else
    echo "$(basename "$run") completed but DIFFERS: $(tr '\n' ' ' <"$work/check.log")"
    mismatched=$((mismatched + 1))
  fi
  completed=$((completed + 1))
  run="$work/run-$completed"
  fresh=1
done
identical=yes
[ "$mismatched" -eq 0 ] || identical=no
echo "campaign: kills $done_kills resumes $resumes restarts-before-config $restarts" \
  "completed-runs $completed corrupt $corrupt" \
  "identical $identical (work dir $work)"
[ "$corrupt" -eq 0 ] && [ "$mismatched" -eq 0 ]
