#!/usr/bin/env bash
# Shows which loops of a source file GCC vectorises, with the library's Release flags:
#   1. the plain -fopt-info-vec-optimized report (file:line:col of each vectorised loop), and
#   2. the same loops attributed to the function they were inlined into (from the vectoriser's
#      dump), so that a row primitive is seen vectorised inside each hot kernel.
#
#   scripts/vectorization_report.sh [source, default src/graph/message_passing.cpp]
set -euo pipefail
cd "$(dirname "$0")/.."
source_file=${1:-src/graph/message_passing.cpp}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-O3 -DNDEBUG -march=native -fopenmp -std=c++17 -Wall -Wextra -I"$PWD/src"
       -I/usr/include/x86_64-linux-gnu/openblas-openmp -isystem /usr/include/eigen3)
(cd "$work" && c++ "${flags[@]}" -fopt-info-vec-optimized -fopt-info-loop-optimized \
   -fdump-tree-vect-optimized \
   -c "$OLDPWD/$source_file" -o unit.o 2> opt-info.txt)

echo "== c++ ${flags[*]} -fopt-info-vec-optimized -c $source_file"
grep -F "$source_file" "$work/opt-info.txt" | grep -i vectoriz | sed "s|$PWD/||" | sort -t: -k2,2n -k3,3n | uniq -c

echo
echo "== vectorised loops by enclosing function (line: function)"
awk -v file="$PWD/$source_file" '
  /^;; Function / { fn = $3; if (fn ~ /^_Z/) fn = $3; else { fn = $0; sub(/^;; Function /, "", fn); sub(/ \(.*/, "", fn) } }
  /optimized: loop vectorized/ && index($0, file) { split($0, p, ":"); print p[2] ": " fn }
' "$work"/*.vect | c++filt |
  sed -E -e 's/\(anonymous namespace\)|\{anonymous\}/anon/g' \
         -e 's/^([0-9]+): .*parallel_(rows|for)<(stgnn::)?(anon::|kernels::)?([a-z_]+)\(.*/\1: \5 (threaded body)/' \
         -e 's/^([0-9]+): stgnn::(anon::|kernels::)?([a-z_]+)[( ].*/\1: \3/' -e 's/^([0-9]+): stgnn::(anon::)?/\1: /' |
  sort -u | sort -t: -k1,1n
echo
echo "== loops replaced by library calls (memset / memcpy)"
grep -F "$source_file" "$work/opt-info.txt" | grep -i "library call" | sed "s|$PWD/||" | sort -u || true
