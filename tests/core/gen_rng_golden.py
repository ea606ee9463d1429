#!/usr/bin/env python3
"""Golden values for tests/core/test_rngs.cpp, computed independently of the C++ headers.

Re-implements, in plain Python (no numpy):
  - Philox4x32-10 (Salmon et al., SC'11; the Random123 reference algorithm),
  - nnxcpp's key derivation: key_from_seed, fold_in, split_key, fnv1a64 of stream names,
    a stream's successive keys (RngStream::next), using the domain constants of
    include/nnx/core/rngs.hpp,
  - init::normal (Box-Muller in double), init::uniform and init::truncated_normal, each
    value rounded once to float32 with struct.pack('f').

It prints C++ arrays; paste them into the "golden" block of test_rngs.cpp. Rerun with:

    python3 tests/core/gen_rng_golden.py > /tmp/golden.inc

Floats are printed as their IEEE-754 bit patterns, so the test compares bit for bit.
Box-Muller goes through log/cos/sin: CPython's math module calls the platform libm, as the
C++ code does, so the bits agree on the platform that generated them; another libm may
differ by an ulp of a double, which almost never changes the float32 result.
"""

import math
import struct

M32 = 0xFFFFFFFF

# Domain constants: the last counter word separating the uses of a key (rngs.hpp).
DOMAIN_BITS = 0
DOMAIN_TRUNCATED = 1
DOMAIN_FOLD_IN = 0xF01D1
DOMAIN_SPLIT = 0x5B1170
DOMAIN_STREAM = 0x57EA3


def philox4x32_10(ctr, key):
    """Random123 philox4x32 with 10 rounds: 4 x u32 counter, 2 x u32 key -> 4 x u32."""
    M0, M1 = 0xD2511F53, 0xCD9E8D57
    W0, W1 = 0x9E3779B9, 0xBB67AE85
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r > 0:  # the key is bumped before every round but the first
            k0 = (k0 + W0) & M32
            k1 = (k1 + W1) & M32
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & M32, (p0 >> 32) ^ c3 ^ k1, p0 & M32)
    return [c0, c1, c2, c3]


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def key_from_seed(seed):
    return (seed & M32, (seed >> 32) & M32)


def fold_in(key, data):
    b = philox4x32_10([data & M32, (data >> 32) & M32, 0, DOMAIN_FOLD_IN], key)
    return (b[0], b[1])


def split_key(key, n):
    return [tuple(philox4x32_10([i, 0, 0, DOMAIN_SPLIT], key)[:2]) for i in range(n)]


def stream_key(name, seed):
    return fold_in(key_from_seed(seed), fnv1a64(name))


def stream_next(stream_k, n):
    """The n-th key (0-based) a stream hands out."""
    b = philox4x32_10([n & M32, (n >> 32) & M32, 0, DOMAIN_STREAM], stream_k)
    return (b[0], b[1])


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def next_toward(x, y):
    """std::nextafter(float x, float y) for finite float32 values with x != y."""
    bits = f32_bits(x)
    if x == 0.0:
        bits = 1 | (0x80000000 if y < 0 else 0)
    elif (y > x) == (x > 0):
        bits += 1
    else:
        bits -= 1
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def unit_interval(bits):  # [0, 1), top 24 bits
    return (bits >> 8) * 2.0**-24


def unit_interval_open0(bits):  # (0, 1]
    return ((bits >> 8) + 1) * 2.0**-24


def box_muller(a, b):
    r = math.sqrt(-2.0 * math.log(unit_interval_open0(a)))
    theta = 2.0 * math.pi * unit_interval(b)
    return r * math.cos(theta), r * math.sin(theta)


def normal(key, n, stddev):
    sd = f32(stddev)
    out = []
    block = 0
    while len(out) < n:
        b = philox4x32_10([block & M32, (block >> 32) & M32, 0, DOMAIN_BITS], key)
        z0, z1 = box_muller(b[0], b[1])
        z2, z3 = box_muller(b[2], b[3])
        for z in (z0, z1, z2, z3):
            if len(out) < n:
                out.append(f32(z * sd))
        block += 1
    return out


def uniform(key, n, low, high):
    lo, hi = f32(low), f32(high)
    out = []
    block = 0
    while len(out) < n:
        b = philox4x32_10([block & M32, (block >> 32) & M32, 0, DOMAIN_BITS], key)
        for lane in range(4):
            if len(out) < n:
                v = f32(lo + (hi - lo) * unit_interval(b[lane]))
                out.append(v if v < hi else next_toward(hi, lo))
        block += 1
    return out


def truncated_normal(key, n, stddev, lower, upper):
    sd, lo, hi = f32(stddev), f32(lower), f32(upper)
    out = []
    for i in range(n):
        attempt = 0
        while True:
            b = philox4x32_10([i & M32, (i >> 32) & M32, attempt, DOMAIN_TRUNCATED], key)
            z = box_muller(b[0], b[1])[0]
            if lo <= z <= hi:
                out.append(f32(z * sd))
                break
            attempt += 1
    return out


# ---- printing ---------------------------------------------------------------------------


def hex32(v):
    return "0x%08xu" % v


def print_u32_array(name, values, comment=None):
    if comment:
        print("// " + comment)
    body = ", ".join(hex32(v) for v in values)
    print("constexpr std::uint32_t %s[] = {%s};" % (name, body))


def print_keys(name, keys, comment=None):
    if comment:
        print("// " + comment)
    body = ", ".join("{%s, %s}" % (hex32(k[0]), hex32(k[1])) for k in keys)
    print("constexpr nnx::RngKey %s[] = {%s};" % (name, body))


def print_floats(name, values, comment=None):
    if comment:
        print("// " + comment)
    print("// values: " + ", ".join(repr(v) for v in values))
    body = ", ".join(hex32(f32_bits(v)) for v in values)
    print("constexpr std::uint32_t %s[] = {%s};" % (name, body))


def main():
    # Sanity: the Random123 known-answer vectors (the C++ test checks them too).
    kat = [
        ([0, 0, 0, 0], (0, 0), [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([M32] * 4, (M32, M32), [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], (0xA4093822, 0x299F31D0),
         [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for ctr, key, want in kat:
        assert philox4x32_10(ctr, key) == want, "philox KAT failed"

    print("// ---- generated by tests/core/gen_rng_golden.py; do not edit by hand ----")
    print("// fnv1a64 of stream names")
    for nm in ("default", "params", "dropout"):
        print("constexpr std::uint64_t fnv_%s = 0x%016xull;" % (nm, fnv1a64(nm)))

    print_keys("golden_fold_in", [fold_in(key_from_seed(42), d) for d in (0, 1, 7, 1 << 40)],
               "fold_in(key_from_seed(42), d) for d = 0, 1, 7, 2^40")
    print_keys("golden_split", split_key(key_from_seed(42), 4), "split_key(key_from_seed(42), 4)")
    print_keys("golden_split_seed_big", split_key(key_from_seed(0x123456789ABCDEF0), 3),
               "split_key(key_from_seed(0x123456789abcdef0), 3)")

    default0 = stream_key("default", 0)
    print_keys("golden_default0_stream", [default0], "Rngs{0}: the 'default' stream's key")
    print_keys("golden_default0_next", [stream_next(default0, i) for i in range(4)],
               "Rngs{0}: the first four keys of rngs() (== rngs.params(), which falls back to default)")
    params0 = stream_key("params", 0)
    dropout1 = stream_key("dropout", 1)
    print_keys("golden_params0_next", [stream_next(params0, i) for i in range(3)],
               "Rngs{{\"params\", 0}, {\"dropout\", 1}}: first three params() keys")
    print_keys("golden_dropout1_next", [stream_next(dropout1, i) for i in range(3)],
               "Rngs{{\"params\", 0}, {\"dropout\", 1}}: first three dropout() keys")

    k = stream_next(default0, 0)
    print_floats("golden_normal_seed0", normal(k, 10, 1.0),
                 "init::normal(Rngs{0}.params(), {10}, 1.0f)")
    k2 = stream_next(default0, 1)
    print_floats("golden_normal_seed0_second", normal(k2, 7, 0.02),
                 "second key of Rngs{0}: init::normal(key, {7}, 0.02f)")
    kp = stream_next(params0, 0)
    print_floats("golden_uniform_params0", uniform(kp, 9, -0.5, 0.25),
                 "Rngs{{\"params\", 0}, ...}.params() first key: init::uniform(key, {9}, -0.5f, 0.25f)")
    kd = key_from_seed(1234)
    print_floats("golden_truncated_1234", truncated_normal(kd, 8, 1.0, -0.5, 0.5),
                 "init::truncated_normal(key_from_seed(1234), {8}, 1.0f, -0.5f, 0.5f)")
    print_floats("golden_normal_big_block", normal(key_from_seed(7), 6, 3.0),
                 "init::normal(key_from_seed(7), {6}, 3.0f)")
    print("// ---- end of generated block ----")


if __name__ == "__main__":
    main()
