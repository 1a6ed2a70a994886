#!/usr/bin/env python3
"""Seed corpora for lowbit's fuzz targets (tests/fuzz/, run by tools/fuzz.sh).

Writes OUT/<target>/<seed> for every target. The seeds are tiny valid files crafted here (a GGUF
llama with every dequantizable tensor type and an embedded vocabulary, safetensors + config.json,
llama2.c checkpoints and tokenizers, tokenizer.json, a SentencePiece ModelProto, quantized-file and
block-checkpoint recipes with fp32 linears, a run directory, a training checkpoint), plus, when present:
  * a few real files from the shared data folder (--shared, default ../shared/data beside the repo);
  * quantized files and block checkpoints written by the lowbit CLI (--lowbit, default
    build/release/examples/lowbit) from a tiny random llama2.c model, in several formats (uniform,
    nf3, additive; token tables quantized too), turned into recipes.
Nothing is copied into the repository: OUT is a build folder. Python 3 standard library only.

Usage: tools/fuzz_corpus.py OUT [--shared DIR] [--lowbit PATH] [--cache DIR]
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys

SEP = b"\n=====\n"  # piece separator of the structure-aware targets (tests/fuzz/fuzz_common.hpp)
RNG = random.Random(1234)


# ---- helpers ---------------------------------------------------------------------------------------

def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def floats(n, scale=0.1):
    return struct.pack("<%df" % n, *[RNG.uniform(-scale, scale) for _ in range(n)])


def rand_bytes(n):
    return bytes(RNG.getrandbits(8) for _ in range(n))


def half(x):
    return struct.pack("<e", x)


class Config:
    """A LLaMA model shape (names as in nn::ModelConfig)."""

    def __init__(self, dim, hidden, layers, heads, kv_heads, vocab, seq, tied=True):
        self.dim, self.hidden, self.layers, self.heads = dim, hidden, layers, heads
        self.kv_heads, self.vocab, self.seq, self.tied = kv_heads, vocab, seq, tied

    @property
    def kv_dim(self):
        return self.dim // self.heads * self.kv_heads

    def json(self):
        return {"dim": self.dim, "hidden_dim": self.hidden, "n_layers": self.layers, "n_heads": self.heads,
                "n_kv_heads": self.kv_heads, "vocab_size": self.vocab, "max_seq_len": self.seq,
                "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_layout": "interleaved",
                "tied_embeddings": self.tied}

    def linears(self):
        """(canonical role name, [out, in]) of one block, in kAllLinearRoles order."""
        d, h, kv = self.dim, self.hidden, self.kv_dim
        return [("attention.wq", [d, d]), ("attention.wk", [kv, d]), ("attention.wv", [kv, d]),
                ("attention.wo", [d, d]), ("feed_forward.w1", [h, d]), ("feed_forward.w3", [h, d]),
                ("feed_forward.w2", [d, h])]


TINY = Config(dim=8, hidden=16, layers=1, heads=2, kv_heads=1, vocab=8, seq=16)
HOST = Config(dim=16, hidden=32, layers=2, heads=2, kv_heads=1, vocab=32, seq=16)  # fuzz_checkpoint's default


class Corpus:
    def __init__(self, out):
        self.out = out

    def add(self, target, name, data):
        d = os.path.join(self.out, target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


# ---- safetensors -----------------------------------------------------------------------------------

def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes) in data order."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return meta, [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in tensors]


def hf_tensors(c, dtypes=("F32",)):
    """A Hugging Face LLaMA state dict for config c, dtypes cycling over the tensors."""
    names = [("model.embed_tokens.weight", [c.vocab, c.dim])]
    hf = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
          "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
          "feed_forward.w2": "mlp.down_proj"}
    for l in range(c.layers):
        p = "model.layers.%d." % l
        names.append((p + "input_layernorm.weight", [c.dim]))
        names += [(p + hf[role] + ".weight", shape) for role, shape in c.linears()]
        names.append((p + "post_attention_layernorm.weight", [c.dim]))
    names.append(("model.norm.weight", [c.dim]))
    if not c.tied:
        names.append(("lm_head.weight", [c.vocab, c.dim]))
    out = []
    for i, (name, shape) in enumerate(names):
        dtype = dtypes[i % len(dtypes)]
        n = 1
        for d in shape:
            n *= d
        if dtype == "F32":
            data = floats(n)
        elif dtype == "F16":
            data = b"".join(half(RNG.uniform(-0.1, 0.1)) for _ in range(n))
        else:  # BF16: the top half of an fp32
            data = b"".join(struct.pack("<f", RNG.uniform(-0.1, 0.1))[2:] for _ in range(n))
        out.append((name, dtype, shape, data))
    return out


def hf_config(c):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.dim,
            "intermediate_size": c.hidden, "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads, "vocab_size": c.vocab, "max_position_embeddings": c.seq,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": c.tied, "rope_scaling": None}


def seeds_safetensors(corpus, real_quantized):
    for tag, c, dtypes in (("f32", TINY, ("F32",)), ("mixed_untied", Config(8, 16, 2, 2, 2, 8, 16, tied=False),
                                                            ("F32", "F16", "BF16"))):
        config = json.dumps(hf_config(c)).encode()
        st = safetensors(hf_tensors(c, dtypes), {"format": "pt"})
        corpus.add("safetensors", tag, config + SEP + st)
        index = {"metadata": {"total_size": len(st)},
                 "weight_map": {t[0]: "model.safetensors" for t in hf_tensors(c, dtypes)}}
        corpus.add("safetensors", tag + "_index", config + SEP + st + SEP + json.dumps(index).encode())
    corpus.add("safetensors", "empty_header", b"{}" + SEP + struct.pack("<Q", 2) + b"{}")
    for name, path in real_quantized[:2]:
        with open(path, "rb") as f:
            corpus.add("safetensors", "real_" + name, b"{}" + SEP + f.read())


# ---- lowbit quantized file and block checkpoints (recipes, lowbit_file_recipe.hpp) -------------------

def recipe(piece0, formats, tensors, extra=None, data=b""):
    t = {name: [dtype, shape] for name, dtype, shape, _ in tensors}
    return SEP.join([piece0, formats, json.dumps(t, separators=(",", ":")).encode(),
                     json.dumps(extra or {}).encode(), data])


def f32_block(c, layer):
    """Tensors and format descriptors of one block with fp32 ("f32" format) linears."""
    tensors, formats = [], {}
    for role, shape in c.linears():
        name = "layers.%d.%s" % (layer, role)
        formats[name] = {"format": "f32", "shape": shape}
        tensors.append((name + ".weight", "F32", shape, b""))
    tensors.append(("layers.%d.attention_norm.weight" % layer, "F32", [c.dim], b""))
    tensors.append(("layers.%d.ffn_norm.weight" % layer, "F32", [c.dim], b""))
    return tensors, formats


def seeds_quantized_crafted(corpus):
    for tag, c in (("f32_tied", TINY), ("f32_untied", Config(8, 16, 2, 2, 1, 8, 16, tied=False))):
        tensors, formats = [("tok_embeddings.weight", "F32", [c.vocab, c.dim], b"")], {}
        for l in range(c.layers):
            t, f = f32_block(c, l)
            tensors += t
            formats.update(f)
        tensors.append(("norm.weight", "F32", [c.dim], b""))
        if not c.tied:
            tensors.append(("output.weight", "F32", [c.vocab, c.dim], b""))
        corpus.add("quantized", tag, recipe(json.dumps(c.json()).encode(), json.dumps(formats).encode(), tensors,
                                            data=floats(64)))
    for layer in (0, 1):
        tensors, formats = f32_block(HOST, layer)
        piece0 = json.dumps({"model": HOST.json(), "layer": layer}).encode()
        corpus.add("checkpoint", "f32_layer%d" % layer, recipe(piece0, json.dumps(formats).encode(), tensors,
                                                              data=floats(64)))


def file_to_recipe(path, piece0, max_data=65536):
    """A real lowbit safetensors file as a recipe (its own tensor bytes, capped, as piece 4)."""
    meta, tensors = read_safetensors(path)
    formats = meta.get("lowbit.tensor_formats", "{}").encode()
    if piece0 is None:
        piece0 = meta.get("lowbit.model_config", "{}").encode()
    extra = {k: v for k, v in meta.items()
             if k not in ("lowbit.tensor_formats", "lowbit.model_config", "lowbit.checksums", "lowbit.kind",
                          "lowbit.version", "format", "quantization_config", "lowbit.block")}
    data = b"".join(t[3] for t in tensors)[:max_data]
    return recipe(piece0, formats, tensors, extra, data)


LLAMA2C_PIECES = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)] + \
    [b" ", b"a", b"b", b" a", b"ab", b" ab", b"\xc3\xa9", b"Once", b" upon"]
# The model the lowbit CLI quantizes for the seeds: small (runs fast in the harnesses) but with every
# in-feature count a multiple of 64, so every format (group sizes 32..128 aside) applies.
CLI_MODEL = Config(dim=64, hidden=64, layers=2, heads=4, kv_heads=2, vocab=len(LLAMA2C_PIECES), seq=64)


def real_quantized_files(lowbit, cache):
    """Quantized files and run directories written by the lowbit CLI from a tiny random llama2.c model
    (cached in `cache`): (name, path) of the files, (name, path, layer) of the block checkpoints."""
    if not (lowbit and os.access(lowbit, os.X_OK)):
        return [], []
    os.makedirs(cache, exist_ok=True)
    model, tok, text = (os.path.join(cache, n) for n in ("model.bin", "tokenizer.bin", "calib.txt"))
    if not os.path.exists(model):
        with open(tok, "wb") as f:
            f.write(llama2c_tokenizer(LLAMA2C_PIECES))
        with open(text, "w") as f:
            f.write("Once upon a time ab ba a b \u00e9\n" * 200)
        with open(model, "wb") as f:
            f.write(llama2c(CLI_MODEL))
    files, blocks = [], []
    for name, args in (("uniform4", ["--method", "rtn", "--format", "uniform:4:32"]),
                       ("nf3", ["--method", "rtn", "--format", "nf3:64", "--embedding-format", "f32"]),
                       ("uniform2_sym", ["--method", "rtn", "--format", "uniform:2:32",
                                         "--embedding-format", "uniform:4:64"]),
                       ("additive", ["--method", "aqlm", "--format", "additive:1:8:8", "--aqlm-finetune-epochs", "0",
                                     "--aqlm-kmeans-iters", "2"])):
        out = os.path.join(cache, name + ".safetensors")
        run_dir = os.path.join(cache, name + ".run")
        if not os.path.exists(out):
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [lowbit, "quantize", "--model", model, "--tokenizer", tok, "--calib", text, "--nsamples", "4",
                   "--seqlen", "64", "--threads", "1", "--quiet", "--run-dir", run_dir, "--out", out] + args
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                print("fuzz_corpus: skipping %s seed (lowbit quantize failed: %s)" % (name, r.stderr.strip()[-300:]),
                      file=sys.stderr)
                continue
        files.append((name, out))
        for layer in range(CLI_MODEL.layers):
            block = os.path.join(run_dir, "block_%03d.safetensors" % layer)
            if os.path.exists(block):
                blocks.append(("%s_block%d" % (name, layer), block, layer))
    return files, blocks


def seeds_quantized_real(corpus, files, blocks):
    for name, path in files:
        corpus.add("quantized", "real_" + name, file_to_recipe(path, None))
    for name, path, layer in blocks:
        piece0 = json.dumps({"model": CLI_MODEL.json(), "layer": layer}).encode()
        corpus.add("checkpoint", "real_" + name, file_to_recipe(path, piece0))


# ---- GGUF ------------------------------------------------------------------------------------------

GGUF_TYPES = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8, "arr": 9,
              "u64": 10, "i64": 11, "f64": 12}
PACK = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i", "f32": "<f", "bool": "<?",
        "u64": "<Q", "i64": "<q", "f64": "<d"}
# ggml type -> (id, elements per block, bytes per block)
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22),
        "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210), "BF16": (30, 1, 2)}


def gguf_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, v):
    if kind == "str":
        return gguf_str(v)
    if kind.startswith("arr:"):
        elem = kind[4:]
        return struct.pack("<IQ", GGUF_TYPES[elem], len(v)) + b"".join(gguf_value(elem, x) for x in v)
    return struct.pack(PACK[kind], v)


def ggml_data(gtype, n):
    _, elems, size = GGML[gtype]
    if gtype == "F32":
        return floats(n)
    if gtype in ("F16", "BF16"):
        return b"".join(half(RNG.uniform(-0.1, 0.1)) if gtype == "F16" else struct.pack("<f", RNG.uniform(-.1, .1))[2:]
                        for _ in range(n))
    blocks = []
    for _ in range(n // elems):
        b = bytearray(rand_bytes(size))
        if gtype in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):  # a sane fp16 scale (and min) first
            b[0:2] = half(0.01)
            if gtype in ("Q4_1", "Q5_1"):
                b[2:4] = half(-0.05)
        elif gtype == "Q4_K":  # d, dmin
            b[0:2], b[2:4] = half(0.01), half(0.001)
        elif gtype == "Q6_K":  # d is the last 2 bytes
            b[208:210] = half(0.01)
        blocks.append(bytes(b))
    return b"".join(blocks)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: list of (key, kind, value); tensors: list of (name, ggml type, dims ggml order)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, kind, v in kvs:
        t = GGUF_TYPES["arr"] if kind.startswith("arr:") else GGUF_TYPES[kind]
        out += gguf_str(key) + struct.pack("<I", t) + gguf_value(kind, v)
    datas, offset = [], 0
    for name, gtype, dims in tensors:
        n = 1
        for d in dims:
            n *= d
        data = ggml_data(gtype, n)
        out += gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", GGML[gtype][0], offset)
        pad = -len(data) % alignment
        datas.append(data + b"\0" * pad)
        offset += len(data) + pad
    out += b"\0" * (-len(out) % alignment)
    return out + b"".join(datas)


def spm_vocab(n_extra=8):
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    words = ["\u2581", "\u2581a", "\u2581the", "e", "t", "he", "\u2581t", "on", "ce", "Once"][:n_extra]
    tokens += words + [ch for ch in "abcdefghijklmnopqrstuvwxyz" if ch not in words]
    types = [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(tokens) - 259)]
    return tokens, scores, types


def gpt2_vocab():
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)] + ["\u0120t", "he", "\u0120the", "in", "<|endoftext|>"]
    merges = ["\u0120 t", "h e", "\u0120t he", "i n"]
    types = [1] * (len(tokens) - 1) + [3]
    return tokens, merges, types


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def gguf_llama_kvs(c):
    return [("general.architecture", "str", "llama"), ("general.name", "str", "tiny"),
            ("general.alignment", "u32", 32),
            ("llama.embedding_length", "u32", c.dim), ("llama.feed_forward_length", "u32", c.hidden),
            ("llama.block_count", "u32", c.layers), ("llama.attention.head_count", "u32", c.heads),
            ("llama.attention.head_count_kv", "u32", c.kv_heads), ("llama.context_length", "u32", c.seq),
            ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5), ("llama.rope.freq_base", "f32", 10000.0),
            ("llama.rope.dimension_count", "u32", c.dim // c.heads), ("llama.vocab_size", "u32", c.vocab)]


def gguf_llama_tensors(c, linear_types):
    ts = [("token_embd.weight", "F32", [c.dim, c.vocab])]
    names = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
             "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate", "feed_forward.w3": "ffn_up",
             "feed_forward.w2": "ffn_down"}
    for l in range(c.layers):
        ts.append(("blk.%d.attn_norm.weight" % l, "F32", [c.dim]))
        for i, (role, (out, inp)) in enumerate(c.linears()):
            ts.append(("blk.%d.%s.weight" % (l, names[role]), linear_types[i % len(linear_types)], [inp, out]))
        ts.append(("blk.%d.ffn_norm.weight" % l, "F32", [c.dim]))
    ts.append(("output_norm.weight", "F32", [c.dim]))
    if not c.tied:
        ts.append(("output.weight", "F16", [c.dim, c.vocab]))
    return ts


def seeds_gguf(corpus):
    c = Config(dim=32, hidden=32, layers=1, heads=2, kv_heads=1, vocab=8, seq=16)
    tokens, scores, types = spm_vocab()
    small_vocab = [("tokenizer.ggml.model", "str", "llama"), ("tokenizer.ggml.tokens", "arr:str", tokens[:c.vocab]),
                   ("tokenizer.ggml.scores", "arr:f32", scores[:c.vocab]),
                   ("tokenizer.ggml.token_type", "arr:i32", types[:c.vocab]),
                   ("tokenizer.ggml.bos_token_id", "u32", 1), ("tokenizer.ggml.eos_token_id", "u32", 2)]
    corpus.add("gguf", "llama_f32", gguf(gguf_llama_kvs(c) + small_vocab, gguf_llama_tensors(c, ["F32"])))
    corpus.add("gguf", "llama_q", gguf(gguf_llama_kvs(c), gguf_llama_tensors(
        c, ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16"])))
    untied = Config(dim=32, hidden=64, layers=2, heads=4, kv_heads=2, vocab=8, seq=16, tied=False)
    corpus.add("gguf", "llama_untied_v2", gguf(gguf_llama_kvs(untied), gguf_llama_tensors(untied, ["Q8_0"]),
                                               version=2))
    corpus.add("gguf", "kquants", gguf([("general.architecture", "str", "llama")],
                                       [("q4k", "Q4_K", [256]), ("q6k", "Q6_K", [256, 1]), ("f16", "F16", [4, 2])]))
    every_type = [("k.%s" % k, k if k in PACK or k == "str" else "str", v) for k, v in
                  (("u8", 7), ("i8", -7), ("u16", 700), ("i16", -700), ("u32", 70000), ("i32", -70000),
                   ("f32", 0.5), ("bool", True), ("str", "text"), ("u64", 2 ** 40), ("i64", -2 ** 40),
                   ("f64", 0.25))]
    every_type += [("k.arr_i32", "arr:i32", [1, 2, 3]), ("k.arr_str", "arr:str", ["a", "b"]),
                   ("k.arr_f64", "arr:f64", [1.5]), ("k.arr_bool", "arr:bool", [True, False])]
    nested = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_str("k.nested") + struct.pack("<I", 9) + \
        struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 4, 1) + struct.pack("<I", 5) + struct.pack("<IQ", 8, 1) + \
        gguf_str("x")
    corpus.add("gguf", "metadata_types", gguf(every_type, []))
    corpus.add("gguf", "nested_arrays", nested)

    # Tokenizer-only GGUFs.
    spm = [("tokenizer.ggml.model", "str", "llama"), ("tokenizer.ggml.tokens", "arr:str", tokens),
           ("tokenizer.ggml.scores", "arr:f32", scores), ("tokenizer.ggml.token_type", "arr:i32", types),
           ("tokenizer.ggml.bos_token_id", "u32", 1), ("tokenizer.ggml.eos_token_id", "u32", 2),
           ("tokenizer.ggml.unknown_token_id", "u32", 0), ("tokenizer.ggml.add_bos_token", "bool", True),
           ("tokenizer.ggml.add_space_prefix", "bool", True)]
    corpus.add("tokenizer_gguf", "spm", gguf(spm, []))
    g_tokens, merges, g_types = gpt2_vocab()
    for pre in ("default", "smollm", "llama3", "qwen2"):
        bpe = [("tokenizer.ggml.model", "str", "gpt2"), ("tokenizer.ggml.pre", "str", pre),
               ("tokenizer.ggml.tokens", "arr:str", g_tokens), ("tokenizer.ggml.token_type", "arr:i32", g_types),
               ("tokenizer.ggml.merges", "arr:str", merges), ("tokenizer.ggml.bos_token_id", "u32", len(g_tokens) - 1),
               ("tokenizer.ggml.eos_token_id", "u32", len(g_tokens) - 1)]
        corpus.add("tokenizer_gguf", "bpe_" + pre, gguf(bpe, []))
    corpus.add("tokenizer_gguf", "model_with_vocab", gguf(gguf_llama_kvs(c) + small_vocab,
                                                          gguf_llama_tensors(c, ["Q8_0"])))


# ---- llama2.c --------------------------------------------------------------------------------------

def llama2c(c):
    vocab = c.vocab if c.tied else -c.vocab
    head = struct.pack("<7i", c.dim, c.hidden, c.layers, c.heads, c.kv_heads, vocab, c.seq)
    n = c.vocab * c.dim + c.layers * (2 * c.dim + sum(o * i for _, (o, i) in c.linears()))
    n += c.dim + c.seq * (c.dim // c.heads)  # final norm, freq_cis real + imag
    if not c.tied:
        n += c.vocab * c.dim
    return head + floats(n)


def llama2c_tokenizer(pieces, max_len=None):
    max_len = max_len or max(len(p) for p in pieces)
    out = struct.pack("<i", max_len)
    for i, p in enumerate(pieces):
        out += struct.pack("<fi", -float(i), len(p)) + p
    return out


def seeds_llama2c(corpus, shared):
    corpus.add("llama2c", "tiny", llama2c(Config(8, 16, 1, 2, 2, 8, 4)))
    corpus.add("llama2c", "tiny_untied_gqa", llama2c(Config(8, 16, 2, 2, 1, 8, 4, tied=False)))
    corpus.add("llama2c", "header_only", struct.pack("<7i", 8, 16, 1, 2, 2, 8, 4))
    corpus.add("tokenizer_llama2c", "crafted", llama2c_tokenizer(LLAMA2C_PIECES))
    corpus.add("tokenizer_llama2c", "minimal", llama2c_tokenizer([b"<unk>", b"<s>", b"</s>", b" "]))
    stories = os.path.join(shared, "models", "stories260K.bin")
    if os.path.exists(stories):  # the header and the first floats; the harness pads to the implied size
        with open(stories, "rb") as f:
            corpus.add("llama2c", "stories260K_head", f.read(4096))
    tok = os.path.join(shared, "models", "tok512.bin")
    if os.path.exists(tok):
        shutil.copyfile(tok, os.path.join(corpus.out, "tokenizer_llama2c", "tok512.bin"))


# ---- tokenizer.json --------------------------------------------------------------------------------

def seeds_tokenizer_json(corpus):
    g_tokens, merges, _ = gpt2_vocab()
    vocab = {t: i for i, t in enumerate(g_tokens[:-1])}
    added = [{"id": len(g_tokens) - 1, "content": "<|endoftext|>", "special": True},
             {"id": len(g_tokens), "content": "<s>", "special": True}]
    full = {"version": "1.0", "added_tokens": added,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False},
                {"type": "Digits", "individual_digits": True},
                {"type": "Split", "pattern": {"String": "."}, "behavior": "Isolated"},
                {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]},
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                          {"Sequence": {"id": "A", "type_id": 0}}]},
            "model": {"type": "BPE", "unk_token": None, "vocab": vocab, "merges": merges}}
    corpus.add("tokenizer_json", "full", json.dumps(full, ensure_ascii=False).encode())
    pairs = dict(full)
    pairs["model"] = dict(full["model"], merges=[m.split(" ") for m in merges])
    pairs["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False}
    del pairs["post_processor"]
    corpus.add("tokenizer_json", "merge_pairs", json.dumps(pairs).encode())
    minimal = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    corpus.add("tokenizer_json", "minimal", json.dumps(minimal).encode())


# ---- SentencePiece .model (protobuf) ---------------------------------------------------------------

def pb_varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_field(num, wire, payload):
    key = pb_varint(num << 3 | wire)
    if wire == 0:
        return key + pb_varint(payload)
    if wire == 2:
        return key + pb_varint(len(payload)) + payload
    return key + payload  # wire 5: 4 bytes


def sentencepiece_model(model_type, byte_fallback):
    tokens, scores, types = spm_vocab()
    if not byte_fallback:
        keep = [i for i, t in enumerate(types) if t != 6]
        tokens, scores, types = [tokens[i] for i in keep], [scores[i] for i in keep], [types[i] for i in keep]
    out = b""
    for t, s, ty in zip(tokens, scores, types):
        piece = pb_field(1, 2, t.encode()) + pb_field(2, 5, struct.pack("<f", s)) + pb_field(3, 0, ty)
        out += pb_field(1, 2, piece)
    trainer = pb_field(3, 0, model_type) + pb_field(4, 0, len(tokens)) + pb_field(35, 0, int(byte_fallback)) + \
        pb_field(40, 0, 0) + pb_field(41, 0, 1) + pb_field(42, 0, 2) + pb_field(43, 0, 0xFFFFFFFFFFFFFFFF)
    normalizer = pb_field(1, 2, b"identity") + pb_field(3, 0, 1) + pb_field(4, 0, 0) + pb_field(5, 0, 1)
    return out + pb_field(2, 2, trainer) + pb_field(3, 2, normalizer)


def seeds_tokenizer_spm(corpus, shared):
    corpus.add("tokenizer_spm", "bpe_byte_fallback", sentencepiece_model(2, True))
    corpus.add("tokenizer_spm", "unigram", sentencepiece_model(1, False))
    real = os.path.join(shared, "models", "tok512.model")
    if os.path.exists(real):
        shutil.copyfile(real, os.path.join(corpus.out, "tokenizer_spm", "tok512.model"))


# ---- run directory and training checkpoint ---------------------------------------------------------

def seeds_run_dir(corpus):
    fingerprint = {"config": {"nsamples": 4, "seqlen": 64}, "plan": "uniform:4:32", "tokens": "0123456789abcdef:256"}
    for next_layer in (1, 3):
        state = struct.pack("<4Q", 0x54434B504C42574C, next_layer, 4, 2) + floats(8)
        state += struct.pack("<Q", fnv1a64(state))
        corpus.add("run_dir", "layer%d" % next_layer, json.dumps(fingerprint, indent=2).encode() + b"\n" + SEP + state)
    other = dict(fingerprint, plan="nf3:64", extra=[1, 2])
    corpus.add("run_dir", "other_run", json.dumps(other).encode() + SEP)


def seeds_train_checkpoint(corpus):
    c = TINY
    fp_text = "%d,%d,%d,%d,%d,%d,%d,%s,%s,%d,%d" % (c.dim, c.hidden, c.layers, c.heads, c.kv_heads, c.vocab, c.seq,
                                                   "1e-05", "10000", 0, 1)
    out = b"LBTRAIN\0" + struct.pack("<I", 1) + struct.pack("<7i", c.dim, c.hidden, c.layers, c.heads, c.kv_heads,
                                                              c.vocab, c.seq)
    out += struct.pack("<ffBB", 1e-5, 10000.0, 0, 1) + struct.pack("<Q", fnv1a64(fp_text.encode()))
    out += struct.pack("<Qqq4QQd", 7, 10, 100, 1, 2, 3, 4, 5, 2.5)
    tensors = [("tok_embeddings.weight", [c.vocab, c.dim])]
    for l in range(c.layers):
        tensors.append(("layers.%d.attention_norm.weight" % l, [c.dim]))
        tensors += [("layers.%d.%s.weight" % (l, role), shape) for role, shape in c.linears()]
        tensors.append(("layers.%d.ffn_norm.weight" % l, [c.dim]))
    tensors.append(("norm.weight", [c.dim]))
    out += struct.pack("<I", len(tensors))
    for name, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        out += struct.pack("<I", len(name)) + name.encode() + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<q", d) for d in shape) + floats(n)
    out += struct.pack("<B", 0)
    out += struct.pack("<Q", fnv1a64(out))
    corpus.add("train_checkpoint", "tiny", out)


# ---- main ------------------------------------------------------------------------------------------

def seeds_teacher_data(corpus):
    header = {"lowbit_teacher_data": 1, "model": "tiny.bin", "model_fingerprint": "0123456789abcdef:4096",
              "options": {"samples": 3, "max_new_tokens": 8, "seed": 0}, "tokenizer": "spm:512", "vocab_size": 512}
    lines = [json.dumps(header)]
    for i in range(3):
        lines.append(json.dumps({"index": i, "source": "c4.jsonl", "prompt": "Once upon a time",
                                 "prompt_ids": [1, 403 + i, 261], "continuation": " there was a cat",
                                 "continuation_ids": [372, 471, 260 + i, 511]}))
    text = "\n".join(lines) + "\n"
    corpus.add("teacher_data", "three", text.encode())
    corpus.add("teacher_data", "cut_last_line", (text + lines[1][:40]).encode())
    corpus.add("teacher_data", "header_only", (lines[0] + "\n").encode())


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="corpus folder (one subfolder per target)")
    ap.add_argument("--shared", default=os.path.join(repo, "..", "shared", "data"), help="shared data folder")
    ap.add_argument("--lowbit", default=os.path.join(repo, "build", "release", "examples", "lowbit"),
                    help="lowbit CLI used to write real quantized seeds (skipped when missing)")
    ap.add_argument("--cache", default=None, help="where CLI outputs are kept between runs (default OUT/../seed-cache)")
    args = ap.parse_args()
    cache = args.cache or os.path.join(os.path.dirname(os.path.abspath(args.out)), "seed-cache")
    corpus = Corpus(args.out)
    files, blocks = real_quantized_files(args.lowbit, cache)
    seeds_gguf(corpus)
    seeds_safetensors(corpus, files)
    seeds_llama2c(corpus, args.shared)
    seeds_tokenizer_json(corpus)
    seeds_tokenizer_spm(corpus, args.shared)
    seeds_quantized_crafted(corpus)
    seeds_quantized_real(corpus, files, blocks)
    seeds_run_dir(corpus)
    seeds_train_checkpoint(corpus)
    seeds_teacher_data(corpus)
    counts = {t: len(os.listdir(os.path.join(args.out, t))) for t in sorted(os.listdir(args.out))}
    print("fuzz_corpus: seeds in %s: %s%s" % (args.out, ", ".join("%s %d" % kv for kv in counts.items()),
                                               "" if files else " (no lowbit CLI seeds)"))


if __name__ == "__main__":
    main()
