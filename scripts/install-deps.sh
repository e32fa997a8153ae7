#!/usr/bin/env bash
# Installs the Debian packages listed in scripts/deps.txt that are missing.
# Idempotent: does nothing when everything is present; runs `apt-get update` at most once.
#   scripts/install-deps.sh           install what is missing (needs root)
#   scripts/install-deps.sh --check   exit 0 if all present, else print the missing ones, exit 1
#   --sanitizers (with or without --check): the packages of scripts/deps-sanitizers.txt instead
#   (clang, libFuzzer, LLVM OpenMP) for `make fuzz` and `make test-tsan`
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
check=""
list="$here/deps.txt"
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    --sanitizers) list="$here/deps-sanitizers.txt" ;;
    *) echo "install-deps: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
mapfile -t wanted < <(grep -vE '^\s*(#|$)' "$list")
missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ -n "$check" ]; then
  if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
  echo "${missing[*]}"
  exit 1
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#wanted[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root:  sudo scripts/install-deps.sh" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
