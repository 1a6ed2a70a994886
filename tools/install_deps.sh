#!/usr/bin/env bash
# Installs the Debian packages lowbit's build, tests, demo and benchmarks need, if any are missing.
# As root it runs apt-get directly, otherwise through sudo; without either it stops and prints the
# exact apt-get line to run. Used by tools/demo.sh and tools/test.sh (the README's two commands).
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config python3 python3-pip
          libeigen3-dev doctest-dev nlohmann-json3-dev libcli11-dev libbenchmark-dev
          libpcre2-dev libbz2-dev libsentencepiece-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then exit 0; fi
line="apt-get update && apt-get install -y ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo_cmd=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo_cmd=(sudo)
else
  echo "lowbit: missing packages: ${missing[*]}" >&2
  echo "lowbit: run this as root, then re-run the command:" >&2
  echo "  sudo sh -c '$line'" >&2
  exit 1
fi
echo "lowbit: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >&2
