#!/usr/bin/python3
"""Reference fixtures for the GPT-2 / Llama parity tests (issue 3; issue 14 added GQA group
sizes 4 and 8, an explicit head_dim, 16-bit GPT-2 files and a Hugging Face-sharded Llama).

Implements GPT-2 and Llama in plain PyTorch, from the published architectures (no
`transformers`, no `safetensors` package), builds small random-weight models, and writes
them in the Hugging Face layout (config.json + *.safetensors, written by hand here) together
with expected.safetensors holding prompts, full-sequence logits and greedy continuations.
The committed outputs let CI run the C++ parity tests without PyTorch.

Run with Debian's PyTorch (python3-torch, python3-numpy), from the repository root:

    /usr/bin/python3 tests/reference/gen_reference.py

Deterministic: fixed seeds, CPU float32, single thread; rerunning reproduces identical bytes.
Besides writing, the script self-checks (and exits non-zero on failure):
  - every file it wrote is read back with an independent minimal safetensors reader and
    compared bit for bit with what was meant to be written;
  - prefill-then-decode with a KV cache reproduces the full-sequence logits (1e-5);
  - the float32 logits agree with a float64 evaluation of the same weights;
  - greedy decoding has a clear top-1 margin at every step (robust to f32 rounding);
  - attention is not uniform (entropy of attention rows well below log(#keys)).
"""

import hashlib
import json
import math
import os
import struct
import sys

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
N_GREEDY = 8
MIN_MARGIN = 0.05  # minimum top1 - top2 logit gap at every greedy step
MIN_DISTINCT = 4  # greedy continuations must not just repeat one or two tokens
MAX_ENTROPY_RATIO = 0.9  # every attention row of `prompt` must be this far from uniform

# --------------------------------------------------------------------------------------
# safetensors writing (by hand)
# --------------------------------------------------------------------------------------

ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
}


def tensor_bytes(t):
    """Raw little-endian bytes of a contiguous CPU tensor."""
    t = t.detach().contiguous().cpu()
    assert sys.byteorder == "little"
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def safetensors_bytes(tensors):
    """tensors: list of (name, tensor) in the order the data is laid out."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name, t in tensors:
        b = tensor_bytes(t)
        header[name] = {
            "dtype": ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [off, off + len(b)],
        }
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def sorted_items(d):
    return sorted(d.items(), key=lambda kv: kv[0])


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    WRITTEN.append(path)


def write_json(path, obj):
    write_file(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def write_safetensors(path, tensors):
    write_file(path, safetensors_bytes(tensors))
    EXPECT_IN_FILE[path] = [(n, t.detach().contiguous().clone()) for n, t in tensors]


WRITTEN = []
EXPECT_IN_FILE = {}

# --------------------------------------------------------------------------------------
# independent safetensors reader (numpy only), for the read-back check
# --------------------------------------------------------------------------------------

NP_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "BF16": "<u2"}
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}


def read_safetensors(path):
    """Returns {name: (dtype_str, float64-or-int64 numpy array)}; validates the layout."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, path
    hdr = json.loads(raw[8 : 8 + n].decode("utf-8"))
    assert hdr.pop("__metadata__") == {"format": "pt"}
    data = raw[8 + n :]
    spans = []
    out = {}
    for name, info in hdr.items():
        b, e = info["data_offsets"]
        shape = info["shape"]
        dt = info["dtype"]
        assert e - b == int(np.prod(shape, dtype=np.int64)) * ITEMSIZE[dt], name
        a = np.frombuffer(data[b:e], dtype=NP_DTYPES[dt]).reshape(shape)
        if dt == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = (dt, a.astype(np.int64 if dt.startswith("I") else np.float64))
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:  # contiguous, no gaps or overlaps, covers the whole data section
        assert b == pos, (path, b, pos)
        pos = e
    assert pos == len(data), path
    return out


def verify_written():
    for path, tensors in EXPECT_IN_FILE.items():
        got = read_safetensors(path)
        assert list(got.keys()) == [n for n, _ in tensors], path
        for name, t in tensors:
            dt, a = got[name]
            assert dt == ST_DTYPES[t.dtype], (path, name)
            ref = t.to(torch.float64 if t.is_floating_point() else torch.int64).numpy()
            assert a.shape == ref.shape, (path, name)
            assert np.array_equal(a, ref), (path, name)
    print(f"read-back: {len(EXPECT_IN_FILE)} safetensors files verified bit-exact")


# --------------------------------------------------------------------------------------
# GPT-2 (Radford et al. 2019; the HF GPT2LMHeadModel layout)
# --------------------------------------------------------------------------------------


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def attention(q, k, v, q_pos0, scale, probs_out=None):
    """q [H, Tq, D], k/v [H, Tk, D]; query i sits at absolute position q_pos0 + i and key j
    at position j. Causal: key j visible to query i iff j <= q_pos0 + i."""
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    tq, tk = q.shape[-2], k.shape[-2]
    qpos = torch.arange(tq).unsqueeze(1) + q_pos0
    kpos = torch.arange(tk).unsqueeze(0)
    s = s.masked_fill(kpos > qpos, torch.finfo(s.dtype).min)
    p = torch.softmax(s, dim=-1)
    if probs_out is not None:
        probs_out.append(p.detach().clone())
    return torch.matmul(p, v)


def gpt2_forward(cfg, W, ids, cache=None, probs_out=None, pre=""):
    """ids: 1-D LongTensor of new tokens. cache: None or dict layer -> (k, v) (updated).
    Returns logits [T, V] for the new tokens."""
    E, H = cfg["n_embd"], cfg["n_head"]
    D = E // H
    eps = cfg["layer_norm_epsilon"]
    past = 0 if cache is None or 0 not in cache else cache[0][0].shape[1]
    T = ids.shape[0]
    pos = torch.arange(past, past + T)
    x = W[pre + "wte.weight"][ids] + W[pre + "wpe.weight"][pos]
    for i in range(cfg["n_layer"]):
        p = f"{pre}h.{i}."
        h = layer_norm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = h @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]  # Conv1D: [in, out]
        q, k, v = qkv.split(E, dim=-1)
        q, k, v = (t.view(T, H, D).transpose(0, 1) for t in (q, k, v))
        if cache is not None:
            if i in cache:
                k = torch.cat([cache[i][0], k], dim=1)
                v = torch.cat([cache[i][1], v], dim=1)
            cache[i] = (k, v)
        a = attention(q, k, v, past, 1.0 / math.sqrt(D), probs_out)
        a = a.transpose(0, 1).reshape(T, E)
        x = x + (a @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"])
        h = layer_norm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        h = gelu_new(h @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        x = x + (h @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"])
    x = layer_norm(x, W[pre + "ln_f.weight"], W[pre + "ln_f.bias"], eps)
    return x @ W[pre + "wte.weight"].t()  # tied lm head


def gpt2_config(V, P, E, L, H):
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,
        "bos_token_id": V - 1,
        "embd_pdrop": 0.0,
        "eos_token_id": V - 1,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": P,
        "n_embd": E,
        "n_head": H,
        "n_inner": None,
        "n_layer": L,
        "n_positions": P,
        "resid_pdrop": 0.0,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": V,
    }


def gpt2_weights(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    V, P, E, L = cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"]
    I = cfg["n_inner"] or 4 * E

    def rn(*shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    W = {}
    # Tied head: a small embedding std keeps the token's own embedding from dominating the
    # residual stream (otherwise greedy decoding just repeats the last token).
    W["wte.weight"] = rn(V, E, std=0.3)
    W["wpe.weight"] = rn(P, E, std=0.3)
    for i in range(L):
        p = f"h.{i}."
        W[p + "ln_1.weight"] = 1.0 + rn(E, std=0.1)
        W[p + "ln_1.bias"] = rn(E, std=0.1)
        # q and k columns at 2/sqrt(fan_in), v at 1/sqrt(fan_in): sharper attention
        W[p + "attn.c_attn.weight"] = torch.cat(
            [rn(E, 2 * E, std=2 / math.sqrt(E)), rn(E, E, std=1 / math.sqrt(E))], dim=1
        )
        W[p + "attn.c_attn.bias"] = rn(3 * E, std=0.1)
        W[p + "attn.c_proj.weight"] = rn(E, E, std=1 / math.sqrt(E))
        W[p + "attn.c_proj.bias"] = rn(E, std=0.1)
        W[p + "ln_2.weight"] = 1.0 + rn(E, std=0.1)
        W[p + "ln_2.bias"] = rn(E, std=0.1)
        W[p + "mlp.c_fc.weight"] = rn(E, I, std=1 / math.sqrt(E))
        W[p + "mlp.c_fc.bias"] = rn(I, std=0.1)
        W[p + "mlp.c_proj.weight"] = rn(I, E, std=1 / math.sqrt(I))
        W[p + "mlp.c_proj.bias"] = rn(E, std=0.1)
    W["ln_f.weight"] = 1.0 + rn(E, std=0.1)
    W["ln_f.bias"] = rn(E, std=0.1)
    return W, g


def gpt2_buffers(cfg):
    """HF's h.N.attn.bias causal-mask buffers ([1, 1, P, P], lower-triangular ones), which
    old checkpoints carry and loaders must ignore."""
    P = cfg["n_positions"]
    m = torch.tril(torch.ones(P, P, dtype=torch.float32)).view(1, 1, P, P)
    return {f"h.{i}.attn.bias": m.clone() for i in range(cfg["n_layer"])}


# --------------------------------------------------------------------------------------
# Llama (Touvron et al. 2023; the HF LlamaForCausalLM layout)
# --------------------------------------------------------------------------------------


def rms_norm(x, w, eps):
    xf = x.to(torch.float32) if x.dtype != torch.float64 else x
    var = xf.pow(2).mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(var + eps)).to(x.dtype)


def rope_cos_sin(positions, D, theta, dtype):
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))  # float32
    freqs = positions.float()[:, None] * inv_freq[None, :]  # float32, as HF
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def llama_head_dim(cfg):
    """HF LlamaAttention: config.head_dim when given, else hidden_size // num_attention_heads.
    q/k/v project to heads * head_dim, o_proj back from it, and RoPE and the 1/sqrt scale use
    head_dim (which need not equal hidden_size / heads)."""
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def llama_forward(cfg, W, ids, cache=None, probs_out=None):
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = llama_head_dim(cfg)
    eps = cfg["rms_norm_eps"]
    past = 0 if cache is None or 0 not in cache else cache[0][0].shape[1]
    T = ids.shape[0]
    dt = W["model.embed_tokens.weight"].dtype
    cos, sin = rope_cos_sin(torch.arange(past, past + T), D, cfg["rope_theta"], dt)
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].t()).view(T, H, D).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].t()).view(T, KV, D).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].t()).view(T, KV, D).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if i in cache:
                k = torch.cat([cache[i][0], k], dim=1)
                v = torch.cat([cache[i][1], v], dim=1)
            cache[i] = (k, v)
        rep = H // KV  # GQA: query head j uses kv head j // rep
        kk = k.repeat_interleave(rep, dim=0)
        vv = v.repeat_interleave(rep, dim=0)
        a = attention(q, kk, vv, past, 1.0 / math.sqrt(D), probs_out)
        a = a.transpose(0, 1).reshape(T, H * D)
        x = x + a @ W[p + "self_attn.o_proj.weight"].t()
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        gate = h @ W[p + "mlp.gate_proj.weight"].t()
        up = h @ W[p + "mlp.up_proj.weight"].t()
        x = x + (torch.nn.functional.silu(gate) * up) @ W[p + "mlp.down_proj.weight"].t()
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.t()


def llama_config(V, E, I, L, H, KV, P, tied, torch_dtype, head_dim=None):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": E,
        "initializer_range": 0.02,
        "intermediate_size": I,
        "max_position_embeddings": P,
        "model_type": "llama",
        "num_attention_heads": H,
        "num_hidden_layers": L,
        "num_key_value_heads": KV,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": V,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    return dict(sorted(cfg.items()))


def llama_weights(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    V, E, I, L = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = llama_head_dim(cfg)

    def rn(*shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    W = {}
    # tied head: small std, as for GPT-2, so greedy decoding does not just repeat tokens
    W["model.embed_tokens.weight"] = rn(V, E, std=0.3 if cfg["tie_word_embeddings"] else 0.7)
    for i in range(L):
        p = f"model.layers.{i}."
        W[p + "input_layernorm.weight"] = 1.0 + rn(E, std=0.1)
        # q and k at 2/sqrt(fan_in): sharper attention
        W[p + "self_attn.q_proj.weight"] = rn(H * D, E, std=2 / math.sqrt(E))
        W[p + "self_attn.k_proj.weight"] = rn(KV * D, E, std=2 / math.sqrt(E))
        W[p + "self_attn.v_proj.weight"] = rn(KV * D, E, std=1 / math.sqrt(E))
        W[p + "self_attn.o_proj.weight"] = rn(E, H * D, std=1 / math.sqrt(H * D))
        W[p + "post_attention_layernorm.weight"] = 1.0 + rn(E, std=0.1)
        W[p + "mlp.gate_proj.weight"] = rn(I, E, std=1 / math.sqrt(E))
        W[p + "mlp.up_proj.weight"] = rn(I, E, std=1 / math.sqrt(E))
        W[p + "mlp.down_proj.weight"] = rn(E, I, std=1 / math.sqrt(I))
    W["model.norm.weight"] = 1.0 + rn(E, std=0.1)
    if not cfg["tie_word_embeddings"]:
        # std 2/sqrt(E) rather than 1/sqrt(E): logits spread over several units
        W["lm_head.weight"] = rn(V, E, std=2 / math.sqrt(E))
    return W, g


# --------------------------------------------------------------------------------------
# independent second implementations, for cross-checking the ones above
# --------------------------------------------------------------------------------------


def gpt2_forward_alt(cfg, W, ids):
    """GPT-2 through torch.nn building blocks: F.layer_norm, nn.MultiheadAttention (whose
    in_proj is the transposed Conv1D weight) with a boolean causal mask, and
    F.gelu(approximate="tanh")."""
    E, H = cfg["n_embd"], cfg["n_head"]
    eps = cfg["layer_norm_epsilon"]
    F = torch.nn.functional
    T = ids.shape[0]
    x = (W["wte.weight"][ids] + W["wpe.weight"][:T]).unsqueeze(1)  # [T, 1, E]
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # True = not allowed
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        mha = torch.nn.MultiheadAttention(E, H, dropout=0.0, bias=True)
        mha.in_proj_weight.copy_(W[p + "attn.c_attn.weight"].t())
        mha.in_proj_bias.copy_(W[p + "attn.c_attn.bias"])
        mha.out_proj.weight.copy_(W[p + "attn.c_proj.weight"].t())
        mha.out_proj.bias.copy_(W[p + "attn.c_proj.bias"])
        mha.eval()
        h = F.layer_norm(x, (E,), W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = F.layer_norm(x, (E,), W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        h = F.gelu(F.linear(h, W[p + "mlp.c_fc.weight"].t(), W[p + "mlp.c_fc.bias"]), approximate="tanh")
        x = x + F.linear(h, W[p + "mlp.c_proj.weight"].t(), W[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (E,), W["ln_f.weight"], W["ln_f.bias"], eps)
    return F.linear(x.squeeze(1), W["wte.weight"])


def llama_forward_meta(cfg, W, ids):
    """Llama the way Meta's original code computes it: q/k weights in Meta's layout (HF's
    checkpoint converter permutes their rows; undone here), RoPE as a complex rotation of
    interleaved pairs, GQA by expand+reshape, additive -inf causal mask. Agreement with
    llama_forward checks HF's rotate-half convention."""
    E = cfg["hidden_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = llama_head_dim(cfg)
    eps = cfg["rms_norm_eps"]
    T = ids.shape[0]

    def unpermute(w, n):  # inverse of HF convert_llama_weights_to_hf.permute
        return w.view(n, 2, D // 2, E).transpose(1, 2).reshape(n * D, E)

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    freqs = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, D, 2)[: D // 2].float() / D))
    freqs = torch.outer(torch.arange(T).float(), freqs)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)  # [T, D/2]

    def rope(x):  # x [T, n, D], interleaved pairs
        xc = torch.view_as_complex(x.reshape(T, x.shape[1], D // 2, 2))
        return torch.view_as_real(xc * freqs_cis[:, None, :]).reshape(x.shape)

    mask = torch.full((T, T), float("-inf")).triu(1)
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = norm(x, W[p + "input_layernorm.weight"])
        q = (h @ unpermute(W[p + "self_attn.q_proj.weight"], H).t()).view(T, H, D)
        k = (h @ unpermute(W[p + "self_attn.k_proj.weight"], KV).t()).view(T, KV, D)
        v = (h @ W[p + "self_attn.v_proj.weight"].t()).view(T, KV, D)
        q, k = rope(q), rope(k)
        rep = H // KV
        k = k[:, :, None, :].expand(T, KV, rep, D).reshape(T, H, D)
        v = v[:, :, None, :].expand(T, KV, rep, D).reshape(T, H, D)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        s = q @ k.transpose(1, 2) / math.sqrt(D) + mask
        a = (torch.softmax(s.float(), dim=-1).type_as(q) @ v).transpose(0, 1).reshape(T, H * D)
        x = x + a @ W[p + "self_attn.o_proj.weight"].t()
        h = norm(x, W[p + "post_attention_layernorm.weight"])
        w1, w3 = W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"]
        x = x + (torch.nn.functional.silu(h @ w1.t()) * (h @ w3.t())) @ W[p + "mlp.down_proj.weight"].t()
    x = norm(x, W["model.norm.weight"])
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.t()


# --------------------------------------------------------------------------------------
# checks and expected outputs
# --------------------------------------------------------------------------------------


def greedy(fwd, prompt, n):
    """Greedy decoding, recomputing the full sequence at every step. Returns the new tokens
    and the smallest top1-top2 gap seen."""
    seq = prompt.clone()
    out, margin = [], float("inf")
    for _ in range(n):
        last = fwd(seq)[-1]
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        t = int(torch.argmax(last))
        out.append(t)
        seq = torch.cat([seq, torch.tensor([t], dtype=torch.int64)])
    return torch.tensor(out, dtype=torch.int64), margin


def check_kv_cache(fwd_cached, full_logits, ids, split):
    """Prefill ids[:split] then decode the rest one token at a time with a KV cache."""
    cache = {}
    parts = [fwd_cached(ids[:split], cache)]
    for t in range(split, ids.shape[0]):
        parts.append(fwd_cached(ids[t : t + 1], cache))
    inc = torch.cat(parts, dim=0)
    return float((inc - full_logits).abs().max())


def entropy_ratios(probs_list):
    """Per attention row with >= 4 visible keys: entropy / log(#visible keys)."""
    ratios = []
    for p in probs_list:  # [H, T, T]
        T = p.shape[-1]
        for t in range(3, T):
            row = p[:, t, : t + 1].double()
            ent = -(row * torch.log(row.clamp_min(1e-300))).sum(-1)
            ratios.extend((ent / math.log(t + 1)).tolist())
    return ratios


def make_prompts(g, V, lengths):
    """Prompts with ids spread over the whole vocab (a random permutation's prefix)."""
    prompts = []
    for T in lengths:
        perm = torch.randperm(V, generator=g)
        prompts.append(perm[:T].to(torch.int64).clone())
    return prompts


REPORT = []


def choose_prompts(variants, g, lengths):
    """Draws prompt pairs from g until every variant's greedy continuations of both prompts
    have a clear top-1 margin at every step and are not a single repeated token, and no
    attention row of the first prompt is near uniform. Variants (e.g. the f32/bf16/f16
    copies of one model) thereby share their prompts."""
    V = variants[0]["cfg"]["vocab_size"]
    for _attempt in range(50):
        prompts = make_prompts(g, V, lengths)
        ok = True
        for var in variants:
            res = [greedy(var["fwd"], pr, N_GREEDY) for pr in prompts]
            margin = min(m for _, m in res)
            distinct = min(len(set(t.tolist())) for t, _ in res)
            probs = []
            var["fwd"](prompts[0], probs)
            # with 8 heads of 4 dimensions, some row is near uniform for many prompts
            flat = max(entropy_ratios(probs))
            ok = ok and margin >= MIN_MARGIN and distinct >= MIN_DISTINCT and flat < MAX_ENTROPY_RATIO
            var["greedy"] = [t for t, _ in res]
            var["margin"] = margin
        if ok:
            return prompts
    raise SystemExit("no prompts with clear, varied greedy continuations")


def finish_models(variants, g, lengths=(11, 7)):
    """Chooses prompts, runs the checks and writes each variant's expected.safetensors."""
    prompt, prompt2 = choose_prompts(variants, g, lengths)
    for var in variants:
        name, fwd, fwd64 = var["name"], var["fwd"], var["fwd64"]
        gr, gr2 = var["greedy"]
        probs = []
        logits = fwd(prompt, probs)
        logits2 = fwd(prompt2)

        # float64 evaluation of the same weights vs the float32 math
        d64 = max(
            float((fwd64(prompt) - logits.double()).abs().max()),
            float((fwd64(prompt2) - logits2.double()).abs().max()),
        )
        # an independently written implementation agrees
        dalt = max(
            float((var["fwd_alt"](prompt) - logits).abs().max()),
            float((var["fwd_alt"](prompt2) - logits2).abs().max()),
        )
        # KV cache: prefill-then-decode equals the full sequence
        full = torch.cat([prompt, gr])
        full_logits = fwd(full)
        dkv = max(check_kv_cache(var["fwd_cached"], full_logits, full, s) for s in (1, 5, prompt.shape[0]))
        # causality and greedy consistency: the prompt rows of the longer sequence's logits
        # are the prompt's logits, and its argmaxes are the greedy tokens
        T = prompt.shape[0]
        dcausal = float((full_logits[:T] - logits).abs().max())
        assert torch.equal(full_logits[T - 1 : T - 1 + N_GREEDY].argmax(-1), gr), name
        ratios = entropy_ratios(probs)
        assert dkv <= 1e-5, (name, dkv)
        assert dcausal <= 1e-5, (name, dcausal)
        assert d64 <= 1e-4, (name, d64)
        assert dalt <= 2e-5, (name, dalt)
        assert max(ratios) < MAX_ENTROPY_RATIO, (name, max(ratios))

        write_safetensors(
            os.path.join(HERE, name, "expected.safetensors"),
            [
                ("prompt", prompt),
                ("logits", logits.contiguous()),
                ("greedy", gr),
                ("prompt2", prompt2),
                ("logits2", logits2.contiguous()),
                ("greedy2", gr2),
            ],
        )
        REPORT.append(
            dict(
                name=name,
                prompt=prompt.tolist(),
                greedy=gr.tolist(),
                prompt2=prompt2.tolist(),
                greedy2=gr2.tolist(),
                margin=var["margin"],
                kv=dkv,
                f64=d64,
                alt=dalt,
                ent_max=max(ratios),
                ent_mean=sum(ratios) / len(ratios),
                logit_std=float(logits.std()),
                logit_absmax=float(logits.abs().max()),
            )
        )


def to64(W):
    return {k: v.double() for k, v in W.items()}


def build_gpt2():
    cfg = gpt2_config(V=128, P=64, E=64, L=2, H=4)
    W, g = gpt2_weights(cfg, seed=1234)
    W64 = to64(W)

    def fwd(ids, probs=None):
        return gpt2_forward(cfg, W, ids, probs_out=probs)

    def fwd_cached(ids, cache):
        return gpt2_forward(cfg, W, ids, cache=cache)

    def fwd64(ids):
        return gpt2_forward(cfg, W64, ids)

    def fwd_alt(ids):
        return gpt2_forward_alt(cfg, W, ids)

    bufs = gpt2_buffers(cfg)
    tensors = sorted_items({**W, **bufs})

    d = os.path.join(HERE, "gpt2_tiny")
    write_json(os.path.join(d, "config.json"), cfg)
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    finish_models([dict(name="gpt2_tiny", cfg=cfg, fwd=fwd, fwd_cached=fwd_cached, fwd64=fwd64, fwd_alt=fwd_alt)], g)

    # Same weights, "transformer." prefix, two shards + index.
    d = os.path.join(HERE, "gpt2_prefixed_sharded")
    pref = [("transformer." + n, t) for n, t in tensors]
    half = len(pref) // 2
    shards = [pref[:half], pref[half:]]
    weight_map = {}
    total = 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(d, fname), shard)
        for n, t in shard:
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    write_json(os.path.join(d, "config.json"), cfg)
    write_json(
        os.path.join(d, "model.safetensors.index.json"),
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )
    # The prefixed forward must read the prefixed names identically.
    WP = {n: t for n, t in pref}
    probe = torch.arange(0, 128, 11, dtype=torch.int64)
    assert torch.equal(gpt2_forward(cfg, WP, probe, pre="transformer."), fwd(probe))
    # same expected outputs as gpt2_tiny (same weights, same prompts)
    src = os.path.join(HERE, "gpt2_tiny", "expected.safetensors")
    write_safetensors(os.path.join(d, "expected.safetensors"), EXPECT_IN_FILE[src])
    REPORT.append(dict(REPORT[-1], name="gpt2_prefixed_sharded"))


def gpt2_variant(name, W, cfg, store_dtype):
    """Writes one GPT-2 model dir with W stored in store_dtype (no mask buffers: transformers
    registers them non-persistent, so 16-bit checkpoints it writes carry none); the expected
    values come from the stored (rounded) weights upcast to float32."""
    Ws = {k: v.to(store_dtype) for k, v in W.items()}
    Wf = {k: v.to(torch.float32) for k, v in Ws.items()}
    check_rounding(W, Wf, store_dtype)
    W64 = to64(Wf)

    def fwd(ids, probs=None):
        return gpt2_forward(cfg, Wf, ids, probs_out=probs)

    def fwd_cached(ids, cache):
        return gpt2_forward(cfg, Wf, ids, cache=cache)

    def fwd64(ids):
        return gpt2_forward(cfg, W64, ids)

    def fwd_alt(ids):
        return gpt2_forward_alt(cfg, Wf, ids)

    d = os.path.join(HERE, name)
    write_json(os.path.join(d, "config.json"), cfg)
    write_safetensors(os.path.join(d, "model.safetensors"), sorted_items(Ws))
    return dict(name=name, cfg=cfg, fwd=fwd, fwd_cached=fwd_cached, fwd64=fwd64, fwd_alt=fwd_alt)


def build_gpt2_16bit():
    # A smaller GPT-2 than gpt2_tiny (so each dir stays small), stored as BF16 and as F16.
    cfg = gpt2_config(V=64, P=32, E=32, L=2, H=4)
    W, g = gpt2_weights(cfg, seed=2468)
    variants = [
        gpt2_variant(name, W, dict(cfg, torch_dtype=tdn), sd)
        for name, tdn, sd in (
            ("gpt2_small_bf16", "bfloat16", torch.bfloat16),
            ("gpt2_small_f16", "float16", torch.float16),
        )
    ]
    finish_models(variants, g)


LLAMA_DIMS = dict(V=112, E=64, I=160, L=2, H=4, KV=2, P=64)
# The head-layout fixtures are smaller than llama_tiny so that each dir stays well under 100 KB.
LLAMA_SMALL = dict(V=48, E=32, I=40, L=2, P=32)


def check_rounding(W, Wf, store_dtype):
    """torch's f32 -> bf16/f16 conversion equals an independent numpy round-to-nearest-even."""
    for k, v in W.items():
        x = v.numpy()
        if store_dtype == torch.bfloat16:
            u = x.view(np.uint32).astype(np.uint64)
            r = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
        elif store_dtype == torch.float16:
            r = x.astype(np.float16).astype(np.float32)
        else:
            r = x
        assert np.array_equal(r, Wf[k].numpy()), k


def llama_variant(name, W, cfg, store_dtype):
    """Writes one Llama model dir with W stored in store_dtype; returns the variant whose
    expected values come from the stored (rounded) weights upcast to float32."""
    Ws = {k: v.to(store_dtype) for k, v in W.items()}
    Wf = {k: v.to(torch.float32) for k, v in Ws.items()}
    check_rounding(W, Wf, store_dtype)
    W64 = to64(Wf)

    def fwd(ids, probs=None):
        return llama_forward(cfg, Wf, ids, probs_out=probs)

    def fwd_cached(ids, cache):
        return llama_forward(cfg, Wf, ids, cache=cache)

    def fwd64(ids):
        return llama_forward(cfg, W64, ids)

    def fwd_alt(ids):
        return llama_forward_meta(cfg, Wf, ids)

    d = os.path.join(HERE, name)
    write_json(os.path.join(d, "config.json"), cfg)
    write_safetensors(os.path.join(d, "model.safetensors"), sorted_items(Ws))
    return dict(name=name, cfg=cfg, fwd=fwd, fwd_cached=fwd_cached, fwd64=fwd64, fwd_alt=fwd_alt)


def build_llama():
    # GQA, untied, one set of weights stored as F32, BF16 and F16 (shared prompts)
    cfg = llama_config(**LLAMA_DIMS, tied=False, torch_dtype="float32")
    W, g = llama_weights(cfg, seed=4321)
    variants = [
        llama_variant(name, W, dict(cfg, torch_dtype=tdn), sd)
        for name, tdn, sd in (
            ("llama_tiny", "float32", torch.float32),
            ("llama_tiny_bf16", "bfloat16", torch.bfloat16),
            ("llama_tiny_f16", "float16", torch.float16),
        )
    ]
    finish_models(variants, g)

    # tied embeddings: no lm_head.weight in the file
    cfg = llama_config(**LLAMA_DIMS, tied=True, torch_dtype="float32")
    W, g = llama_weights(cfg, seed=777)
    assert "lm_head.weight" not in W
    finish_models([llama_variant("llama_tied", W, cfg, torch.float32)], g)


def llama_module_order(cfg):
    """Parameter names in LlamaForCausalLM.state_dict() order: the order transformers hands
    tensors to the shard splitter."""
    names = ["model.embed_tokens.weight"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{n}_proj.weight" for n in "qkvo"]
        names += [p + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    names.append("model.norm.weight")
    if not cfg["tie_word_embeddings"]:
        names.append("lm_head.weight")
    return names


def hf_shards(named, max_shard_size):
    """huggingface_hub's split_state_dict_into_shards: walk the state dict in order and start
    a new shard when the next tensor would take the current one past max_shard_size bytes (a
    tensor larger than the limit gets a shard of its own)."""
    shards, cur, cur_size = [], [], 0
    for n, t in named:
        size = t.numel() * t.element_size()
        if size > max_shard_size:
            shards.append([(n, t)])
            continue
        if cur_size + size > max_shard_size:
            shards.append(cur)
            cur, cur_size = [], 0
        cur.append((n, t))
        cur_size += size
    if cur:
        shards.append(cur)
    return shards


def write_llama_sharded(name, W, cfg, source, max_shard_size):
    """The weights of `source` (already written) as save_pretrained(max_shard_size=...) lays
    them out: model-0000k-of-0000N.safetensors split in state-dict order, each file's tensors
    sorted by name (as the safetensors writer orders same-dtype tensors), and
    model.safetensors.index.json written with sort_keys and indent 2."""
    d = os.path.join(HERE, name)
    order = llama_module_order(cfg)
    assert sorted(order) == sorted(W), name
    shards = hf_shards([(n, W[n]) for n in order], max_shard_size)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(d, fname), sorted(shard, key=lambda kv: kv[0]))
        for n, t in shard:
            weight_map[n] = fname
            total += t.numel() * t.element_size()
    write_json(os.path.join(d, "config.json"), cfg)
    # total_parameters: recent transformers releases write it next to total_size; a loader
    # must take the file names from weight_map and ignore the metadata.
    index = {
        "metadata": {"total_parameters": sum(t.numel() for t in W.values()), "total_size": total},
        "weight_map": dict(sorted(weight_map.items())),
    }
    write_file(os.path.join(d, "model.safetensors.index.json"), (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    src = os.path.join(HERE, source, "expected.safetensors")
    write_safetensors(os.path.join(d, "expected.safetensors"), EXPECT_IN_FILE[src])
    REPORT.append(dict(next(r for r in REPORT if r["name"] == source), name=name))
    return len(shards)


def build_llama_heads():
    # Group size 4: 8 query heads over 2 KV heads (head_dim 4).
    cfg = llama_config(**LLAMA_SMALL, H=8, KV=2, tied=False, torch_dtype="float32")
    W, g = llama_weights(cfg, seed=4404)
    finish_models([llama_variant("llama_gqa4", W, cfg, torch.float32)], g)
    # The same weights as Hugging Face shards them: 24000-byte shards split both layers
    # across files.
    n = write_llama_sharded("llama_sharded", W, cfg, "llama_gqa4", max_shard_size=24000)
    assert n == 3, n

    # MQA, group size 8: 8 query heads over a single KV head.
    cfg = llama_config(**LLAMA_SMALL, H=8, KV=1, tied=False, torch_dtype="float32")
    W, g = llama_weights(cfg, seed=4808)
    finish_models([llama_variant("llama_mqa", W, cfg, torch.float32)], g)

    # Explicit head_dim 12, twice hidden_size / heads (24 / 4 = 6): q/k/v project up to
    # heads * 12, o_proj back down to 24, and RoPE and the attention scale use 12.
    cfg = llama_config(V=48, E=24, I=32, L=2, P=32, H=4, KV=2, head_dim=12, tied=False, torch_dtype="float32")
    assert llama_head_dim(cfg) * cfg["num_attention_heads"] != cfg["hidden_size"]
    W, g = llama_weights(cfg, seed=1212)
    finish_models([llama_variant("llama_head_dim", W, cfg, torch.float32)], g)


def main():
    with torch.no_grad():
        build_gpt2()
        build_llama()
        build_gpt2_16bit()
        build_llama_heads()
    verify_written()

    for r in REPORT:
        print(
            f"{r['name']:22s} prompt={r['prompt']} greedy={r['greedy']}\n"
            f"{'':22s} prompt2={r['prompt2']} greedy2={r['greedy2']}\n"
            f"{'':22s} min greedy margin {r['margin']:.3f}  kv-cache max|d| {r['kv']:.2e}  "
            f"f32-vs-f64 max|d| {r['f64']:.2e}  alt impl max|d| {r['alt']:.2e}\n{'':22s}   logits std {r['logit_std']:.2f} max|.| {r['logit_absmax']:.2f}\n"
            f"{'':22s} attention entropy/log(keys): max {r['ent_max']:.3f} mean {r['ent_mean']:.3f}"
        )
    total = 0
    print("files:")
    for p in sorted(WRITTEN):
        sz = os.path.getsize(p)
        total += sz
        with open(p, "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()[:16]
        print(f"  {os.path.relpath(p, HERE):55s} {sz:9d}  {h}")
    print(f"  total {total} bytes")


if __name__ == "__main__":
    main()
