"""What every stage shares besides the network: the training loop's parts, files and flags.

Optimisation. Every stage trains with AdamW. Weight decay pulls weight matrices towards 0 at each
step (θ ← θ − lr·λ·θ beside the Adam update); biases and LayerNorm gains are left alone. The
learning rate warms up linearly, then follows a cosine down to a tenth of its peak over S steps:

    lr(s) = lr_max · (s + 1) / warmup                                          s < warmup
    lr(s) = lr_max · (0.1 + 0.9 · ½ (1 + cos(π · (s − warmup) / (S − warmup))))    after that

and the gradients' global norm is clipped to 1 before every step.

Cost. A training token costs about 6·N FLOPs for N parameters (2 in the forward pass, 4 in the
backward) plus 12·n_layer·n_embd·T for the attention scores over T positions. Model FLOPs
utilisation (MFU) is the FLOPs per second achieved divided by the accelerator's peak.

Precision. `--dtype bfloat16` runs the matmuls under autocast while the weights and the optimizer
state stay float32. float16 has a narrow exponent range: small gradients underflow to 0 unless the
loss is scaled up before backward and the gradients scaled back down before the step (the grad
scaler); bfloat16 has float32's range and needs none.

Files. A checkpoint is written to a temporary file and renamed, so a crash never leaves half of
one, and read with `weights_only=True`, so a file carrying pickled code is refused, not run. A
mistake the user can fix (a missing file, a bad line, a flag out of range) is a `UserError`: one
line naming the file, the line and the fix, printed by `run_main` with exit status 2. The flags
every stage shares (`add_common_args`, CONVENTIONS.md) and the metrics log (`MetricsLog`:
out/<stage>.jsonl and its PNG) live here too.
"""

import contextlib
import hashlib
import json
import math
import os
import random
import sys
import tempfile
from dataclasses import asdict

import numpy as np
import torch


# ----------------------------------------------------------------------------- training helpers

def configure_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu"):
    """AdamW with weight decay on weight matrices only: biases and LayerNorm gains are not
    decayed (shrinking them towards 0 only hurts). The tied token embedding is a matrix and is
    decayed once (it appears once among the parameters), as in GPT-2."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = device_type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def lr_at(step, max_lr, warmup_steps, max_steps, min_lr_ratio=0.1):
    """Linear warmup to max_lr, then cosine decay to min_lr_ratio · max_lr at max_steps."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return max_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def flops_per_token(cfg, n_params):
    """Training FLOPs per token: 6·N for the matmuls (2 forward, 4 backward per parameter) plus
    the attention scores and weighted sum, 12·n_layer·n_embd·block_size (PaLM appendix B)."""
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def peak_flops(device):
    """Dense bf16 peak of known accelerators, for MFU. None where unknown (e.g. CPUs)."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
                       ("A10", 125e12), ("4090", 165e12), ("3090", 71e12)):
        if key in name:
            return flops
    return None


def pick_device(name="auto"):
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast(device, dtype):
    """Mixed precision where the device supports it: matmuls in dtype, weights stay float32."""
    device_type = torch.device(device).type
    if dtype == "float32" or not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=DTYPES[dtype])


def grad_scaler(device, dtype):
    """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
    enabled = dtype == "float16" and torch.device(device).type == "cuda"
    return torch.amp.GradScaler("cuda", enabled=enabled)


def optimizer_step(optimizer, scaler, params, grad_clip=1.0):
    """One update once the gradients are in: unscale them (a no-op unless float16 scaling is on),
    clip their global norm to grad_clip (0 = off), step, and clear them for the next batch."""
    scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def set_seed(seed):
    random.seed(seed)
    torch.manual_seed(seed)


def unwrap(model):
    """The plain module under torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ----------------------------------------------------------------------------- checkpoints

class UserError(Exception):
    """A problem the user can fix: reported as one line, `error: <what> — <how to fix>`."""


def save_checkpoint(path, model, tokenizer, **extra):
    """Atomically write {config, model, tokenizer, **extra}: a crash leaves the old file intact."""
    net = unwrap(model)
    cfg = net.cfg if hasattr(net, "cfg") else net.backbone.cfg
    payload = {"config": asdict(cfg), "model": net.state_dict(), "tokenizer": tokenizer.to_dict(), **extra}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, device="cpu"):
    """Read a checkpoint with weights_only=True: tensors and plain containers only, so a file
    that carries a pickled object (which could run code) is refused, not executed."""
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found ({path}) — run the stage that writes it first, or pass its path")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying pickles, others for corrupt files
        raise UserError(f"cannot load checkpoint ({path}): {str(exc).splitlines()[0]} — "
                        "only checkpoints written by this project are accepted") from None


# ----------------------------------------------------------------------------- command line, logs

def add_common_args(parser, **defaults):
    """The flags every stage shares (CONVENTIONS.md), with this stage's defaults."""
    d = dict(data=None, init=None, out_dir="out", max_steps=1000, batch_size=32, lr=1e-3,
             warmup_steps=50, eval_interval=100, log_interval=10, grad_accum=1, patience=0, seed=1337)
    d.update(defaults)
    a = parser.add_argument
    a("--data", default=d["data"], help="training data (default: %(default)s)")
    a("--init", default=d["init"], help="checkpoint to start from (default: %(default)s)")
    a("--out-dir", default=d["out_dir"], help="where checkpoints, plots and metrics go (default: %(default)s)")
    a("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps (default: %(default)s)")
    a("--dtype", default="float32", choices=list(DTYPES), help="autocast precision; float16 adds a grad scaler on CUDA (default: %(default)s)")
    a("--compile", action="store_true", help="torch.compile the model (default: off)")
    a("--seed", type=int, default=d["seed"], help="random seed (default: %(default)s)")
    a("--max-steps", type=int, default=d["max_steps"], help="optimizer steps (default: %(default)s)")
    a("--batch-size", type=int, default=d["batch_size"], help="sequences per micro-batch (default: %(default)s)")
    a("--lr", type=float, default=d["lr"], help="peak learning rate (default: %(default)s)")
    a("--warmup-steps", type=int, default=d["warmup_steps"], help="linear warmup steps (default: %(default)s)")
    a("--eval-interval", type=int, default=d["eval_interval"], help="steps between validations (default: %(default)s)")
    a("--log-interval", type=int, default=d["log_interval"], help="steps between log lines (default: %(default)s)")
    a("--grad-accum", type=int, default=d["grad_accum"], help="micro-batches per optimizer step (default: %(default)s)")
    a("--patience", type=int, default=d["patience"], help="stop after this many validations without improvement; 0 = never (default: %(default)s)")
    return parser


def require_positive(args, *names):
    """Size flags that must be at least 1 (argparse takes any integer): a one-line error otherwise."""
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value} — pass a positive size")


def read_jsonl(path, required=()):
    """Records of a JSONL file; a bad line is a UserError naming the file and line."""
    if not os.path.exists(path):
        raise UserError(f"data file not found ({path}) — pass an existing file with --data")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"invalid JSON: {exc.msg} ({path}:{lineno}) — fix or remove that line") from None
            missing = [k for k in required if k not in record]
            if missing:
                raise UserError(f"missing field {missing[0]!r} ({path}:{lineno}) — every line needs {', '.join(required)}")
            records.append(record)
    return records


def read_text(path):
    """The whole data file as a string; a missing, empty or non-UTF-8 file is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"data file not found ({path}) — pass a UTF-8 text file with --data")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(f"data file is not UTF-8 text: byte {raw[exc.start]:#04x} ({path}:{line}) — "
                        "convert it, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise UserError(f"data file is empty ({path}) — pass a file with text in it")
    return text


def encode_corpus(text, tokenizer, cache_dir, write_cache=True):
    """Token ids of the text as a numpy array, cached under cache_dir: encoding runs once per
    (text, tokenizer) pair, every later start-up just loads the array."""
    spec = json.dumps(tokenizer.to_dict(), sort_keys=True)
    key = hashlib.sha1(text.encode() + spec.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"tokens-{key}.npy")
    if os.path.exists(path):
        return np.load(path)
    try:
        ids = tokenizer.encode(text)
    except (ValueError, KeyError) as exc:
        raise UserError(f"the tokenizer cannot encode this text: {exc} — use text it was built for (its "
                        "training corpus), or build a tokenizer on this text") from None
    ids = np.array(ids, dtype=np.int32)
    if write_cache:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, ids)
        os.replace(tmp, path)  # atomic: a second run never reads half an array
    return ids


def random_windows(data, batch_size, length, generator=None):
    """batch_size random contiguous windows of `length` tokens from a 1-D token stream, as a
    (batch_size, length) long tensor on the CPU."""
    starts = torch.randint(len(data) - length + 1, (batch_size,), generator=generator)
    return data[starts[:, None] + torch.arange(length)].long()  # one gather, no Python loop per row


class MetricsLog:
    """out/<stage>.jsonl: one JSON object per logged step, then a final {"summary": ...} line."""

    def __init__(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self.records = path, []
        open(path, "w").close()

    def log(self, **metrics):
        self.records.append(metrics)
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def summary(self, **summary):
        with open(self.path, "a") as f:
            f.write(json.dumps({"summary": summary}) + "\n")

    def plot(self, path, keys, x="step", title=""):
        """One panel per metric against x, saved as PNG."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        keys = [k for k in keys if any(k in r for r in self.records)]
        if not keys:
            return
        cols = min(4, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax in axes.flat[len(keys):]:
            ax.axis("off")
        for ax, key in zip(axes.flat, keys):
            pts = [(r[x], r[key]) for r in self.records if key in r and r[key] is not None and x in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None)
            ax.set_xlabel(x)
            ax.set_title(key)
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def run_main(main):
    """Run a stage's main(): a UserError becomes one line on stderr and exit status 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
