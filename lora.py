"""LoRA: fine-tune a large matrix by learning a small low-rank correction to it.

Full fine-tuning updates every weight of the base model: the optimizer keeps two Adam moments
per parameter and every fine-tuned variant is a full copy of the model. Parameter-efficient
fine-tuning instead freezes the pretrained weights and trains a small number of new ones.
LoRA (Low-Rank Adaptation, Hu et al. 2021) bets that the change a fine-tune makes to a weight
matrix has low rank. For a frozen linear layer y = W x + b with W of shape (d_out, d_in):

    W' = W + ΔW,        ΔW = (alpha / r) · B A,      B: (d_out, r),  A: (r, d_in),  r << min(d_out, d_in)

    y  = W x + b + (alpha / r) · B (A x)

Only A and B are trained: r·(d_in + d_out) numbers instead of d_in·d_out. A starts random and
B starts at zero, so ΔW = 0 at step 0 and the adapted model is *exactly* the base model; the
gradient still reaches B (it is A x, which is not zero), so training moves away from the base
smoothly. The scale alpha / r keeps the size of the update roughly independent of the rank
chosen, so a learning rate tuned at one rank still works at another.

Because ΔW has the same shape as W, the adapter can be folded in after training,
W <- W + (alpha / r) B A (`merge_lora`): the merged model is a plain transformer with no extra
cost at inference, and the later stages load it like any other checkpoint. Kept apart instead
(`lora_state_dict`), an adapter is a file of a few kilobytes, and one base model can serve many.

Which layers to adapt is a choice: the original paper adapts the attention projections only
(here `attn.c_attn`, which makes Q, K and V, and `attn.c_proj`); adding the MLP (`mlp.c_fc`,
`mlp.c_proj`) gives more capacity for more parameters. The token embedding, which is also the
output head (tied weights), is left alone.

Run it:  python lora.py [--ckpt out/pretrain.pt] [--lora-rank 8]
It wraps a checkpoint, prints trainable vs total parameters per adapted layer, checks that at
initialisation the adapted model gives the base model's logits, then gives the adapters random
values (as if trained) and checks that the merged and unmerged models give the same logits.
sft.py --lora-rank 8 and dpo.py use this module for real training.
"""

import argparse
import math
import os

import torch
import torch.nn as nn

from model import ModelConfig, Transformer
from plumbing import DTYPES, UserError, autocast, load_model, pick_device, run_main, set_seed, unwrap

DEFAULT_TARGETS = ("attn.c_attn", "attn.c_proj")


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: y = base(x) + (alpha/r) B A dropout(x)."""

    def __init__(self, base: nn.Linear, rank, alpha, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        # A gets nn.Linear's default initialisation; B = 0 makes ΔW = 0, so step 0 is the base model
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # (x A^T) B^T costs r·(d_in + d_out) per token; forming B A first would cost d_in·d_out
        update = (self.dropout(x) @ self.lora_A.t()) @ self.lora_B.t()
        return self.base(x) + self.scaling * update

    def delta_weight(self):
        """ΔW = (alpha / r) · B A, the shape of base.weight."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def merged(self):
        """A plain nn.Linear with weight W + ΔW: the same function, no adapter left."""
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                out.bias.copy_(base.bias)
        out.weight.requires_grad_(base.weight.requires_grad)
        if out.bias is not None:
            out.bias.requires_grad_(base.bias.requires_grad)
        return out

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}"


def _replace(model, name, new_module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new_module)


def apply_lora(model, rank, alpha, targets=DEFAULT_TARGETS, dropout=0.0):
    """Wrap every nn.Linear whose name ends with one of `targets` in a LoRALinear and freeze all
    other parameters. Changes model in place and returns it. Raises UserError if a target
    matches no layer (a typo would otherwise train nothing where it was meant to)."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise UserError(f"LoRA target {target!r} matches no linear layer — choose among "
                              f"{', '.join(sorted({n.split('.', 2)[-1] for n in names}))}")
    for name in names:
        if any(name == t or name.endswith("." + t) for t in targets):
            _replace(model, name, LoRALinear(model.get_submodule(name), rank, alpha, dropout))
    return model


def lora_layers(model):
    """[(name, LoRALinear)] in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    """Fold every adapter into its weight (W <- W + (alpha/r) B A) and put back a plain nn.Linear.
    Changes model in place and returns it."""
    for name, layer in lora_layers(model):
        _replace(model, name, layer.merged())
    return model


def lora_state_dict(model):
    """Only the adapter weights (lora_A, lora_B of every LoRALinear): all a fine-tune needs to save."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.endswith(".lora_A") or k.endswith(".lora_B")}


def load_lora_state_dict(model, state):
    """Put saved adapter weights into a model that apply_lora has wrapped the same way."""
    expected = set(lora_state_dict(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise UserError(f"adapter weights do not fit the model (missing {missing[:2]}, unexpected "
                          f"{extra[:2]}) — apply_lora with the rank and targets they were trained with")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: a different rank
        raise UserError(f"adapter weights do not fit the model: {str(exc).splitlines()[-1].strip()} — "
                          "apply_lora with the rank they were trained with") from None
    return model


def count_parameters(model):
    """(trainable, total) parameters, each shared tensor counted once."""
    params = list(model.parameters())  # parameters() already yields a tied tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ----------------------------------------------------------------------------- demonstration

def main():
    parser = argparse.ArgumentParser(description="Wrap a checkpoint with LoRA adapters; check init and merge equivalences.")
    parser.add_argument("--ckpt", default="out/pretrain.pt", help="checkpoint to adapt (default: %(default)s)")
    parser.add_argument("--lora-rank", type=int, default=8, help="rank r of B A (default: %(default)s)")
    parser.add_argument("--lora-alpha", type=float, default=16.0, help="ΔW is scaled by alpha / r (default: %(default)s)")
    parser.add_argument("--lora-targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated layer names to adapt (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="autocast precision (default: %(default)s)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the adapted model")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    set_seed(args.seed)
    device = pick_device(args.device)
    if os.path.exists(args.ckpt):
        net, _, _ = load_model(args.ckpt, device)
        print(f"checkpoint: {args.ckpt}")
    else:
        net = Transformer(ModelConfig()).to(device).eval()
        print(f"{args.ckpt} not found (run pretrain.py to make it): using a randomly initialised default model")
    x = torch.randint(0, net.cfg.vocab_size, (4, min(32, net.cfg.block_size)), device=device)
    with torch.no_grad(), autocast(device, args.dtype):
        base_logits = net(x)[0].float()

    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    apply_lora(net, args.lora_rank, args.lora_alpha, targets)
    net = torch.compile(net) if args.compile else net
    trainable, total = count_parameters(net)
    print(f"\n{'adapted layer':<24}{'W (frozen)':>12}{'A + B':>10}")
    for name, layer in lora_layers(unwrap(net)):
        print(f"{name:<24}{layer.base.weight.numel():>12,}{layer.lora_A.numel() + layer.lora_B.numel():>10,}")
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")

    with torch.no_grad(), autocast(device, args.dtype):
        init_logits = net(x)[0].float()
    print(f"\nat init (B = 0): max |logits - base logits| = {(init_logits - base_logits).abs().max().item():.3g}")

    # stand-in for training: random adapters, large enough to change the logits visibly
    with torch.no_grad():
        for _, layer in lora_layers(unwrap(net)):
            layer.lora_B.normal_(std=0.02)
        adapted = net(x)[0].float()
        merged = merge_lora(unwrap(net))
        merged_logits = merged(x)[0].float()
    print(f"random adapters:  max |adapted - base|   = {(adapted - base_logits).abs().max().item():.3g}"
          f"  (the adapters change the function)")
    print(f"after merge_lora: max |merged - adapted| = {(merged_logits - adapted).abs().max().item():.3g}"
          f"  (float rounding only: W + BA is the same function)")
    left = len(lora_layers(merged))
    print(f"LoRALinear modules left after merging: {left}; parameters: {count_parameters(merged)[1]:,}")


if __name__ == "__main__":
    run_main(main)
