"""Pretraining: a transformer learns the statistics of raw text by predicting pieces of it.

Nobody labels pretraining data: the text supervises itself. Hide or withhold some tokens, ask the
network for them, and score it with cross-entropy. Doing that over millions of tokens teaches
spelling, grammar and, because the corpus states them again and again, facts about the world. The
result is a *base model*: it continues text. Asked a question, it does not answer; it writes what
tends to follow a question in its corpus (often another question). sft.py teaches it to answer.

Two objectives, picked with --objective:

  clm (causal / autoregressive LM, GPT). Factor the probability of a text left to right,
        P(x_1 .. x_n) = prod_i P(x_i | x_<i),      L_CLM = -sum_i log P(x_i | x_<i).
      A causal mask lets position i read only x_<=i, so one forward pass over a window of T tokens
      yields T predictions at once (teacher forcing: the true prefix is fed, never the model's own).
  mlm (masked LM, BERT). Pick a set M of 15% of the positions; of those, 80% become <|mask|>, 10% a
      random token and 10% stay as they are; a bidirectional model reads the corrupted text x~ and
        L_MLM = -sum_{i in M} log P(x_i | x~).
      The random and unchanged 10%s mean the model cannot trust that only <|mask|> needs fixing, which
      narrows the gap to fine-tuning, where no <|mask|> ever appears. Only 15% of positions carry a
      loss, one reason MLM learns less per token than CLM (the motivation of ELECTRA). The mask is
      drawn afresh for every batch, so a window seen twice is masked differently each time: RoBERTa's
      *dynamic masking* (BERT masked its data once, before training).

Optimization, as practitioners run it (model.py: configure_optimizer, lr_at, optimizer_step): AdamW
with weight decay on weight matrices only; a learning rate that warms up linearly and then follows
a cosine down to 10% of its peak; gradient-norm clipping; gradient accumulation (effective batch =
batch_size x grad_accum x processes); dropout; validation loss on held-out text every
--eval-interval steps; early stopping after --patience validations without improvement; the best
checkpoint kept apart from the last one.

Scale. Training costs about C = 6·N·D FLOPs for N parameters and D tokens (2 per parameter forward,
4 backward); Chinchilla found compute best spent with D ≈ 20·N. Memory in float32: 4 bytes per
weight, 4 per gradient and 8 for Adam's two moments, 16 bytes per parameter before activations.
Mixed precision (--dtype bfloat16) runs the matmuls in 16 bits under autocast while the weights stay
float32 (float16 also needs a grad scaler, its range is small). Data parallelism keeps a full copy of
the model in every process, gives each a different batch and averages gradients with an all-reduce
during backward (PyTorch's DistributedDataParallel). The script prints N, D, D/N and 6·N·D for the
run it is about to do.

Run it:
    python pretrain.py                              # char-level CLM on data/corpus.txt, a few minutes on CPU
    python pretrain.py --objective mlm              # masked LM; writes out/pretrain_mlm.*
    python pretrain.py --device cuda --dtype bfloat16 --compile --n-layer 12 --n-embd 768 --batch-size 64
    torchrun --nproc_per_node=8 pretrain.py --dtype bfloat16 ...   # data parallel, one process per GPU
    python pretrain.py --resume                     # continue from out/pretrain_last.pt (Ctrl-C saves it)
What to look for: the loss starts near ln(vocab size) (the corpus has 74 characters, plus 5 special
tokens: ln 79 = 4.37) and falls; out/pretrain.png shows train and validation loss against tokens
seen (a widening gap is overfitting); the knowledge probe completes "The capital of Norway is" from
memory; the base model's reply to a question continues the thread. Files: out/pretrain.pt is the
checkpoint with the best validation loss (sft.py starts from it); out/pretrain_last.pt adds the
optimizer state for --resume; out/pretrain.jsonl holds the curves and a final summary line.
"""

import argparse
import contextlib
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bpe import CharTokenizer, load_tokenizer
from model import ModelConfig, Transformer, configure_optimizer, flops_per_token, optimizer_step, set_lr
from plumbing import (MetricsLog, UserError, add_common_args, autocast, encode_corpus, evaluate, format_pass_rates,
                      generate_answers, grad_scaler, load_checkpoint, load_model, peak_flops, pick_device,
                      random_windows, read_jsonl, read_text, require_positive, run_main, save_checkpoint, set_seed)


# ----------------------------------------------------------------------------- the two objectives

def mask_tokens(ids, mask_id, vocab_size, mask_prob=0.15, generator=None, special_ids=()):
    """BERT's corruption. Choose each position with probability mask_prob; of the chosen, 80% become
    mask_id, 10% a uniformly random token and 10% stay. Returns (inputs, labels): labels hold the
    original token at chosen positions and -100 (no loss) everywhere else. Special tokens (padding,
    <|eos|>, ...) are never chosen, and a random replacement is never one: they are not text to fill in."""
    ordinary = torch.ones(vocab_size, dtype=torch.bool)
    ordinary[list(special_ids)] = False
    choosable = ordinary[ids]
    chosen = (torch.rand(ids.shape, generator=generator) < mask_prob) & choosable
    if not chosen.any() and choosable.any():  # a batch with no target has an undefined (0/0) loss
        candidates = choosable.view(-1).nonzero().squeeze(-1)
        chosen.view(-1)[candidates[torch.randint(len(candidates), (1,), generator=generator)]] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    allowed = ordinary.nonzero().squeeze(-1).to(ids.dtype)
    random_ids = allowed[torch.randint(len(allowed), ids.shape, generator=generator)]
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


def get_batch(data, batch_size, block_size, objective, generator, mlm=None):
    """batch_size random contiguous windows of the token stream -> (inputs, targets), on the CPU.
    clm: targets are the inputs shifted one to the left (the next token at every position).
    mlm: targets are the original tokens at the masked positions, -100 elsewhere; `mlm` holds
    mask_tokens' mask_id, vocab_size and special_ids (mlm_spec)."""
    window = random_windows(data, batch_size, block_size + 1 if objective == "clm" else block_size, generator)
    if objective == "clm":
        return window[:, :-1], window[:, 1:]
    return mask_tokens(window, generator=generator, **mlm)


def mlm_spec(tokenizer):
    """What mask_tokens needs to know of the tokenizer (None when it has no <|mask|>: CLM only)."""
    if getattr(tokenizer, "mask_id", None) is None:
        return None
    return dict(mask_id=tokenizer.mask_id, vocab_size=tokenizer.vocab_size,
                special_ids=tuple(tokenizer.special_ids.values()))


# ----------------------------------------------------------------------------- text -> tokens

def pick_tokenizer(args, source, text):
    """The checkpoint's tokenizer when resuming or starting from one (ids must mean the same
    tokens), else a saved one (--tokenizer), else one token per character of the data."""
    if source is not None:
        return load_tokenizer(source["tokenizer"])
    if args.tokenizer:
        if not os.path.exists(args.tokenizer):
            raise UserError(f"tokenizer not found ({args.tokenizer}) — train one with python bpe.py, or omit "
                "--tokenizer")
        try:
            return load_tokenizer(args.tokenizer)
        except ValueError as exc:
            raise UserError(f"{exc} — pass a tokenizer saved by bpe.py") from None
    return CharTokenizer.train(text)


def split_tokens(ids, val_fraction, block_size, path):
    """(train, validation): the last val_fraction of the token stream is held out. Text read in
    order, so validation windows never overlap training ones."""
    n_val = int(len(ids) * val_fraction)
    train_ids, val_ids = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    for name, part in (("train", train_ids), ("validation", val_ids)):
        if len(part) <= block_size + 1:
            raise UserError(f"corpus too short: {len(part)} {name} tokens, fewer than one block of "
                            f"{block_size + 1} ({path}) — use more text or a smaller --block-size")
    return train_ids, val_ids


@torch.no_grad()
def estimate_loss(model, data, args, device, rank=0, world=1, mlm=None):
    """Mean loss over the same args.eval_iters windows at every call (a fixed generator), so two
    validations differ only because the model changed. Processes split the windows and all-reduce.
    For mlm also the accuracy of the argmax prediction at the masked positions."""
    model.eval()
    generator = torch.Generator().manual_seed(args.seed)
    totals = torch.zeros(4, device=device)  # loss sum, batches, correct, masked positions
    for i in range(args.eval_iters):
        x, y = get_batch(data, args.batch_size, args.block_size, args.objective, generator, mlm)
        if i % world != rank:
            continue
        x, y = x.to(device), y.to(device)
        with autocast(device, args.dtype):
            logits, loss = model(x, y)
        chosen = y != -100
        totals += torch.stack([loss.float(), torch.ones((), device=device),
                               (logits.argmax(-1) == y)[chosen].sum().float(), chosen.sum().float()])
    if world > 1:
        dist.all_reduce(totals)
    model.train()
    return (totals[0] / totals[1]).item(), (totals[2] / totals[3]).item()


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Pretrain a transformer on raw text (next-token or masked LM).")
    # The defaults are the laptop run: a few minutes on 2 CPU cores (docs/results.md has the time).
    add_common_args(parser, data="data/corpus.txt", max_steps=3000, batch_size=16, lr=5e-3,
                    warmup_steps=100, eval_interval=500, log_interval=10)
    a = parser.add_argument
    a("--objective", default="clm", choices=["clm", "mlm"], help="causal next-token LM or BERT-style masked LM "
        "(default: %(default)s)")
    a("--tokenizer", default=None, help="saved tokenizer JSON, e.g. out/bpe.json (default: characters of the data)")
    a("--block-size", type=int, default=128, help="context length in tokens (default: %(default)s)")
    a("--n-layer", type=int, default=4, help="transformer blocks (default: %(default)s)")
    a("--n-head", type=int, default=4, help="attention heads per block (default: %(default)s)")
    a("--n-embd", type=int, default=128, help="residual stream width (default: %(default)s)")
    a("--dropout", type=float, default=0.0, help="dropout probability; 0 suits a corpus seen a few times "
        "(default: %(default)s)")
    a("--bias", action=argparse.BooleanOptionalAction, default=True, help="biases in Linear and LayerNorm "
        "layers, as in GPT-2; --no-bias drops them, as many newer models do (default: %(default)s)")
    a("--attn-impl", default="sdpa", choices=["sdpa", "manual"], help="fused attention kernel or the "
        "written-out one (default: %(default)s)")
    a("--weight-decay", type=float, default=0.01, help="AdamW decoupled weight decay on matrices; strong decay "
        "erodes rarely seen facts (default: %(default)s)")
    a("--beta2", type=float, default=0.99, help="AdamW second-moment decay (0.95 for large models) (default: "
        "%(default)s)")
    a("--grad-clip", type=float, default=1.0, help="clip the gradient's global norm to this; 0 = off (default: "
        "%(default)s)")
    a("--eval-iters", type=int, default=20, help="validation batches per evaluation (default: %(default)s)")
    a("--val-fraction", type=float, default=0.1, help="last fraction of the tokens held out for validation "
        "(default: %(default)s)")
    a("--eval-data", default="data/eval.jsonl", help="knowledge probe run after training; skipped if the file "
        "is absent, '' = skip (default: %(default)s)")
    a("--resume", action="store_true", help="continue from <out-dir>/pretrain_last.pt (mlm: pretrain_mlm_last.pt)")
    args = parser.parse_args(argv)
    if args.max_steps < 0:
        raise UserError(f"--max-steps must be 0 or more, got {args.max_steps}")
    require_positive(args, "batch_size", "block_size", "n_layer", "n_head", "n_embd", "eval_interval",
                     "log_interval", "grad_accum", "eval_iters")
    if args.n_embd % args.n_head:
        raise UserError(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head} — pick sizes that divide")
    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must lie between 0 and 1, got {args.val_fraction}")
    return args


# ----------------------------------------------------------------------------- the run: state and setup

@dataclass
class RunState:
    """Everything --resume needs besides the weights and the optimizer's state."""
    step: int = 0                 # optimizer steps taken
    best_val_loss: float = math.inf
    bad_evals: int = 0            # validations in a row without improvement (early stopping)
    last_eval: int = -1           # step of the last validation
    train_time: float = 0.0       # seconds spent training, validation excluded
    window_start: float = 0.0     # train_time at the last log line (tokens/s is measured since)
    pending: list = field(default_factory=list)  # train losses of the steps since the last log line


@dataclass
class Run:
    """What the loop works with. raw_model is the plain Transformer; model is what the forward pass
    goes through (torch.compile'd and/or DistributedDataParallel-wrapped, or raw_model itself)."""
    args: argparse.Namespace
    device: str
    rank: int
    world: int
    raw_model: Transformer
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    tokenizer: object
    train_data: torch.Tensor
    val_data: torch.Tensor
    mlm: dict                     # what mask_tokens needs (mlm_spec), None for a tokenizer without <|mask|>
    stem: str                     # "pretrain" or "pretrain_mlm": the file names
    tokens_per_step: int
    log: MetricsLog
    state: RunState

    @property
    def master(self):  # the one process that prints and writes files
        return self.rank == 0

    def path(self, suffix=""):
        return os.path.join(self.args.out_dir, f"{self.stem}{suffix}.pt")


SHAPE = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")


def source_checkpoint(args, last_path):
    """The checkpoint a run continues from: the last one with --resume, --init's otherwise, or None."""
    if args.resume:
        if not os.path.exists(last_path):
            raise UserError(f"nothing to resume ({last_path} not found) — run once without --resume")
        return load_checkpoint(last_path, "cpu")
    return load_checkpoint(args.init, "cpu") if args.init else None


def model_config(args, tokenizer, source, last_path):
    """The model's shape: from the flags, or from the checkpoint it continues (which must agree on resume)."""
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                      n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout, bias=args.bias,
                      causal=args.objective == "clm", attn_impl=args.attn_impl)
    if args.init and not args.resume:  # continued pretraining: the checkpoint fixes the shape
        cfg = ModelConfig(**{**asdict(cfg), **{k: source["config"][k] for k in SHAPE}})
        args.block_size = cfg.block_size
    if args.resume:
        differ = [f"{k}={source['config'][k]} (flags: {getattr(cfg, k)})" for k in SHAPE
                  if source["config"][k] != getattr(cfg, k)]
        if differ:
            raise UserError(f"checkpoint has another shape: {', '.join(differ)} ({last_path}) — "
                            "resume with the flags of the original run, or drop --resume")
    return cfg


def setup(args, device, rank, world, ddp):
    """Tokenizer, data, model, optimizer and log of one run (resumed from pretrain_last.pt with --resume)."""
    stem = "pretrain" if args.objective == "clm" else "pretrain_mlm"
    last_path = os.path.join(args.out_dir, f"{stem}_last.pt")
    source = source_checkpoint(args, last_path)
    text = read_text(args.data)
    tokenizer = pick_tokenizer(args, source, text)
    cfg = model_config(args, tokenizer, source, last_path)
    ids = encode_corpus(text, tokenizer, os.path.join(args.out_dir, "cache"), write_cache=rank == 0)
    train_ids, val_ids = split_tokens(ids, args.val_fraction, cfg.block_size, args.data)

    raw_model = Transformer(cfg).to(device)
    if source is not None:
        try:
            raw_model.load_state_dict(source["model"])
        except RuntimeError as exc:
            raise UserError(f"checkpoint does not fit the model: {str(exc).splitlines()[0]} "
                            f"({args.init or last_path}) — use a checkpoint of this model shape") from None
    model = torch.compile(raw_model) if args.compile else raw_model
    if ddp:
        model = DistributedDataParallel(model)
    optimizer = configure_optimizer(raw_model, args.lr, args.weight_decay, (0.9, args.beta2),
                                    fused=torch.device(device).type == "cuda")
    run = Run(args, device, rank, world, raw_model, model, optimizer, grad_scaler(device, args.dtype), tokenizer,
              torch.from_numpy(train_ids), torch.from_numpy(val_ids), mlm_spec(tokenizer), stem,
              args.batch_size * cfg.block_size * args.grad_accum * world,
              MetricsLog(os.path.join(args.out_dir, f"{stem}.jsonl") if rank == 0 else os.devnull), RunState())
    if args.resume:
        restore_state(run, source)
    return run


def restore_state(run, source):
    """Optimizer, grad scaler, loop state and the metrics so far, from pretrain_last.pt."""
    run.optimizer.load_state_dict(source["optimizer"])
    run.scaler.load_state_dict(source["scaler"])
    run.state = RunState(**{**source["state"], "pending": [torch.tensor(v, device=run.device)
                                                            for v in source["state"]["pending"]]})
    for record in source["metrics"]:
        run.log.log(**record)


def save_last(run):
    """pretrain_last.pt: the weights plus everything --resume needs. Refuses to overwrite it with nan."""
    s = run.state
    if not all(torch.isfinite(p).all() for p in run.raw_model.parameters()):
        raise UserError(f"weights became nan/inf by step {s.step} — lower --lr or raise --warmup-steps; "
                        f"{run.path('_last')} was not overwritten")
    state = dict(vars(s), pending=[float(v) for v in s.pending])
    save_checkpoint(run.path("_last"), run.raw_model, run.tokenizer, stage="pretrain", objective=run.args.objective,
                    step=s.step, val_loss=s.best_val_loss, optimizer=run.optimizer.state_dict(),
                    scaler=run.scaler.state_dict(), metrics=run.log.records, state=state, args=vars(run.args))


def print_plan(run):
    n_params = run.raw_model.num_params()
    D = run.args.max_steps * run.tokens_per_step
    print(f"{run.args.objective}: {n_params / 1e6:.2f}M parameters | {len(run.train_data):,} train and "
          f"{len(run.val_data):,} validation tokens | vocab {run.raw_model.cfg.vocab_size} | {run.device} "
          f"{run.args.dtype} x{run.world}")
    print(f"plan: {run.args.max_steps} steps x {run.tokens_per_step:,} tokens = D {D / 1e6:.2f}M tokens "
          f"({D / n_params:.0f} per parameter; Chinchilla-optimal ~20) | 6ND = {6 * n_params * D:.2e} FLOPs | "
          f"weights+grads+Adam ~{16 * n_params / 2**20:.0f} MiB")


# ----------------------------------------------------------------------------- interrupts, several processes

@contextlib.contextmanager
def ctrl_c_requests_a_stop():
    """Within the block a first Ctrl-C only asks the loop to stop at the next step boundary (so the
    saved state is a consistent one); a second one quits at once. Yields a list that is non-empty
    once a stop was asked for."""
    asked = []

    def handler(*_):
        if asked:
            raise KeyboardInterrupt
        asked.append(True)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def agree(run, flag):
    """True in every process if it is True in any: processes must stop at the same step, or the others
    wait forever in the next all-reduce. A collective costs time, so several processes compare notes
    at log steps only."""
    if run.world == 1:
        return flag
    if run.state.step % run.args.log_interval:
        return False
    t = torch.tensor(float(flag), device=run.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def step_seed(seed, step, rank):
    """The seed of one step in one process. Every draw of a step (windows, masks, dropout) depends
    only on (seed, step, rank), so a resumed run draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + step) * 1024 + rank


# ----------------------------------------------------------------------------- training

def train(run):
    """The loop: validate when due (checkpoints, early stopping), then one optimizer step, then log."""
    args, s = run.args, run.state
    generator = torch.Generator()
    bar = tqdm(total=args.max_steps, initial=s.step, disable=not run.master, desc=run.stem, dynamic_ncols=True)
    tic = time.time()
    with ctrl_c_requests_a_stop() as stop_asked:
        while True:
            if (s.step % args.eval_interval == 0 or s.step == args.max_steps) and s.last_eval != s.step:
                s.train_time += time.time() - tic
                early_stop = validate(run, bar)
                tic = time.time()
                if early_stop:
                    break
            if s.step >= args.max_steps:
                break
            if agree(run, bool(stop_asked)):
                s.train_time += time.time() - tic
                if run.master:
                    save_last(run)
                    bar.close()
                    print(f"interrupted at step {s.step}: saved {run.path('_last')} — continue with --resume")
                raise SystemExit(130)

            # one optimizer step: grad_accum micro-batches, then clip, then AdamW
            lr = set_lr(run.optimizer, s.step, args.warmup_steps, args.max_steps)
            seed = step_seed(args.seed, s.step, run.rank)
            generator.manual_seed(seed)
            torch.manual_seed(seed)  # dropout
            step_loss = torch.zeros((), device=run.device)
            for micro in range(args.grad_accum):
                x, y = get_batch(run.train_data, args.batch_size, run.raw_model.cfg.block_size, args.objective,
                                 generator, run.mlm)
                x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
                # several processes all-reduce the gradients once, after the last micro-batch
                last = run.world == 1 or micro == args.grad_accum - 1
                with contextlib.nullcontext() if last else run.model.no_sync():
                    with autocast(run.device, args.dtype):
                        _, loss = run.model(x, y)
                    run.scaler.scale(loss / args.grad_accum).backward()
                step_loss += loss.detach() / args.grad_accum
            optimizer_step(run.optimizer, run.scaler, run.raw_model.parameters(), args.grad_clip)
            s.step += 1
            s.pending.append(step_loss)
            bar.update(1)
            if s.step % args.log_interval == 0 or s.step == args.max_steps:
                log_progress(run, lr, s.train_time + time.time() - tic, bar)
    bar.close()
    s.train_time += time.time() - tic


def validate(run, bar):
    """Validation loss (and masked accuracy for mlm), the best and last checkpoints, early stopping.
    Returns True when training should stop early."""
    args, s = run.args, run.state
    # through the compiled model but not the DDP wrapper: the processes split the windows themselves
    evaluator = run.model.module if isinstance(run.model, DistributedDataParallel) else run.model
    val_loss, masked_acc = estimate_loss(evaluator, run.val_data, args, run.device, run.rank, run.world, run.mlm)
    if not math.isfinite(val_loss):
        raise UserError(f"validation loss is {val_loss} at step {s.step} — lower --lr or raise "
                        "--warmup-steps (float16: try bfloat16)")
    improved = val_loss < s.best_val_loss
    s.last_eval, s.best_val_loss = s.step, min(s.best_val_loss, val_loss)
    s.bad_evals = 0 if improved else s.bad_evals + 1
    record = dict(step=s.step, tokens=s.step * run.tokens_per_step, val_loss=val_loss)
    if args.objective == "mlm":
        record["masked_accuracy"] = masked_acc
    run.log.log(**record)
    if run.master:
        if improved:
            save_checkpoint(run.path(), run.raw_model, run.tokenizer, stage="pretrain", objective=args.objective,
                            step=s.step, val_loss=val_loss, tokens=s.step * run.tokens_per_step, args=vars(args))
        save_last(run)
        bar.write(f"step {s.step}: val_loss {val_loss:.4f}" + (" (best)" if improved else "")
                  + (f", masked accuracy {masked_acc:.1%}" if args.objective == "mlm" else ""))
    stop = bool(args.patience) and s.bad_evals >= args.patience
    if stop and run.master:
        bar.write(f"early stopping: no improvement in {args.patience} validations")
    return stop


def log_progress(run, lr, now, bar):
    """Mean train loss since the last log line, tokens/s over training time only, MFU on a known GPU."""
    s = run.state
    loss_mean = torch.stack(s.pending).mean()
    if run.world > 1:
        dist.all_reduce(loss_mean)
    loss_mean = loss_mean.item() / run.world  # waits for the device, so the clock is honest
    if not math.isfinite(loss_mean):
        raise UserError(f"training loss is {loss_mean} at step {s.step} — lower --lr or raise "
                        "--warmup-steps (float16: try bfloat16)")
    tok_s = len(s.pending) * run.tokens_per_step / max(now - s.window_start, 1e-9)
    peak = peak_flops(run.device)
    mfu = flops_per_token(run.raw_model.cfg, run.raw_model.num_params()) * tok_s / (peak * run.world) if peak else None
    run.log.log(step=s.step, tokens=s.step * run.tokens_per_step, loss=loss_mean, lr=lr, tokens_per_sec=tok_s, mfu=mfu)
    bar.set_postfix(loss=f"{loss_mean:.3f}", tok_s=f"{tok_s / 1e3:.1f}k", **({"mfu": f"{mfu:.1%}"} if mfu else {}))
    s.pending, s.window_start = [], now


# ----------------------------------------------------------------------------- what the base model learned

def report(run, started):
    """After training: the curves, samples or fill-ins from the best checkpoint, the knowledge
    probe, and the one summary line."""
    args, s = run.args, run.state
    run.log.plot(os.path.join(args.out_dir, f"{run.stem}.png"), ["loss", "val_loss", "lr"], x="tokens",
                 title=f"{args.objective} pretraining")
    net, tokenizer, ckpt = load_model(run.path(), run.device)
    tokens = s.step * run.tokens_per_step
    summary = dict(val_loss=ckpt["val_loss"], best_step=ckpt["step"], steps=s.step, tokens=tokens,
                   tokens_per_sec=tokens / max(s.train_time, 1e-9))
    shown = [f"val_loss {ckpt['val_loss']:.4f}"]
    if args.objective == "mlm":
        shown.append(show_fill_ins(run, net, tokenizer, summary))
    else:
        show_samples(run, net, tokenizer)
        if os.path.exists(args.eval_data):
            shown += knowledge_probe(net, tokenizer, args, run.device, summary)
    summary["wall_s"] = time.time() - started
    run.log.summary(**summary)
    minutes, seconds = divmod(int(summary["wall_s"]), 60)
    shown.append(f"{tokens / 1e6:.2f}M tokens in {minutes}m{seconds:02d}s "
        f"({summary['tokens_per_sec'] / 1e3:.1f}k tok/s)")
    print("summary: " + " | ".join(shown))


def show_fill_ins(run, net, tokenizer, summary):
    """The masked LM's accuracy against the unigram baseline, which always guesses the commonest
    training token, and one masked window with the model's guesses filled in."""
    train_ids, val_ids = run.train_data.numpy(), run.val_data.numpy()
    unigram = float((val_ids == np.bincount(train_ids).argmax()).mean())
    _, acc = estimate_loss(net, run.val_data, run.args, run.device, mlm=run.mlm)
    summary.update(masked_accuracy=acc, unigram_accuracy=unigram)
    x, y = get_batch(run.val_data, 1, min(64, net.cfg.block_size), "mlm", torch.Generator().manual_seed(run.args.seed),
                     run.mlm)
    with torch.no_grad():
        guess = net(x.to(run.device))[0].argmax(-1)[0].cpu()
    chosen = y[0] != -100
    print("masked input:  " + tokenizer.decode(x[0].tolist()).replace("\n", " "))
    print("model's fill:  " + tokenizer.decode(torch.where(chosen, guess, x[0]).tolist()).replace("\n", " "))
    return f"masked accuracy {acc:.1%} (unigram baseline {unigram:.1%})"


def show_samples(run, net, tokenizer):
    """Three samples of raw text, each starting where a line starts."""
    try:
        start = tokenizer.encode("\n")
    except (ValueError, KeyError):
        start = run.val_data[:1].tolist()
    gen = torch.Generator(device=run.device).manual_seed(run.args.seed)
    with torch.no_grad(), autocast(run.device, run.args.dtype):
        out = net.generate(torch.tensor([start] * 3, device=run.device), 200, temperature=0.8, top_k=50, generator=gen)
    for i, row in enumerate(out.tolist()):
        print(f"--- sample {i + 1}\n{tokenizer.decode(row[len(start):]).strip()}")


def knowledge_probe(net, tokenizer, args, device, summary):
    """Greedy completions of data/eval.jsonl, graded by the gold rule. Base models are scored on
    every kind so later stages have a baseline; only cloze (raw text) suits a base model."""
    records = read_jsonl(args.eval_data, required=("prompt", "kind", "answers"))
    new_tokens = min(64, net.cfg.block_size // 2)  # leave half the context to the prompt
    try:
        rates, graded = evaluate(net, tokenizer, records, device, max_new_tokens=new_tokens)
    except ValueError as exc:  # e.g. a character-level tokenizer that lacks a character
        print(f"knowledge probe skipped: {exc}")
        return []
    print(format_pass_rates({"pretrain": rates}))
    for r in [r for r in graded if r["kind"] == "cloze"][:3]:
        print(f"  {'pass' if r['passed'] else 'FAIL'}  {r['prompt']}|{r['output'][:40]}")
    # handed a question, a base model continues the text (often with more questions)
    for r in [r for r in graded if r["kind"] == "fact"][:1]:
        reply = generate_answers(net, tokenizer, [r["prompt"]], device, max_new_tokens=new_tokens, chat=False)[0]
        print(f"a base model asked a question continues the text:\n  {r['prompt']}|{reply!r}")
    summary.update(pass_rates=rates)
    return [f"cloze {rates['cloze']:.1%}"] if "cloze" in rates else []


# ----------------------------------------------------------------------------- main

def main(argv=None):
    started = time.time()
    args = parse_args(argv)
    # Data parallelism: torchrun starts one process per device and tells each its RANK.
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    device, rank, world = pick_device(args.device), 0, 1
    if ddp:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for float32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    try:
        set_seed(args.seed)
        run = setup(args, device, rank, world, ddp)
        if run.master:
            print_plan(run)
        train(run)
        if run.master:
            report(run, started)
    finally:
        if ddp:
            dist.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
