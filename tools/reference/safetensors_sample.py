#!/usr/bin/env python3
"""Writes tests/data/python_written.safetensors with the reference `safetensors` package (PyPI), so that
tests/test_io_safetensors.cpp reads a file lowbit did not write.

Regenerate (from the repository root; needs `pip install safetensors numpy`, tested with 0.8.0):
    python3 tools/reference/safetensors_sample.py tests/data/python_written.safetensors

Contents (values chosen so the C++ test can recompute them):
    a_f32 F32 [2, 3]  = arange(6) * 0.5 - 1
    b_f16 F16 [4]     = [1.0, -2.5, 65504, 2**-24]
    c_i32 I32 [3]     = [-7, 0, 2147483647]
    d_u8  U8  [2, 2]  = [[1, 2], [3, 250]]
    e_i64 I64 [1]     = [-(2**40)]
    f_empty F32 [0, 4]
    metadata: {"format": "pt", "lowbit.note": "written by safetensors (python)"}
"""
import sys

import numpy as np
from safetensors.numpy import save_file

tensors = {
    "a_f32": (np.arange(6, dtype=np.float32) * 0.5 - 1).reshape(2, 3),
    "b_f16": np.array([1.0, -2.5, 65504, 2.0**-24], dtype=np.float16),
    "c_i32": np.array([-7, 0, 2147483647], dtype=np.int32),
    "d_u8": np.array([[1, 2], [3, 250]], dtype=np.uint8),
    "e_i64": np.array([-(2**40)], dtype=np.int64),
    "f_empty": np.zeros((0, 4), dtype=np.float32),
}
save_file(tensors, sys.argv[1], metadata={"format": "pt", "lowbit.note": "written by safetensors (python)"})
