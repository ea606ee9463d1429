#!/usr/bin/python3
"""Gradient fixtures for the training parity tests (issue 11).

For several of the model fixtures gen_reference.py wrote (GPT-2 with its tied head, Llama with
GQA group sizes 2 and 4, a tied Llama head, an explicit head_dim, and 16-bit files widened to
float64), computes with torch.autograd, in float64, the mean next-token cross-entropy of a
small batch and the gradient of every weight, and writes <fixture>/grads.safetensors:

    tokens   I32 [B, T]    the model's input
    targets  I32 [B, T]    next tokens; -100 (ignored, as PyTorch's ignore_index) at one place
    loss     F32 [1]       mean cross-entropy over the valid targets
    <name>   F32           d loss / d weight, under the weight's Hugging Face name and layout

The forward passes are gen_reference.py's own (plain PyTorch from the published
architectures), so the C++ backward passes are checked against autograd of an independent
implementation, in higher precision than the f32 code under test.

Run with Debian's PyTorch from the repository root (deterministic; rerunning reproduces the
files byte for byte):

    /usr/bin/python3 tests/reference/gen_grads.py

Self-checks (non-zero exit on failure): every file is read back bit-exact by gen_reference's
independent reader; and for each fixture a central finite difference of the float64 loss
along a random direction agrees with the autograd directional derivative to 1e-6 relative.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_reference as ref  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

IGNORE = -100
FIXTURES = [
    # name, batch, length
    ("gpt2_tiny", 2, 16),
    ("gpt2_small_bf16", 2, 9),
    ("llama_tiny", 2, 12),
    ("llama_gqa4", 2, 11),
    ("llama_tied", 2, 12),
    ("llama_head_dim", 2, 10),
    ("llama_tiny_bf16", 2, 12),
]


def load(name):
    d = os.path.join(ref.HERE, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    W = {n: torch.tensor(a, dtype=torch.float64) for n, (dt, a) in ref.read_safetensors(os.path.join(d, "model.safetensors")).items()}
    return d, cfg, W


def loss_of(cfg, W, tokens, targets):
    fwd = ref.gpt2_forward if cfg["model_type"] == "gpt2" else ref.llama_forward
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for b in range(tokens.shape[0]):
        logits = fwd(cfg, W, tokens[b])
        total = total + torch.nn.functional.cross_entropy(logits, targets[b], ignore_index=IGNORE, reduction="sum")
        count += int((targets[b] != IGNORE).sum())
    return total / count


def build(name, B, T, seed):
    d, cfg, W = load(name)
    V = cfg["vocab_size"]
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, V, (B, T + 1), generator=g)
    tokens, targets = seq[:, :T].clone(), seq[:, 1:].clone()
    targets[B - 1, T // 2] = IGNORE  # padding: contributes nothing
    for w in W.values():
        w.requires_grad_(True)
    loss = loss_of(cfg, W, tokens, targets)
    loss.backward()
    unused = [n for n, w in W.items() if w.grad is None]  # mask buffers some exporters store
    assert all(n.endswith((".attn.bias", ".attn.masked_bias")) for n in unused), (name, unused)
    W = {n: w for n, w in W.items() if w.grad is not None}

    # Self-check: the directional derivative against a central finite difference in float64.
    with torch.no_grad():
        dirs = {n: torch.randn(w.shape, generator=g, dtype=torch.float64) for n, w in W.items()}
        analytic = sum(float((W[n].grad * dirs[n]).sum()) for n in W)
        h = 1e-5
        plus = {n: W[n] + h * dirs[n] for n in W}
        minus = {n: W[n] - h * dirs[n] for n in W}
        numeric = (float(loss_of(cfg, plus, tokens, targets)) - float(loss_of(cfg, minus, tokens, targets))) / (2 * h)
    rel = abs(analytic - numeric) / max(abs(numeric), 1e-12)
    assert rel < 1e-6, (name, analytic, numeric, rel)

    out = [
        ("tokens", tokens.to(torch.int32)),
        ("targets", targets.to(torch.int32)),
        ("loss", loss.detach().to(torch.float32).reshape(1)),
    ]
    for n in W:  # file order of the model's tensors
        out.append((n, W[n].grad.to(torch.float32)))
    ref.write_safetensors(os.path.join(d, "grads.safetensors"), out)
    print(f"{name:18s} B={B} T={T} loss={float(loss):.6f} fd-check rel {rel:.1e} "
          f"max|grad| {max(float(w.grad.abs().max()) for w in W.values()):.3e}")


def main():
    for i, (name, B, T) in enumerate(FIXTURES):
        build(name, B, T, 1000 + i)
    ref.verify_written()


if __name__ == "__main__":
    main()
