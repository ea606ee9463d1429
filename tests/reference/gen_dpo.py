#!/usr/bin/python3
"""DPO fixture for the preference-training tests (issue 12).

The policy is the llama_tiny fixture; the reference, written to llama_tiny_dpo_ref/, is the same
model with every weight moved by 0.05 of its own standard deviation times N(0, 1) noise (fixed
seed). For two (prompt, chosen, rejected) triples, computes with torch.autograd in float64, over
gen_reference.py's own Llama forward:

    log pi(y | x) = sum over the response tokens of log_softmax(logits at the previous position)
    loss = mean_i -log sigmoid(beta ((log pi(c_i) - log ref(c_i)) - (log pi(r_i) - log ref(r_i))))

and writes llama_tiny/dpo_grads.safetensors:

    prompt.<i>, chosen.<i>, rejected.<i>   I32   the triples' token ids
    beta                                   F32 [1]
    loss                                   F32 [1]
    chosen_rewards, rejected_rewards       F32 [2]   beta (log pi - log ref)
    <name>                                 F32       d loss / d policy weight (Hugging Face name and layout)

Run with Debian's PyTorch from the repository root (deterministic):

    /usr/bin/python3 tests/reference/gen_dpo.py

Self-check (non-zero exit on failure): a central finite difference of the float64 loss along a
random direction agrees with the autograd directional derivative to 1e-6 relative.
"""

import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_reference as ref  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

BETA = 0.5
PAIRS = [  # prompt, chosen, rejected
    ([5, 17, 3], [9, 22, 40, 2], [61, 7, 8]),
    ([30, 1, 12, 44, 19], [6, 6], [70, 33, 21, 4, 50]),
]


def load(name):
    d = os.path.join(ref.HERE, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    W = {n: torch.tensor(a, dtype=torch.float64)
         for n, (dt, a) in ref.read_safetensors(os.path.join(d, "model.safetensors")).items()}
    return d, cfg, W


def response_logprob(cfg, W, prompt, response):
    ids = torch.tensor(prompt + response)
    logits = ref.llama_forward(cfg, W, ids[:-1])
    logp = torch.log_softmax(logits, dim=-1)
    P = len(prompt)
    return sum(logp[t - 1, ids[t]] for t in range(P, len(ids)))


def dpo_loss(cfg, W, ref_logps):
    total = torch.zeros((), dtype=torch.float64)
    chosen, rejected = [], []
    for (prompt, c, r), (ref_c, ref_r) in zip(PAIRS, ref_logps):
        rc = BETA * (response_logprob(cfg, W, prompt, c) - ref_c)
        rr = BETA * (response_logprob(cfg, W, prompt, r) - ref_r)
        total = total - torch.nn.functional.logsigmoid(rc - rr)
        chosen.append(rc)
        rejected.append(rr)
    return total / len(PAIRS), chosen, rejected


def main():
    d, cfg, W = load("llama_tiny")
    g = torch.Generator().manual_seed(2024)
    ref_dir = os.path.join(ref.HERE, "llama_tiny_dpo_ref")
    os.makedirs(ref_dir, exist_ok=True)
    shutil.copyfile(os.path.join(d, "config.json"), os.path.join(ref_dir, "config.json"))
    R = {}
    for n, w in W.items():
        scale = float(w.std()) if w.numel() > 1 else 1.0
        R[n] = (w + 0.05 * scale * torch.randn(w.shape, generator=g, dtype=torch.float64)).to(torch.float32)
    ref.write_safetensors(os.path.join(ref_dir, "model.safetensors"), list(R.items()))
    R = {n: w.to(torch.float64) for n, w in R.items()}  # the reference as stored

    with torch.no_grad():
        ref_logps = [(response_logprob(cfg, R, p, c), response_logprob(cfg, R, p, r)) for p, c, r in PAIRS]
    for w in W.values():
        w.requires_grad_(True)
    loss, chosen, rejected = dpo_loss(cfg, W, ref_logps)
    loss.backward()
    W = {n: w for n, w in W.items() if w.grad is not None}

    with torch.no_grad():
        dirs = {n: torch.randn(w.shape, generator=g, dtype=torch.float64) for n, w in W.items()}
        analytic = sum(float((W[n].grad * dirs[n]).sum()) for n in W)
        h = 1e-5
        plus = {n: W[n] + h * dirs[n] for n in W}
        minus = {n: W[n] - h * dirs[n] for n in W}
        numeric = (float(dpo_loss(cfg, plus, ref_logps)[0]) - float(dpo_loss(cfg, minus, ref_logps)[0])) / (2 * h)
    rel = abs(analytic - numeric) / max(abs(numeric), 1e-12)
    assert rel < 1e-6, (analytic, numeric, rel)

    out = []
    for i, (p, c, r) in enumerate(PAIRS):
        out += [(f"prompt.{i}", torch.tensor(p, dtype=torch.int32)), (f"chosen.{i}", torch.tensor(c, dtype=torch.int32)),
                (f"rejected.{i}", torch.tensor(r, dtype=torch.int32))]
    out += [
        ("beta", torch.tensor([BETA], dtype=torch.float32)),
        ("loss", loss.detach().to(torch.float32).reshape(1)),
        ("chosen_rewards", torch.stack([x.detach() for x in chosen]).to(torch.float32)),
        ("rejected_rewards", torch.stack([x.detach() for x in rejected]).to(torch.float32)),
    ]
    for n in W:
        out.append((n, W[n].grad.to(torch.float32)))
    ref.write_safetensors(os.path.join(d, "dpo_grads.safetensors"), out)
    print(f"llama_tiny dpo beta={BETA} loss={float(loss):.6f} "
          f"rewards chosen {[round(float(x), 4) for x in chosen]} rejected {[round(float(x), 4) for x in rejected]} "
          f"fd-check rel {rel:.1e} max|grad| {max(float(w.grad.abs().max()) for w in W.values()):.3e}")
    ref.verify_written()


if __name__ == "__main__":
    main()
