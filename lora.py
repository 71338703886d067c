"""Parameter-efficient fine-tuning: LoRA, adapters and prefix tuning, side by side.

Full fine-tuning updates every weight of the base model: the optimizer keeps two Adam moments
per parameter and every fine-tuned variant is a full copy of the model. Parameter-efficient
fine-tuning instead freezes the pretrained weights and trains a small number of new ones. The
readings name three places to put them: a correction to the weight matrices (LoRA), small layers
inserted into every block (adapters), and trainable vectors in front of the input (prefix tuning).

LoRA (Low-Rank Adaptation, Hu et al. 2021) bets that the change a fine-tune makes to a weight
matrix has low rank. For a frozen linear layer y = W x + b with W of shape (d_out, d_in):

    W' = W + ΔW,        ΔW = (alpha / r) · B A,      B: (d_out, r),  A: (r, d_in),  r << min(d_out, d_in)

    y  = W x + b + (alpha / r) · B (A x)

Only A and B are trained: r·(d_in + d_out) numbers instead of d_in·d_out. A starts random and
B starts at zero, so ΔW = 0 at step 0 and the adapted model is *exactly* the base model; the
gradient still reaches B (it is A x, which is not zero), so training moves away from the base
smoothly. The scale alpha / r keeps the size of the update roughly independent of the rank
chosen, so a learning rate tuned at one rank still works at another. Which layers to adapt is a
choice: the original paper adapts the attention projections only (here `attn.c_attn`, which makes
Q, K and V, and `attn.c_proj`); adding the MLP (`mlp.c_fc`, `mlp.c_proj`) gives more capacity for
more parameters. The token embedding, which is also the output head (tied weights), is left alone.

Adapters (Houlsby et al. 2019) insert a small bottleneck network with a residual into every block.
For a hidden state h of width d and a bottleneck of m << d units:

    A(h) = h + W_up f(W_down LN(h)),     W_down: (m, d),  W_up: (d, m),  f = GELU

2dm + m + 3d weights per adapter (two projections with their biases, a LayerNorm's gain and bias).
Houlsby et al. put one after the attention and one after the MLP of every block, on the sublayer's
output before the residual adds it (`apply_adapters`, `where=` chooses; both is the default, theirs):

    x <- x + A_attn(Attn(LN_1(x))),      x <- x + A_mlp(MLP(LN_2(x)))

The readings write the two projections in the opposite order; this file follows Houlsby et al.:
down to the m-unit bottleneck first, the nonlinearity there, back up to d last. That order is what
makes an adapter small (2dm weights, 2dm multiply-adds per token, for m << d) and what lets it start
as the identity: W_up, the map that writes into the residual stream, starts at zero, so A(h) = h
exactly at step 0 (LoRA's B = 0 again), while W_down starts random so that W_up gets a gradient from
the first step. The LayerNorm sits where the readings place it, on the adapter's input. Houlsby et
al. have none inside the adapter and train the base model's LayerNorms instead; here every base
weight stays frozen, so the adapter normalises its input itself.

Prefix tuning (Li & Liang 2021) trains no weight of the network at all. Every layer gets L key and
value vectors per head, P_k and P_v, that attention reads as if L more tokens came before the input
(model.py, `SelfAttention.prepend_prefix`):

    head = softmax(Q [P_k; K]^T / sqrt(d_head) + [0 | M]) [P_v; V]        P_k, P_v: (L, d_head) per head

2·L·d weights per layer. The readings' simpler form, prompt tuning (Lester et al. 2021), trains L
embedding vectors at the input, [P; E[x]], and lets the frozen network compute every layer's keys
and values from them: only layer 0 is free, L·d weights in all. Prefix tuning frees the keys and
values of every layer directly (the prefix is a KV cache that is trained instead of computed), more
capacity for the same L. A text prompt is the tightest case of both: its prefix must be the
activations of real tokens. The prefix here *starts* as exactly that, the keys and values the frozen
model computes for L random tokens (Li & Liang found activations of real words a better start than
random vectors), so step 0 is the base model reading L extra tokens, not the base model itself;
`remove_prefix` gives the base model back exactly, since no base weight moved. Li & Liang train P
through an MLP, P = MLP(P'), because updating P directly was unstable for them, and keep only P after
training. This file updates P directly: at this size it trained smoothly at the learning rates tried for
sft.py, and there is one set of weights to save. (The reparameterisation was not tried here.)

What each costs after training. LoRA's ΔW has W's shape and can be folded in, W <- W + (alpha/r) B A
(`merge_lora`): a plain transformer, no extra cost at inference; kept apart it is a file of a few
kilobytes and one base model serves many fine-tunes. An adapter cannot be merged (f between its
projections makes it nonlinear, not a change of W) and adds 2dm multiply-adds per token per adapter.
A prefix cannot be merged either (it is extra keys, not a weight) and adds L keys to every attention.
So their checkpoints keep the modules: `plumbing.save_checkpoint` records the method and its sizes
(`peft_config`) and `plumbing.load_model` rebuilds the modules (`apply_peft`) before loading weights.

The three are used alike. `apply_lora(model, rank, alpha)`, `apply_adapters(model, size)` and
`apply_prefix(model, prefix_len)` freeze every base weight and add the method's own;
`apply_peft(model, {"method": ..., sizes})` calls one of them, and `peft_config(model)` reads that
dict back off a model. `peft_state_dict` / `load_peft_state_dict` save and load the method's
weights alone. `merge_lora`, `remove_adapters` and `remove_prefix` take each one out again.

Run it:  python lora.py [--ckpt out/pretrain.pt] [--lora-rank 8] [--adapter-size 10] [--prefix-len 24]
It wraps copies of a checkpoint with each method, prints trainable vs total parameters and how far
each is from the base model at initialisation, then gives the zero-initialised weights random values
(as if trained) and checks that merged LoRA equals unmerged LoRA and that removing the adapters and
the prefix gives the base model back. sft.py --peft lora|adapter|prefix trains them for real, and
dpo.py --lora-rank uses LoRA.
"""

import argparse
import copy
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import Block, KVCache, ModelConfig, SelfAttention, Transformer
from plumbing import DTYPES, UserError, autocast, load_model, pick_device, run_main, set_seed

DEFAULT_TARGETS = ("attn.c_attn", "attn.c_proj")
ADAPTER_SITES = ("attn", "mlp")  # the sublayers of a Block an adapter can follow; Houlsby et al. use both
LORA_RANK = 8
# sizes that train about as many weights as LoRA rank 8 does on the default model (n_embd 128, 4 blocks)
ADAPTER_SIZE, PREFIX_LEN = 10, 24
PEFT_WEIGHTS = {"lora_A", "lora_B", "adapter", "kv_prefix"}  # the names the three methods give their weights


# ----------------------------------------------------------------------------- LoRA: W' = W + (alpha/r) B A

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


def apply_lora(model, rank, alpha, targets=DEFAULT_TARGETS, dropout=0.0):
    """Wrap every nn.Linear whose name ends with one of `targets` in a LoRALinear and freeze all
    other parameters. Changes model in place and returns it. Raises UserError if a target
    matches no layer (a typo would otherwise train nothing where it was meant to)."""
    model.requires_grad_(False)
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
    return _modules(model, LoRALinear)


def merge_lora(model):
    """Fold every adapter into its weight (W <- W + (alpha/r) B A) and put back a plain nn.Linear.
    Changes model in place and returns it."""
    for name, layer in lora_layers(model):
        _replace(model, name, layer.merged())
    return model


# ----------------------------------------------------------------------------- adapters: h + W_up f(W_down LN(h))

class Adapter(nn.Module):
    """A(h) = h + W_up f(W_down LN(h)): a bottleneck of `size` units with a residual; W_up = 0 at init."""

    def __init__(self, d_model, size):
        super().__init__()
        if size < 1:
            raise ValueError(f"adapter size must be at least 1, got {size}")
        self.ln = nn.LayerNorm(d_model)
        self.down = nn.Linear(d_model, size)  # nn.Linear's random initialisation, like LoRA's A
        self.up = nn.Linear(size, d_model)
        nn.init.zeros_(self.up.weight)  # W_up = 0: the adapter adds exactly nothing at step 0
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(F.gelu(self.down(self.ln(h))))

    @property
    def size(self):
        return self.down.out_features


class Adapted(nn.Module):
    """A frozen sublayer (a Block's attn or mlp) with an Adapter on its output, before the residual adds it."""

    def __init__(self, base, adapter):
        super().__init__()
        self.base, self.adapter = base, adapter

    def forward(self, *args):
        return self.adapter(self.base(*args))


def apply_adapters(model, size, where=ADAPTER_SITES):
    """Put an Adapter after each sublayer named in `where` ("attn", "mlp") of every block and freeze
    all other parameters. Changes model in place and returns it."""
    if not where or not set(where) <= set(ADAPTER_SITES):
        raise UserError(f"adapters go after {' and/or '.join(ADAPTER_SITES)}, not {', '.join(where) or 'nowhere'} — "
                        "choose among those")
    model.requires_grad_(False)
    for block in [m for m in model.modules() if isinstance(m, Block)]:
        w = block.ln_1.weight
        for site in where:
            adapter = Adapter(w.numel(), size).to(w.device, w.dtype)
            setattr(block, site, Adapted(getattr(block, site), adapter))
    return model


def remove_adapters(model):
    """Put every adapted sublayer back as it was: the base model, exactly (its weights never moved)."""
    for name, layer in _modules(model, Adapted):
        _replace(model, name, layer.base)
    return model


# ----------------------------------------------------------------------------- prefix tuning: [P_k; K], [P_v; V]

class KVPrefix(nn.Module):
    """P_k, P_v of one layer: L trainable keys and values per head, each (n_head, L, head_dim).
    SelfAttention.prepend_prefix (model.py) calls it and puts them in front of the tokens' own."""

    def __init__(self, key, value):
        super().__init__()
        self.key = nn.Parameter(key.detach().clone())
        self.value = nn.Parameter(value.detach().clone())

    def forward(self):
        return self.key, self.value

    def extra_repr(self):
        return f"prefix_len={self.key.size(1)}"


def apply_prefix(model, prefix_len):
    """Give every layer's attention prefix_len trainable keys and values and freeze all other
    parameters. They start as the keys and values the frozen model computes for prefix_len random
    tokens: a KV cache, which training then moves freely. Changes model in place and returns it."""
    net = next(m for m in model.modules() if isinstance(m, Transformer))
    if not 1 <= prefix_len <= net.cfg.block_size:
        raise UserError(f"prefix length must be between 1 and block_size ({net.cfg.block_size}), got {prefix_len} "
                        "— choose a length in that range")
    model.requires_grad_(False)
    device, dtype = net.wte.weight.device, net.wte.weight.dtype
    ids = torch.randint(net.cfg.vocab_size, (1, prefix_len), device=device)
    cache = KVCache(net.cfg, 1, device, dtype)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(ids, kv_cache=cache)  # every layer's keys and values of these tokens land in the cache
    net.train(was_training)
    for attn in [m for m in net.modules() if isinstance(m, SelfAttention)]:
        i = attn.layer_idx
        attn.kv_prefix = KVPrefix(cache.k[i, 0, :, :prefix_len], cache.v[i, 0, :, :prefix_len])
    return model


def remove_prefix(model):
    """Take the prefix out of every layer: the base model, exactly (its weights never moved)."""
    for _, attn in _modules(model, SelfAttention):
        attn.kv_prefix = None
    return model


# ----------------------------------------------------------------------------- the three alike

PEFT_METHODS = {"lora": apply_lora, "adapter": apply_adapters, "prefix": apply_prefix}


def apply_peft(model, config):
    """Apply one method from {"method": "lora" | "adapter" | "prefix", **its sizes}: what sft.py builds
    from its flags and what a checkpoint records (peft_config). Changes model in place and returns it."""
    sizes = {k: v for k, v in config.items() if k != "method"}
    return PEFT_METHODS[config["method"]](model, **sizes)


def peft_config(model):
    """The method a model carries and its sizes, as apply_peft takes them; None for a plain model
    (LoRA merged into W leaves a plain model)."""
    found = []
    lora = lora_layers(model)
    if lora:  # "blocks.0.attn.c_attn" -> target "attn.c_attn"
        targets = sorted({name.split("blocks.", 1)[-1].split(".", 1)[-1] for name, _ in lora})
        layer = lora[0][1]
        found.append(dict(method="lora", rank=layer.rank, alpha=layer.alpha, targets=targets,
                          dropout=layer.dropout.p))
    adapted = _modules(model, Adapted)
    if adapted:
        sites = {name.rsplit(".", 1)[-1] for name, _ in adapted}
        found.append(dict(method="adapter", size=adapted[0][1].adapter.size,
                          where=[s for s in ADAPTER_SITES if s in sites]))
    prefixes = _modules(model, KVPrefix)
    if prefixes:
        found.append(dict(method="prefix", prefix_len=prefixes[0][1].key.size(1)))
    if len(found) > 1:
        raise ValueError(f"a model carries one parameter-efficient method at a time, this one has "
                         f"{', '.join(f['method'] for f in found)}")
    return found[0] if found else None


def peft_state_dict(model):
    """Only the weights a method added (LoRA's A and B, the adapters, the prefixes): all a fine-tune
    needs to save, given the base model."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not PEFT_WEIGHTS.isdisjoint(k.split("."))}


def load_peft_state_dict(model, state):
    """Put saved method weights into a model that apply_peft has prepared with the same method and sizes."""
    expected = set(peft_state_dict(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise UserError(f"saved weights do not fit the model (missing {missing[:2]}, unexpected {extra[:2]}) — "
                        "apply the method they were trained with (LoRA's rank and targets, the adapters' sites)")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: another LoRA rank, adapter size or prefix length
        raise UserError(f"saved weights do not fit the model: {str(exc).splitlines()[-1].strip()} — apply the "
                        "method with the sizes they were trained with (LoRA rank, adapter size, prefix length)"
                        ) from None
    return model


def count_parameters(model):
    """(trainable, total) parameters, each shared tensor counted once."""
    params = list(model.parameters())  # parameters() already yields a tied tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _modules(model, cls):
    """[(name, module)] of every module of class cls in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, cls)]


def _replace(model, name, new_module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new_module)


# ----------------------------------------------------------------------------- demonstration

def main():
    parser = argparse.ArgumentParser(description="Wrap a checkpoint with LoRA, adapters and a prefix; check the "
                                     "equivalences each promises.")
    parser.add_argument("--ckpt", default="out/pretrain.pt", help="checkpoint to adapt (default: %(default)s)")
    parser.add_argument("--lora-rank", type=int, default=LORA_RANK, help="rank r of B A (default: %(default)s)")
    parser.add_argument("--lora-alpha", type=float, default=16.0,
                        help="ΔW is scaled by alpha / r (default: %(default)s)")
    parser.add_argument("--lora-targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated layer names to adapt (default: %(default)s)")
    parser.add_argument("--adapter-size", type=int, default=ADAPTER_SIZE, help="bottleneck m of each adapter "
                        "(default: %(default)s)")
    parser.add_argument("--prefix-len", type=int, default=PREFIX_LEN, help="prefix keys and values per layer "
                        "(default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                        help="autocast precision (default: %(default)s)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the adapted models")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    set_seed(args.seed)
    device = pick_device(args.device)
    if os.path.exists(args.ckpt):
        base, _, _ = load_model(args.ckpt, device)
        print(f"checkpoint: {args.ckpt}")
    else:
        base = Transformer(ModelConfig()).to(device).eval()
        print(f"{args.ckpt} not found (run pretrain.py to make it): using a randomly initialised default model")
    x = torch.randint(0, base.cfg.vocab_size, (4, min(32, base.cfg.block_size)), device=device)

    @torch.no_grad()
    def distance(net):
        """max |logits(net) - logits(base)| on the same input."""
        with autocast(device, args.dtype):
            a, b = (torch.compile(net) if args.compile else net)(x)[0].float(), base(x)[0].float()
        return (a - b).abs().max().item()

    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    configs = {"LoRA": dict(method="lora", rank=args.lora_rank, alpha=args.lora_alpha, targets=targets),
               "adapters": dict(method="adapter", size=args.adapter_size),
               "prefix": dict(method="prefix", prefix_len=args.prefix_len)}
    nets = {name: apply_peft(copy.deepcopy(base), config) for name, config in configs.items()}
    print(f"\n{'method':<10}{'settings':<52}{'trainable':>10}{'of':>10}{'':>9}   at init: max |logits - base|")
    for name, net in nets.items():
        trainable, total = count_parameters(net)
        settings = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}"
                             for k, v in peft_config(net).items() if k not in ("method", "dropout"))
        print(f"{name:<10}{settings:<52}{trainable:>10,}{total:>10,}{100 * trainable / total:>8.2f}%   "
              f"{distance(net):.3g}")
    print("(LoRA's B and the adapters' W_up start at zero: the base model exactly. The prefix starts as the\n"
          " keys and values of random tokens, which attention reads from step 0.)")

    # stand-in for training: random values for the weights that start at zero
    with torch.no_grad():
        for _, layer in lora_layers(nets["LoRA"]):
            layer.lora_B.normal_(std=0.02)
        for _, layer in _modules(nets["adapters"], Adapted):
            layer.adapter.up.weight.normal_(std=0.02)
        trained = {name: distance(net) for name, net in nets.items()}
        unmerged = nets["LoRA"](x)[0].float()
        merge_gap = (merge_lora(nets["LoRA"])(x)[0].float() - unmerged).abs().max().item()
    print("\nas if trained, max |logits - base|: " + ", ".join(f"{n} {d:.3g}" for n, d in trained.items()))
    print(f"merge_lora:      max |merged - unmerged| = {merge_gap:.3g}  (float rounding only: W + BA is the same "
          f"function; LoRALinear modules left: {len(lora_layers(nets['LoRA']))})")
    print(f"remove_adapters: max |logits - base| = {distance(remove_adapters(nets['adapters'])):.3g}  "
          "(the frozen weights never moved)")
    print(f"remove_prefix:   max |logits - base| = {distance(remove_prefix(nets['prefix'])):.3g}")


if __name__ == "__main__":
    run_main(main)
