#!/usr/bin/env bash
# Batch-1 decode speed of lowbit files against llama.cpp files of the same model, measured alternately
# (one lowbit run, then one llama.cpp run, ROUNDS times), at each thread count. Prints one markdown row
# per file and thread count with the median of the rounds: wall tokens/s and CPU-time tokens/s (decoded
# tokens per second of process CPU time, all threads together), which stays meaningful on a shared
# machine where wall time does not.
#
#   tools/decode_vs_llamacpp.sh [--rounds N] [--threads "1 2"] [--tokens N] LOWBIT_FILE... -- GGUF_FILE...
#
# lowbit runs `lowbit bench-decode --baseline none --repeats 1` (8 prompt tokens, then --tokens greedy
# tokens; its warm-up run is not timed). llama.cpp runs `llama-bench -p 0 -n TOKENS -r R` from
# ../shared/tools/peer-llamacpp.sh's build (PEER_DIR, default ~/.cache/lowbit-peer), which builds it
# outside the repository. llama-bench has no CPU-time report, so its CPU time per round is that of a
# `-r 3` process minus that of a `-r 1` process (load, warm-up and one run cancel): 2·TOKENS tokens.
# Its wall rate is llama-bench's own (the mean of its runs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lowbit=${LOWBIT:-$root/build/release/examples/lowbit}
bench=${PEER_DIR:-$HOME/.cache/lowbit-peer}/build/bin/llama-bench
rounds=3 threads="1 2" tokens=128
ours=() theirs=() side=ours
while (($#)); do
  case $1 in
    --rounds) rounds=$2; shift 2;;
    --threads) threads=$2; shift 2;;
    --tokens) tokens=$2; shift 2;;
    -h|--help) sed -n '2,16p' "$0"; exit 0;;
    --) side=theirs; shift;;
    *) if [[ $side == ours ]]; then ours+=("$1"); else theirs+=("$1"); fi; shift;;
  esac
done
((${#ours[@]} + ${#theirs[@]})) || { sed -n '2,16p' "$0"; exit 2; }
[[ -x $lowbit ]] || { echo "decode_vs_llamacpp: no lowbit tool at $lowbit (build it, or set LOWBIT)" >&2; exit 1; }
((${#theirs[@]} == 0)) || [[ -x $bench ]] ||
  { echo "decode_vs_llamacpp: no llama-bench at $bench (run ../shared/tools/peer-llamacpp.sh build)" >&2; exit 1; }
for f in "${ours[@]}" "${theirs[@]}"; do [[ -f $f ]] || { echo "decode_vs_llamacpp: no file $f" >&2; exit 1; }; done

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cpu_of() {  # CPU seconds (user + system) of a command, from GNU time
  /usr/bin/time -f "%U %S" -o "$tmp/time" "$@" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; return 1; }
  awk '{print $1 + $2}' "$tmp/time"
}
lowbit_round() {  # file threads -> "wall_tok_s cpu_tok_s"
  "$lowbit" bench-decode --model "$1" --baseline none --repeats 1 --prompt-tokens 8 --tokens "$tokens" \
    --threads "$2" --quiet --json >"$tmp/lb" 2>"$tmp/err" || { cat "$tmp/err" >&2; return 1; }
  tail -n 1 "$tmp/lb" | python3 -c 'import json,sys; m=json.load(sys.stdin)["model"]; print(m["decode_tok_s"], m["decode_tok_cpu_s"])'
}
llama_round() {  # file threads -> "wall_tok_s cpu_tok_s"
  local c1 c3 wall
  c1=$(cpu_of "$bench" -m "$1" -p 0 -n "$tokens" -t "$2" -r 1 -o json)
  c3=$(cpu_of "$bench" -m "$1" -p 0 -n "$tokens" -t "$2" -r 3 -o json)
  wall=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["avg_ts"])' "$tmp/out")
  python3 -c "import sys; print($wall, 2 * $tokens / max($c3 - $c1, 1e-9))"
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "| file | threads | decode tok/s (wall) | decode tok/CPU-s |"
echo "|---|---:|---:|---:|"
for t in $threads; do
  declare -A wall=() cpu=()
  for ((r = 1; r <= rounds; ++r)); do
    for f in "${ours[@]}"; do read -r w c < <(lowbit_round "$f" "$t"); wall[$f]+="$w "; cpu[$f]+="$c "; done
    for f in "${theirs[@]}"; do read -r w c < <(llama_round "$f" "$t"); wall[$f]+="$w "; cpu[$f]+="$c "; done
    echo "round $r/$rounds, $t thread(s) done" >&2
  done
  for f in "${ours[@]}" "${theirs[@]}"; do
    printf '| %s | %d | %.1f | %.1f |\n' "$(basename "$f")" "$t" \
      "$(tr ' ' '\n' <<<"${wall[$f]}" | grep . | median)" "$(tr ' ' '\n' <<<"${cpu[$f]}" | grep . | median)"
  done
  unset wall cpu
done
