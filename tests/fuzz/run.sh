#!/usr/bin/env bash
# Runs the libFuzzer harnesses built in BUILD_DIR one after the other, each for SECONDS, in one
# process with one job (the machine is shared), starting from the committed seed corpus.
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]     (make fuzz FUZZ_SECONDS=N)
# Per target, in BUILD_DIR/fuzz/: corpus/<target>/ (the growing corpus), artifacts/<target>/
# (crash-*, leak-*, timeout-*, oom-* inputs) and logs/<target>.log (libFuzzer's output, with
# its final stats: stat::number_of_executed_units, stat::peak_rss_mb, ...). Extra libFuzzer
# flags come from FUZZ_ARGS (e.g. FUZZ_ARGS="-fork=1 -ignore_crashes=1" to keep going after a
# crash). Exits 1 when any harness found a problem, after running all of them.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${1:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}"
seconds="${2:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}"
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(mnist_idx npm_digits egoexo_annotations egoexo_labels npy torch_pt safetensors
           config_json video)
fi
work="$build/fuzz"
mkdir -p "$work/logs"
failed=()
printf '%-20s %8s %12s %10s %8s %s\n' target seconds executions exec/s rss_mb result
for target in "${targets[@]}"; do
  binary="$build/fuzz_$target"
  if [ ! -x "$binary" ]; then echo "run.sh: $binary is not built" >&2; exit 2; fi
  corpus="$work/corpus/$target"
  artifacts="$work/artifacts/$target"
  log="$work/logs/$target.log"
  mkdir -p "$corpus" "$artifacts"
  # -rss_limit_mb / -malloc_limit_mb: any single allocation or total above 2 GiB is a finding
  # (a header claiming a huge size must be refused before allocating). -timeout: an input
  # taking more than 10 s is a hang.
  # shellcheck disable=SC2086
  "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} \
    "$corpus" "$here/corpus/$target" >"$log" 2>&1
  status=$?
  execs=$(grep -o 'stat::number_of_executed_units:[[:space:]]*[0-9]*' "$log" | tail -1 | awk '{print $2}')
  rate=$(grep -o 'stat::average_exec_per_sec:[[:space:]]*[0-9]*' "$log" | tail -1 | awk '{print $2}')
  rss=$(grep -o 'stat::peak_rss_mb:[[:space:]]*[0-9]*' "$log" | tail -1 | awk '{print $2}')
  found=$(find "$artifacts" -type f | wc -l)
  result=ok
  if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
    result="FOUND $found input(s) in $artifacts (exit $status)"
    failed+=("$target")
  fi
  printf '%-20s %8s %12s %10s %8s %s\n' "$target" "$seconds" "${execs:-?}" "${rate:-?}" \
    "${rss:-?}" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: findings in: ${failed[*]} (logs in $work/logs)" >&2
  exit 1
fi
