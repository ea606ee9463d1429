#!/usr/bin/env python3
"""Writes hf_style.safetensors, a fixture laid out the way Hugging Face's writer lays files
out (metadata first, tensors sorted by alignment then name, header padded with spaces to a
multiple of 8), using only the Python standard library: an independent writer that the C++
reader must accept. test_safetensors.cpp checks every value below.

    python3 tests/io/data/gen_fixture.py   # from the repository root
"""
import json
import os
import struct

tensors = {
    # name: (dtype, shape, raw little-endian bytes)
    "embed.weight": ("F32", [3, 4], struct.pack("<12f", *[i * 0.5 - 1.0 for i in range(12)])),
    # bf16 bits of 1.0, -2.0, 0.5, 3.0
    "norm.bias": ("BF16", [4], struct.pack("<4H", 0x3F80, 0xC000, 0x3F00, 0x4040)),
    "positions": ("I64", [2, 3], struct.pack("<6q", -3, -2, -1, 0, 1, 1 << 40)),
    "mask": ("U8", [5], bytes([0, 1, 2, 254, 255])),
    "empty": ("F16", [0, 7], b""),
}
size = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "U8": 1}
order = sorted(tensors, key=lambda n: (-size[tensors[n][0]], n))

header = {"__metadata__": {"format": "pt", "note": "written by gen_fixture.py"}}
data = b""
for name in order:
    dtype, shape, raw = tensors[name]
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_style.safetensors")
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
print(out, 8 + len(text) + len(data), "bytes")
