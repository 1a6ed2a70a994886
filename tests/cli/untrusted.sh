#!/usr/bin/env bash
# CLI test `cli.untrusted` (stories260K, ~15 s): crafted bad files and flags (issue 14's list) fail with
# exit 1 and a one-line `lowbit: error` that names the problem, quickly and without a large allocation:
# every case runs under a 1.5 GiB address-space limit, so an allocation sized from the file would end
# as "out of memory", which fails the test. No case may end as an "internal error" (exit 3).
# Usage: untrusted.sh LOWBIT_BINARY SHARED_DATA_DIR SCRATCH_DIR
set -euo pipefail
source "$(dirname "$0")/stories260k.sh"

bad() {  # PATTERN CMD...: exit 1, "lowbit: error" and PATTERN in stderr, under a second, no big allocation
  local pattern=$1; shift
  local start rc elapsed_ms
  start=$(date +%s%N)
  set +e
  (ulimit -v 1572864; "$@") > out.txt 2> err.txt
  rc=$?
  set -e
  elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$rc" -eq 1 ] || { cat err.txt >&2; fail "exit $rc (expected 1): $*"; }
  grep -q "^lowbit: error: " err.txt || { cat err.txt >&2; fail "no 'lowbit: error:' line: $*"; }
  if grep -q "out of memory" err.txt; then cat err.txt >&2; fail "allocated from untrusted input: $*"; fi
  grep -q -- "$pattern" err.txt || { cat err.txt >&2; fail "no '$pattern' in the message of: $*"; }
  [ "$elapsed_ms" -lt 1000 ] || fail "took ${elapsed_ms} ms: $*"
  echo "ok  $(grep "^lowbit: error" err.txt | head -n 1 | cut -c 1-150)"
}

# Rewrites a safetensors file's metadata: edit.py IN OUT 'python expression on m (the metadata dict)'.
cat > edit.py <<'PY'
import json, struct, sys
src, dst, code = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
m = header["__metadata__"]
exec(code)
raw = json.dumps(header, separators=(",", ":")).encode()
raw += b" " * (-len(raw) % 8)
open(dst, "wb").write(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
PY
edit() { python3 edit.py q.safetensors "$1" "$2"; }

"$lowbit" quantize --model "$model" --tokenizer "$tok" --calib "$text" --nsamples 4 --seqlen 64 --quiet \
  --method rtn --format uniform:4:32 --out q.safetensors > /dev/null
gen=(generate --prompt-ids 1 -n 2)

echo "== quantized model file: metadata sizes nothing before the tensors agree"
cfg="c = json.loads(m['lowbit.model_config'])"
put="m['lowbit.model_config'] = json.dumps(c)"
fmt="f = json.loads(m['lowbit.tensor_formats'])"
putf="m['lowbit.tensor_formats'] = json.dumps(f)"
edit seven_b.safetensors "$cfg; c.update(dim=4096, hidden_dim=11008, n_layers=32, n_heads=32, n_kv_heads=32, vocab_size=32000); $put"
bad "layers" "$lowbit" "${gen[@]}" --model seven_b.safetensors
edit vocab_max.safetensors "$cfg; c.update(vocab_size=2147483647); $put"
bad "tok_embeddings" "$lowbit" "${gen[@]}" --model vocab_max.safetensors
edit vocab_max_described.safetensors "$cfg; c.update(vocab_size=2147483647); $put; $fmt; f['tok_embeddings']['shape'][0] = 2147483647; $putf"
bad "tok_embeddings" "$lowbit" "${gen[@]}" --model vocab_max_described.safetensors
edit dim_huge.safetensors "$cfg; c.update(dim=2**32 + 64); $put"
bad "does not fit" "$lowbit" "${gen[@]}" --model dim_huge.safetensors
edit dim_float.safetensors "$cfg; c.update(dim=1e30); $put"
bad "dim" "$lowbit" "${gen[@]}" --model dim_float.safetensors
edit seq_huge.safetensors "$cfg; c.update(max_seq_len=2147483647); $put"
# max_seq_len only bounds positions (the KV cache is sized by the run's tokens): it loads, within the limit
(ulimit -v 1572864; "$lowbit" "${gen[@]}" --model seq_huge.safetensors > /dev/null 2>&1) ||
  fail "max_seq_len = 2^31-1 does not load under 1.5 GiB"
edit shape_string.safetensors "$fmt; f['layers.0.attention.wq']['shape'] = 'big'; $putf"
bad "layers.0.attention.wq" "$lowbit" "${gen[@]}" --model shape_string.safetensors
edit format_number.safetensors "$fmt; f['layers.0.attention.wq']['format'] = 7; $putf"
bad "layers.0.attention.wq" "$lowbit" "${gen[@]}" --model format_number.safetensors
edit checksum_number.safetensors "s = json.loads(m['lowbit.checksums']); s['norm.weight'] = 12; m['lowbit.checksums'] = json.dumps(s)"
bad "checksum" "$lowbit" "${gen[@]}" --model checksum_number.safetensors
edit config_not_json.safetensors "m['lowbit.model_config'] = '{\"dim\": 64,'"
bad "lowbit.model_config" "$lowbit" "${gen[@]}" --model config_not_json.safetensors
python3 - <<'PY'
# A damaged header: the JSON cut short (its length field unchanged).
data = open("q.safetensors", "rb").read()
n = int.from_bytes(data[:8], "little")
open("header_cut.safetensors", "wb").write(data[:8] + data[8:8 + n // 2] + b"\0" * (n - n // 2) + data[8 + n:])
PY
bad "header" "$lowbit" "${gen[@]}" --model header_cut.safetensors

echo "== tokenizer.json: ids are checked before they index or size anything"
tokjson() {  # NAME VOCAB_ID ADDED_ID
  printf '{"model": {"type": "BPE", "vocab": {"a": 0, "b": %s}, "merges": []}, "added_tokens": [{"id": %s, "content": "<s>", "special": true}]}' \
    "$2" "$3" > "$1"
}
tokjson tok_neg.json -1 2
bad "non-negative" "$lowbit" generate --model "$model" --tokenizer tok_neg.json --prompt a -n 2
tokjson tok_float.json 1e30 2
bad "non-negative integer" "$lowbit" generate --model "$model" --tokenizer tok_float.json --prompt a -n 2
tokjson tok_huge.json 1000000000000 2
bad "far past" "$lowbit" generate --model "$model" --tokenizer tok_huge.json --prompt a -n 2
tokjson tok_added_neg.json 1 -3
bad "non-negative" "$lowbit" generate --model "$model" --tokenizer tok_added_neg.json --prompt a -n 2
tokjson tok_added_str.json 1 '"x"'
bad "added token" "$lowbit" generate --model "$model" --tokenizer tok_added_str.json --prompt a -n 2
mkdir -p a_folder
bad "a_folder" "$lowbit" generate --model "$model" --tokenizer a_folder --prompt a -n 2

echo "== flags"
touch a_file
common=(--model "$model" --tokenizer "$tok" --calib "$text" --quiet --method rtn --out q2.safetensors)
bad "run-dir" "$lowbit" quantize "${common[@]}" --nsamples 4 --seqlen 64 --run-dir a_file
bad "more than this machine" "$lowbit" quantize "${common[@]}" --nsamples 1048576 --seqlen 1048576
# Values out of a flag's range are usage errors (exit 2, the documented code), not "unexpected errors"
usage() {  # PATTERN CMD...
  local pattern=$1; shift
  set +e; "$@" > /dev/null 2> err.txt; local rc=$?; set -e
  [ "$rc" -eq 2 ] || { cat err.txt >&2; fail "exit $rc, expected the usage error 2: $*"; }
  grep -q -- "$pattern" err.txt || { cat err.txt >&2; fail "no '$pattern' in the message of: $*"; }
  echo "ok  (usage) $(head -n 1 err.txt)"
}
usage "nsamples" "$lowbit" quantize "${common[@]}" --nsamples 2147483647 --seqlen 2147483647
usage "sample-tokens" "$lowbit" quantize "${common[@]}" --nsamples 4 --seqlen 64 --autoclip-tokens -7
usage "steps\|-n" "$lowbit" generate --model "$model" --tokenizer "$tok" --prompt a -n 2147483647
[ ! -e q2.safetensors ] || fail "a failed command left q2.safetensors"
echo "all untrusted-input cases fail cleanly"
