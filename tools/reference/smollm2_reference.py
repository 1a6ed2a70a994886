#!/usr/bin/env python3
"""Independent reference logits for SmolLM2-135M-Instruct (Q4_1 GGUF), for lowbit's fidelity test.

Regenerate (from the repository root; ~1 minute on 2 cores):
    tools/fetch_smollm2.sh                       # caches ~/.cache/lowbit/SmolLM2-135M-Instruct.Q4_1.gguf
    pip install numpy gguf tokenizers            # tested with numpy 2.x, gguf 0.19.0, tokenizers 0.23.3
    python3 tools/reference/smollm2_reference.py > tests/data/smollm2_reference.json

What it does, without any lowbit code:
  * reads the GGUF and dequantizes every tensor with the `gguf` package (gguf.GGUFReader,
    gguf.quants.dequantize);
  * tokenizes PROMPT_TEXT with the `tokenizers` package: a byte-level BPE built from the GGUF's own
    tokenizer.ggml.tokens and tokenizer.ggml.merges, with SmolLM2's pre-tokenizer (single digits split,
    then GPT-2 byte-level regex, no prefix space) and no BOS (tokenizer.ggml.add_bos_token is false);
    the first 64 ids are the fixed input;
  * runs a plain numpy LLaMA forward over the 64 tokens in float64 arithmetic on the dequantized
    (float32) weights: RMSNorm (eps from the file), RoPE with theta from the file in the *interleaved*
    pair layout (llama.cpp's converter permutes HF q/k rows so that GGUF uses pairs (2i, 2i+1)),
    grouped-query causal attention, SwiGLU, tied output head;
  * greedy-decodes 24 more tokens (full recompute) as a coherence check.

Output format (JSON, one object):
  "model", "model_sha256"        file the numbers belong to
  "prompt"                       the decoded text of the 64 input ids (the ids are authoritative)
  "source_text"                  PROMPT_TEXT, of which the ids are the first 64 tokens
  "input_ids"                    64 ints, fed at positions 0..63 with no BOS
  "positions"                    64 objects, one per position p (logits predicting token p+1):
        "pos": p, "top5_ids": [5 ints, by decreasing logit], "top5_logits": [5 floats],
        "next_id": input_ids[p+1] (null at p = 63), "next_logit": logit of next_id (null at p = 63)
  "greedy_ids", "greedy_text"    24-token greedy continuation after the 64 ids
  "arithmetic"                   "float64 on fp32-dequantized weights"
Compare lowbit's fp32 logits to top5_logits / next_logit with a relative tolerance of 1e-3; the top-5
ids should match except where two logits are within that tolerance.
"""
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

PROMPT_TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe "
    "experimented with two-wheeled machines that riders pushed along with their feet. Over the next "
    "decades, pedals, chains and air-filled tires turned these curiosities into a practical means of "
    "transport, and by 1900 millions of people rode bicycles to work, to school and to visit friends "
    "in nearby towns."
)
N_INPUT = 64
N_GREEDY = 24


def model_path():
    cache = os.environ.get("LOWBIT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lowbit"))
    return sys.argv[1] if len(sys.argv) > 1 else os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")


def field_value(reader, key):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    return f.parts[f.data[0]][0].item()


def build_tokenizer(reader):
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_value(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def load_weights(reader):
    w = {}
    for t in reader.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w[t.name] = a.reshape([int(d) for d in reversed(t.shape)])  # ggml dims are fastest-first
    return w


def rmsnorm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope_interleaved(x, theta):
    # x: [T, heads, head_dim]; rotate pairs (2i, 2i+1) by pos * theta^(-2i/head_dim)
    T, _, hd = x.shape
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def forward(w, cfg, ids):
    f64 = lambda name: w[name].astype(np.float64)
    x = f64("token_embd.weight")[ids]
    T = len(ids)
    H, KV, hd = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"] // cfg["n_heads"]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        h = rmsnorm(x, f64(p + "attn_norm.weight"), cfg["eps"])
        q = (h @ f64(p + "attn_q.weight").T).reshape(T, H, hd)
        k = (h @ f64(p + "attn_k.weight").T).reshape(T, KV, hd)
        v = (h @ f64(p + "attn_v.weight").T).reshape(T, KV, hd)
        q, k = rope_interleaved(q, cfg["theta"]), rope_interleaved(k, cfg["theta"])
        out = np.empty((T, H, hd))
        for head in range(H):
            kvh = head // (H // KV)
            s = q[:, head, :] @ k[:, kvh, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, head, :] = s @ v[:, kvh, :]
        x = x + out.reshape(T, H * hd) @ f64(p + "attn_output.weight").T
        h = rmsnorm(x, f64(p + "ffn_norm.weight"), cfg["eps"])
        gate = h @ f64(p + "ffn_gate.weight").T
        up = h @ f64(p + "ffn_up.weight").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ f64(p + "ffn_down.weight").T
    x = rmsnorm(x, f64("output_norm.weight"), cfg["eps"])
    head = f64("output.weight") if "output.weight" in w else f64("token_embd.weight")
    return x @ head.T


def format_json(out):
    """One key per line and one line per position, so the file stays reviewable in diffs."""
    lines = []
    for key, value in out.items():
        if key == "positions":
            rows = ",\n".join("  " + json.dumps(p) for p in value)
            lines.append(f' "positions": [\n{rows}\n ]')
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main():
    path = model_path()
    reader = gguf.GGUFReader(path)
    cfg = {
        "dim": field_value(reader, "llama.embedding_length"),
        "n_layers": field_value(reader, "llama.block_count"),
        "n_heads": field_value(reader, "llama.attention.head_count"),
        "n_kv_heads": field_value(reader, "llama.attention.head_count_kv"),
        "eps": field_value(reader, "llama.attention.layer_norm_rms_epsilon"),
        "theta": field_value(reader, "llama.rope.freq_base"),
    }
    tok = build_tokenizer(reader)
    ids = tok.encode(PROMPT_TEXT).ids
    assert len(ids) >= N_INPUT, f"prompt has only {len(ids)} tokens"
    ids = ids[:N_INPUT]
    w = load_weights(reader)
    logits = forward(w, cfg, ids)
    positions = []
    for p in range(N_INPUT):
        row = logits[p]
        top = np.argsort(-row, kind="stable")[:5]
        nxt = ids[p + 1] if p + 1 < N_INPUT else None
        positions.append({
            "pos": p,
            "top5_ids": [int(i) for i in top],
            "top5_logits": [round(float(row[i]), 6) for i in top],
            "next_id": nxt,
            "next_logit": None if nxt is None else round(float(row[nxt]), 6),
        })
    seq = list(ids)
    for _ in range(N_GREEDY):
        seq.append(int(np.argmax(forward(w, cfg, seq)[-1])))
    with open(path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    out = {
        "model": os.path.basename(path),
        "model_sha256": sha,
        "generator": "tools/reference/smollm2_reference.py (numpy %s, gguf, tokenizers)" % np.__version__,
        "arithmetic": "float64 on fp32-dequantized weights",
        "source_text": PROMPT_TEXT,
        "prompt": tok.decode(ids),
        "input_ids": ids,
        "greedy_ids": seq[N_INPUT:],
        "greedy_text": tok.decode(seq[N_INPUT:]),
        "positions": positions,
    }
    sys.stdout.write(format_json(out))


if __name__ == "__main__":
    main()
