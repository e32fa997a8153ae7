#!/usr/bin/env bash
# Runs every stgnn benchmark and its PyTorch peer in one session, so that ratios compare
# figures measured side by side on the same machine. Writes bench-results/<UTC time>.txt.
#   scripts/run-benchmarks.sh            everything (tens of minutes; keep the machine quiet)
#   scripts/run-benchmarks.sh foundation graph   only those C++ binaries (and their peers)
# The PyTorch peers need Debian's python3-torch (they run with /usr/bin/python3).
set -uo pipefail
cd "$(dirname "$0")/.."
make -s build >/dev/null || exit 1
mkdir -p bench-results
out="bench-results/$(date -u +%Y%m%d-%H%M%S).txt"
topics=("$@")
[ ${#topics[@]} -eq 0 ] && topics=(foundation recurrent graph rstg syncmnist glevr)
{
  echo "# stgnn benchmarks, $(date -u)"
  echo "# machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "# git: $(git rev-parse --short HEAD)  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
  for topic in "${topics[@]}"; do
    binary="build/bench_$topic"
    [ -x "$binary" ] || continue
    echo; echo "## $binary"
    "$binary" --benchmark_min_time=1 2>&1 | grep -v "Library was built as DEBUG"
    case "$topic" in
      foundation) peer=(bench/torch/bench_conv.py) ;;
      recurrent) peer=(bench/torch/bench_recurrent.py) ;;
      graph) peer=(bench/torch/bench_graph.py) ;;
      rstg) peer=(bench/torch/rstg.py bench) ;;
      glevr) peer=(bench/torch/bench_glevr.py) ;;
      *) peer=() ;;
    esac
    if [ ${#peer[@]} -gt 0 ] && [ -f "${peer[0]}" ]; then
      echo; echo "## PyTorch peer: ${peer[*]}"
      /usr/bin/python3 "${peer[@]}" 2>&1 | grep -v Warning
      if [ "$topic" = rstg ]; then
        /usr/bin/python3 bench/torch/rstg.py bench --channels 32,64,128 --node-dim 128 --stage-norm 0 --stage-residual 0 2>&1 | grep -v Warning
        /usr/bin/python3 bench/torch/rstg.py bench --channels 512,512,512 --node-dim 512 --stage-norm 0 --stage-residual 0 --batch 2 --steps 3 2>&1 | grep -v Warning
      fi
    fi
  done
} | tee "$out"
echo "written: $out"
