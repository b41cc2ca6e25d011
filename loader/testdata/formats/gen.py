#!/usr/bin/env python3
"""Writes the GGUF, .npy, .npz and sharded-safetensors fixtures of
loader/formats_test.go, and expected.json with every tensor's dtype, shape
and value bytes (little-endian, row-major, hex).

This is the independent writer of the round-trip tests: it shares no code
with the Go parsers and uses only Python's standard library (struct, json,
zipfile), following ggml's docs/gguf.md, NumPy's format.py documentation
(NEP 1) and the safetensors README. Values are computed here in row-major
order first; the files then store them as each format says (column-major,
big-endian, block-quantized bytes, deflated), so a parser that reads them
back must undo exactly what this script did.

Run from this directory: python3 gen.py
"""
import json
import random
import struct
import zipfile

rng = random.Random(20261128)
expected = {}


def le_bytes(fmt, values):
    return b"".join(struct.pack("<" + fmt, v) for v in values)


# ---------------------------------------------------------------- GGUF
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f",
          BOOL: "?", U64: "Q", I64: "q", F64: "d"}


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(gval(et, x) for x in items)
    return struct.pack("<" + SCALAR[t], v)


def gguf(path, version, kvs, tensors, alignment=32):
    """tensors: (name, ne list, ggml type, raw bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gval(t, v)
    offsets, off = [], 0
    for _, _, _, raw in tensors:
        offsets.append(off)
        off += len(raw)
        off += (-off) % alignment
    for (name, ne, typ, _), o in zip(tensors, offsets):
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", typ, o)
    out += b"\0" * ((-len(out)) % alignment)
    data = b""
    for (_, _, _, raw), o in zip(tensors, offsets):
        data += b"\0" * (o - len(data)) + raw
    with open(path, "wb") as f:
        f.write(out + data)
    expected[path] = {n: {"dtype": gname[typ], "shape": list(reversed(ne)), "hex": raw.hex()}
                      for n, ne, typ, raw in tensors}


gname = {0: "F32", 1: "F16", 2: "Q4_0", 8: "Q8_0", 12: "Q4_K", 14: "Q6_K", 24: "I8", 26: "I32", 28: "F64", 30: "BF16"}


def floats(n):
    return [round(rng.uniform(-4, 4), 3) for _ in range(n)]


f32 = floats(6)
kvs = [
    ("general.architecture", STR, "llama"),
    ("general.alignment", U32, 64),
    ("test.u8", U8, 200), ("test.i8", I8, -100), ("test.u16", U16, 60000), ("test.i16", I16, -30000),
    ("test.u32", U32, 4000000000), ("test.i32", I32, -2000000000), ("test.f32", F32, 0.5),
    ("test.bool", BOOL, True), ("test.u64", U64, 2**63 + 5), ("test.i64", I64, -2**62), ("test.f64", F64, -1.25),
    ("tokenizer.ggml.tokens", ARR, (STR, ["<s>", "</s>", "héllo", ""])),
    ("test.nested", ARR, (ARR, [(I32, [1, 2, 3]), (I32, []), (F32, [1.5])])),
]
tensors = [
    ("token_embd.weight", [3, 2], 0, le_bytes("f", f32)),
    ("blk.0.attn_norm.weight", [4], 1, le_bytes("e", [1.0, -2.0, 0.5, 65504.0])),
    ("blk.0.ffn_up.weight", [64, 2], 2, bytes(rng.randrange(256) for _ in range(2 * 2 * 18))),
    ("blk.0.ffn_down.weight", [256], 12, bytes(rng.randrange(256) for _ in range(144))),
    ("blk.0.attn_q.weight", [32, 3], 8, bytes(rng.randrange(256) for _ in range(3 * 34))),
    ("blk.0.attn_k.weight", [256, 1, 1, 2], 14, bytes(rng.randrange(256) for _ in range(2 * 210))),
    ("pos", [5], 26, le_bytes("i", [0, 1, -1, 2**31 - 1, -2**31])),
    ("bf", [2], 30, bytes([0x80, 0x3f, 0x00, 0xc0])),
]
gguf("v3.gguf", 3, kvs, tensors, alignment=64)
gguf("v2.gguf", 2, [("general.name", STR, "tiny")],
     [("x", [2, 2], 28, le_bytes("d", [1.0, 2.0, 3.0, 4.0])), ("y", [3], 24, bytes([1, 0xff, 0x80]))])

# ---------------------------------------------------------------- .npy


def npy_bytes(descr, shape, fortran, payload, version=(1, 0)):
    shape_s = "(" + "".join(f"{d}, " for d in shape).rstrip(" ") + ")" if len(shape) != 1 else f"({shape[0]},)"
    if len(shape) > 1:
        shape_s = "(" + ", ".join(str(d) for d in shape) + ")"
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", shape_s)
    hb = header.encode("utf-8" if version[0] == 3 else "latin1")
    pre = 10 if version[0] == 1 else 12
    pad = (-(pre + len(hb) + 1)) % 64
    hb += b" " * pad + b"\n"
    out = b"\x93NUMPY" + bytes(version)
    out += struct.pack("<H", len(hb)) if version[0] == 1 else struct.pack("<I", len(hb))
    return out + hb + payload


def c_to_f_order(values, shape):
    """Reorders row-major values into column-major storage order."""
    import itertools
    strides_c = []
    s = 1
    for d in reversed(shape):
        strides_c.insert(0, s)
        s *= d
    out = []
    for idx in itertools.product(*[range(d) for d in reversed(shape)]):
        idx = tuple(reversed(idx))  # first axis fastest
        out.append(values[sum(i * st for i, st in zip(idx, strides_c))])
    return out


def product(shape):
    n = 1
    for d in shape:
        n *= d
    return n


npy_cases = {
    # name: (descr, struct code, dtype, shape, fortran, values, version)
    "f4_c": ("<f4", "f", "F32", [2, 3], False, floats(6), (1, 0)),
    "i4_be": (">i4", "i", "I32", [4], False, [1, -2, 2**31 - 1, -2**31], (1, 0)),
    "f8_fortran": ("<f8", "d", "F64", [2, 3, 4], True, floats(24), (1, 0)),
    "u2_be_fortran": (">u2", "H", "U16", [3, 2], True, [1, 2, 3, 0xfffe, 5, 6], (2, 0)),
    "f2_v3": ("<f2", "e", "F16", [2, 2], False, [0.5, -1.0, 2.0, 1024.0], (3, 0)),
    "scalar": ("<i8", "q", "I64", [], False, [-42], (1, 0)),
    "empty": ("<f4", "f", "F32", [0, 3], False, [], (1, 0)),
    "bool": ("|b1", "?", "BOOL", [3], False, [True, False, True], (1, 0)),
    "c8": ("<c8", "ff", "C64", [2], False, [(1.0, -1.0), (0.5, 2.0)], (1, 0)),
    "c16_be": (">c16", "dd", "C128", [1], False, [(3.0, -4.0)], (1, 0)),
    "u1": ("|u1", "B", "U8", [5], False, [0, 1, 127, 128, 255], (1, 0)),
}


def pack(code, v, order):
    if len(code) == 2:
        return struct.pack(order + code, *v)
    return struct.pack(order + code, v)


npy_members = {}
for name, (descr, code, dt, shape, fortran, values, ver) in npy_cases.items():
    stored = c_to_f_order(values, shape) if fortran else values
    order = ">" if descr[0] == ">" else "<"
    payload = b"".join(pack(code, v, order) for v in stored)
    raw = npy_bytes(descr, shape, fortran, payload, ver)
    with open(name + ".npy", "wb") as f:
        f.write(raw)
    want = b"".join(pack(code, v, "<") for v in values)
    expected[name + ".npy"] = {name: {"dtype": dt, "shape": shape, "hex": want.hex()}}
    npy_members[name] = (raw, {"dtype": dt, "shape": shape, "hex": want.hex()})

# ---------------------------------------------------------------- .npz
for fname, method in (("stored.npz", zipfile.ZIP_STORED), ("deflated.npz", zipfile.ZIP_DEFLATED)):
    with zipfile.ZipFile(fname, "w", compression=method) as z:
        for name in ("f4_c", "f8_fortran", "i4_be", "scalar", "empty"):
            z.writestr(name + ".npy", npy_members[name][0])
    expected[fname] = {n: npy_members[n][1] for n in ("f4_c", "f8_fortran", "i4_be", "scalar", "empty")}

# ---------------------------------------------------------------- sharded safetensors
import os

os.makedirs("sharded", exist_ok=True)
weight_map = {}
for shard, names in (("model-00001-of-00002.safetensors", ["a", "b"]),
                     ("model-00002-of-00002.safetensors", ["c"])):
    header, data = {}, b""
    for n in names:
        vals = floats(4)
        raw = le_bytes("f", vals)
        header[n] = {"dtype": "F32", "shape": [2, 2], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
        weight_map[n] = shard
        expected.setdefault("sharded", {})[n] = {"dtype": "F32", "shape": [2, 2], "hex": raw.hex()}
    hb = json.dumps(header).encode()
    hb += b" " * ((-len(hb)) % 8)
    with open(os.path.join("sharded", shard), "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)
with open(os.path.join("sharded", "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 48}, "weight_map": weight_map}, f, indent=2)

with open("expected.json", "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
