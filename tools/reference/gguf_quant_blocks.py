#!/usr/bin/env python3
"""Reference dequantization of GGUF block types for tests/test_io_gguf.cpp.

Regenerate (from the repository root; needs `pip install gguf numpy`, tested with gguf 0.x from PyPI):
    python3 tools/reference/gguf_quant_blocks.py > tests/data/gguf_quant_blocks.json

For each ggml type it draws a few blocks of random bytes (numpy seed 20261122), overwrites the fp16
scale fields with finite random halves (random bytes there could be NaN/inf), and dequantizes them with
the `gguf` package's own numpy dequantizer (gguf.quants.dequantize), an implementation independent of
lowbit's. Output: {"generator": ..., "types": {NAME: {"raw_hex": ..., "values_f32_hex": [...]}}}; the
expected floats are stored as their IEEE bit patterns so the comparison is exact.
"""
import importlib.metadata
import json
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

rng = np.random.default_rng(20261122)
# type -> (bytes per block, byte offsets of fp16 scale fields)
LAYOUT = {
    Q.F16: (2, []),
    Q.BF16: (2, []),
    Q.Q4_0: (18, [0]),
    Q.Q4_1: (20, [0, 2]),
    Q.Q5_0: (22, [0]),
    Q.Q5_1: (24, [0, 2]),
    Q.Q8_0: (34, [0]),
    Q.Q4_K: (144, [0, 2]),
    Q.Q6_K: (210, [208]),
}
BLOCKS = {Q.F16: 64, Q.BF16: 64}

out = {"generator": "tools/reference/gguf_quant_blocks.py with gguf " + importlib.metadata.version("gguf"),
       "types": {}}
for qtype, (block_bytes, half_fields) in LAYOUT.items():
    n_blocks = BLOCKS.get(qtype, 3)
    raw = bytearray(rng.integers(0, 256, size=n_blocks * block_bytes, dtype=np.uint8).tobytes())
    if qtype == Q.F16:
        raw = bytearray(rng.normal(0, 2, n_blocks).astype(np.float16).tobytes())
        raw[0:2] = np.float16(6.1e-5 / 8).tobytes()  # a subnormal half
    if qtype == Q.BF16:
        raw = bytearray((rng.normal(0, 2, n_blocks).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes())
    for b in range(n_blocks):
        for off in half_fields:
            h = np.float16(rng.uniform(-0.05, 0.05))
            raw[b * block_bytes + off: b * block_bytes + off + 2] = h.tobytes()
    values = gguf.quants.dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), qtype).astype(np.float32).ravel()
    out["types"][qtype.name] = {
        "raw_hex": bytes(raw).hex(),
        "values_f32_hex": [format(int(v), "08x") for v in values.view(np.uint32)],
    }
json.dump(out, sys.stdout, indent=0)
sys.stdout.write("\n")
