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
      loss, one reason MLM learns less per token than CLM (the motivation of ELECTRA).

Optimization, as practitioners run it: AdamW with weight decay on weight matrices only; a learning
rate that warms up linearly and then follows a cosine down to 10% of its peak; gradient-norm
clipping; gradient accumulation (effective batch = batch_size x grad_accum x processes); dropout;
validation loss on held-out text every --eval-interval steps; early stopping after --patience
validations without improvement; the best checkpoint kept apart from the last one.

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
What to look for: the loss starts near ln(vocab size) (ln 79 = 4.4 for the characters of the
corpus) and falls; out/pretrain.png shows train and validation loss against tokens seen (a widening
gap is overfitting); the knowledge probe completes "The capital of Norway is" from memory; the base
model's reply to a question continues the thread. Files: out/pretrain.pt is the checkpoint with the
best validation loss (sft.py starts from it); out/pretrain_last.pt adds the optimizer state for
--resume; out/pretrain.jsonl holds the curves and a final summary line.
"""

import argparse
import contextlib
import math
import os
import signal
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bpe import CharTokenizer, load_tokenizer
from common import (MetricsLog, UserError, add_common_args, autocast, configure_optimizer, encode_corpus,
                    flops_per_token, grad_scaler, load_checkpoint, lr_at, optimizer_step, peak_flops, pick_device,
                    random_windows, read_jsonl, read_text, require_positive, run_main, save_checkpoint, set_seed)
from model import ModelConfig, Transformer, evaluate, format_pass_rates, generate_answers, load_model


# ----------------------------------------------------------------------------- text -> tokens

def pick_tokenizer(args, source, text):
    """The checkpoint's tokenizer when resuming or starting from one (ids must mean the same
    tokens), else a saved one (--tokenizer), else one token per character of the data."""
    if source is not None:
        return load_tokenizer(source["tokenizer"])
    if args.tokenizer:
        if not os.path.exists(args.tokenizer):
            raise UserError(f"tokenizer not found ({args.tokenizer}) — train one with python bpe.py, or omit --tokenizer")
        try:
            return load_tokenizer(args.tokenizer)
        except ValueError as exc:
            raise UserError(f"{exc} — pass a tokenizer saved by bpe.py") from None
    return CharTokenizer.train(text)


def split_tokens(ids, val_fraction, block_size, path):
    """(train, validation): the last val_fraction of the token stream is held out. Text read in
    order, so validation windows never overlap training ones (except at the seam)."""
    n_val = int(len(ids) * val_fraction)
    train_ids, val_ids = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    for name, part in (("train", train_ids), ("validation", val_ids)):
        if len(part) <= block_size + 1:
            raise UserError(f"corpus too short: {len(part)} {name} tokens, fewer than one block of "
                            f"{block_size + 1} ({path}) — use more text or a smaller --block-size")
    return train_ids, val_ids


# ----------------------------------------------------------------------------- the two objectives

def mask_tokens(ids, mask_id, vocab_size, mask_prob=0.15, generator=None):
    """BERT's corruption. Choose each position with probability mask_prob; of the chosen, 80% become
    mask_id, 10% a uniformly random token and 10% stay. Returns (inputs, labels): labels hold the
    original token at chosen positions and -100 (no loss) everywhere else."""
    chosen = torch.rand(ids.shape, generator=generator) < mask_prob
    if not chosen.any():  # a batch with no target has an undefined (0/0) loss
        chosen.view(-1)[torch.randint(ids.numel(), (1,), generator=generator)] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator, dtype=ids.dtype)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


def get_batch(data, batch_size, block_size, objective, generator, mask_id=None, vocab_size=None):
    """batch_size random contiguous windows of the token stream -> (inputs, targets), on the CPU.
    clm: targets are the inputs shifted one to the left (the next token at every position).
    mlm: targets are the original tokens at the masked positions, -100 elsewhere."""
    window = random_windows(data, batch_size, block_size + 1 if objective == "clm" else block_size, generator)
    if objective == "clm":
        return window[:, :-1], window[:, 1:]
    return mask_tokens(window, mask_id, vocab_size, generator=generator)


def step_seed(seed, step, rank):
    """The seed of one step in one process. Every draw of a step (windows, masks, dropout) depends
    only on (seed, step, rank), so a resumed run draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + step) * 1024 + rank


@torch.no_grad()
def estimate_loss(model, data, args, device, rank=0, world=1, mask_id=None, vocab_size=None):
    """Mean loss over the same args.eval_iters windows at every call (a fixed generator), so two
    validations differ only because the model changed. Processes split the windows and all-reduce.
    For mlm also the accuracy of the argmax prediction at the masked positions."""
    model.eval()
    generator = torch.Generator().manual_seed(args.seed)
    totals = torch.zeros(4, device=device)  # loss sum, batches, correct, masked positions
    for i in range(args.eval_iters):
        x, y = get_batch(data, args.batch_size, args.block_size, args.objective, generator, mask_id, vocab_size)
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

def build_parser():
    parser = argparse.ArgumentParser(description="Pretrain a transformer on raw text (next-token or masked LM).")
    # The defaults are the laptop run, under 5 minutes on 2 CPU cores: a 2-layer model reads 8.2M
    # characters (about 7 passes over the corpus), enough to complete ~90% of the cloze facts. 4 layers
    # learn more per token (and hand SFT more: docs/03-sft-lora.md) but cost about twice as much
    # per token; larger batches learn less per token.
    add_common_args(parser, data="data/corpus.txt", max_steps=4000, batch_size=16, lr=5e-3,
                    warmup_steps=100, eval_interval=500, log_interval=10)
    a = parser.add_argument
    a("--objective", default="clm", choices=["clm", "mlm"], help="causal next-token LM or BERT-style masked LM (default: %(default)s)")
    a("--tokenizer", default=None, help="saved tokenizer JSON, e.g. out/bpe.json (default: characters of the data)")
    a("--block-size", type=int, default=128, help="context length in tokens (default: %(default)s)")
    a("--n-layer", type=int, default=2, help="transformer blocks (default: %(default)s)")
    a("--n-head", type=int, default=4, help="attention heads per block (default: %(default)s)")
    a("--n-embd", type=int, default=128, help="residual stream width (default: %(default)s)")
    a("--dropout", type=float, default=0.0, help="dropout probability; 0 suits a corpus seen a few times (default: %(default)s)")
    a("--bias", action=argparse.BooleanOptionalAction, default=True, help="biases in Linear and LayerNorm layers, as in GPT-2; --no-bias drops them, as many newer models do (default: %(default)s)")
    a("--attn-impl", default="sdpa", choices=["sdpa", "manual"], help="fused attention kernel or the written-out one (default: %(default)s)")
    a("--weight-decay", type=float, default=0.01, help="AdamW decoupled weight decay on matrices; strong decay erodes rarely seen facts (default: %(default)s)")
    a("--beta2", type=float, default=0.99, help="AdamW second-moment decay (0.95 for large models) (default: %(default)s)")
    a("--grad-clip", type=float, default=1.0, help="clip the gradient's global norm to this; 0 = off (default: %(default)s)")
    a("--eval-iters", type=int, default=20, help="validation batches per evaluation (default: %(default)s)")
    a("--val-fraction", type=float, default=0.1, help="last fraction of the tokens held out for validation (default: %(default)s)")
    a("--eval-data", default="data/eval.jsonl", help="knowledge probe run after training; skipped if the file is absent, '' = skip (default: %(default)s)")
    a("--resume", action="store_true", help="continue from <out-dir>/pretrain_last.pt (mlm: pretrain_mlm_last.pt)")
    return parser


def check_args(args):
    if args.max_steps < 0:
        raise UserError(f"--max-steps must be 0 or more, got {args.max_steps}")
    require_positive(args, "batch_size", "block_size", "n_layer", "n_head", "n_embd", "eval_interval",
                     "log_interval", "grad_accum", "eval_iters")
    if args.n_embd % args.n_head:
        raise UserError(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head} — pick sizes that divide")
    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must lie between 0 and 1, got {args.val_fraction}")


SHAPE = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")


# ----------------------------------------------------------------------------- training

def main(argv=None):
    started = time.time()
    args = build_parser().parse_args(argv)
    check_args(args)

    # Data parallelism: torchrun starts one process per device and tells each its RANK.
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    device = pick_device(args.device)
    rank, world = 0, 1
    if ddp:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
    try:
        _train(args, device, rank, world, ddp, started)
    finally:
        if ddp:
            dist.destroy_process_group()


def _train(args, device, rank, world, ddp, started):
    master = rank == 0  # the one process that prints and writes files
    set_seed(args.seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for float32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    stem = "pretrain" if args.objective == "clm" else "pretrain_mlm"
    best_path, last_path = (os.path.join(args.out_dir, f"{stem}{s}.pt") for s in ("", "_last"))

    # --- the tokenizer and the model shape: from the checkpoint resumed or started from, else the flags
    source = None
    if args.resume:
        if not os.path.exists(last_path):
            raise UserError(f"nothing to resume ({last_path} not found) — run once without --resume")
        source = load_checkpoint(last_path, "cpu")
    elif args.init:
        source = load_checkpoint(args.init, "cpu")
    text = read_text(args.data)
    tokenizer = pick_tokenizer(args, source, text)
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

    ids = encode_corpus(text, tokenizer, os.path.join(args.out_dir, "cache"), write_cache=master)
    train_ids, val_ids = split_tokens(ids, args.val_fraction, cfg.block_size, args.data)
    train_data, val_data = torch.from_numpy(train_ids), torch.from_numpy(val_ids)
    mask_id = getattr(tokenizer, "mask_id", None)

    # --- model, optimizer, mixed precision
    net = Transformer(cfg).to(device)
    if source is not None:
        try:
            net.load_state_dict(source["model"])
        except RuntimeError as exc:
            raise UserError(f"checkpoint does not fit the model: {str(exc).splitlines()[0]} "
                            f"({args.init or last_path}) — use a checkpoint of this model shape") from None
    fast = torch.compile(net) if args.compile else net
    model = DistributedDataParallel(fast) if ddp else fast
    optimizer = configure_optimizer(net, args.lr, args.weight_decay, (0.9, args.beta2), torch.device(device).type)
    scaler = grad_scaler(device, args.dtype)
    n_params = net.num_params()
    tokens_per_step = args.batch_size * cfg.block_size * args.grad_accum * world
    peak = peak_flops(device)
    fpt = flops_per_token(cfg, n_params)

    log = MetricsLog(os.path.join(args.out_dir, f"{stem}.jsonl") if master else os.devnull)
    step, best_val, bad_evals, last_eval, train_time, window_start, pending = 0, float("inf"), 0, -1, 0.0, 0.0, []
    if args.resume:
        optimizer.load_state_dict(source["optimizer"])
        scaler.load_state_dict(source["scaler"])
        step, best_val, bad_evals, last_eval = source["step"], source["best_val_loss"], source["bad_evals"], source["last_eval"]
        train_time, window_start = source["train_time"], source["window_start"]
        pending = [torch.tensor(v, device=device) for v in source["pending"]]
        for record in source["metrics"]:
            log.log(**record)
    source = None  # free the checkpoint's tensors

    def save_last():
        if not all(torch.isfinite(p).all() for p in net.parameters()):
            raise UserError(f"weights became nan/inf by step {step} — lower --lr or raise --warmup-steps; "
                            f"{last_path} was not overwritten")
        save_checkpoint(last_path, net, tokenizer, stage="pretrain", objective=args.objective, step=step,
                        val_loss=best_val, best_val_loss=best_val, bad_evals=bad_evals, last_eval=last_eval,
                        optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), metrics=log.records,
                        train_time=train_time, window_start=window_start, pending=[float(v) for v in pending],
                        args=vars(args))

    if master:
        D = args.max_steps * tokens_per_step
        print(f"{args.objective}: {n_params / 1e6:.2f}M parameters | {len(train_ids):,} train and {len(val_ids):,} "
              f"validation tokens | vocab {cfg.vocab_size} | {device} {args.dtype} x{world}")
        print(f"plan: {args.max_steps} steps x {tokens_per_step:,} tokens = D {D / 1e6:.2f}M tokens "
              f"({D / n_params:.0f} per parameter; Chinchilla-optimal ~20) | 6ND = {6 * n_params * D:.2e} FLOPs | "
              f"weights+grads+Adam ~{16 * n_params / 2**20:.0f} MiB")

    # Ctrl-C asks the loop to stop at the next step boundary, so the saved state is a consistent one
    interrupted = []

    def on_ctrl_c(*_):
        if interrupted:  # a second Ctrl-C: quit now
            raise KeyboardInterrupt
        interrupted.append(True)
    previous_handler = signal.signal(signal.SIGINT, on_ctrl_c)
    generator = torch.Generator()
    bar = tqdm(total=args.max_steps, initial=step, disable=not master, desc=stem, dynamic_ncols=True)
    tic = time.time()

    def agree(flag):  # processes must stop at the same step, or the others wait forever in all-reduce
        if not ddp:
            return flag
        t = torch.tensor(float(flag), device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    try:
        while True:
            # --- validation, checkpoints, early stopping
            if (step % args.eval_interval == 0 or step == args.max_steps) and last_eval != step:
                train_time += time.time() - tic
                val_loss, masked_acc = estimate_loss(fast, val_data, args, device, rank, world, mask_id, cfg.vocab_size)
                if not math.isfinite(val_loss):
                    raise UserError(f"validation loss is {val_loss} at step {step} — lower --lr or raise "
                                    "--warmup-steps (float16: try bfloat16)")
                last_eval, improved = step, val_loss < best_val
                best_val, bad_evals = min(best_val, val_loss), 0 if improved else bad_evals + 1
                record = dict(step=step, tokens=step * tokens_per_step, val_loss=val_loss)
                if args.objective == "mlm":
                    record["masked_accuracy"] = masked_acc
                log.log(**record)
                if master:
                    if improved:
                        save_checkpoint(best_path, net, tokenizer, stage="pretrain", objective=args.objective,
                                        step=step, val_loss=val_loss, tokens=step * tokens_per_step, args=vars(args))
                    save_last()
                    bar.write(f"step {step}: val_loss {val_loss:.4f}" + (" (best)" if improved else "")
                              + (f", masked accuracy {masked_acc:.1%}" if args.objective == "mlm" else ""))
                tic = time.time()
                if args.patience and bad_evals >= args.patience:
                    if master:
                        bar.write(f"early stopping: no improvement in {args.patience} validations")
                    break
            if step >= args.max_steps:
                break
            # (several processes compare notes at log steps only: it costs a collective)
            if (not ddp or step % args.log_interval == 0) and agree(bool(interrupted)):
                train_time += time.time() - tic
                if master:
                    save_last()
                    bar.close()
                    print(f"interrupted at step {step}: saved {last_path} — continue with --resume")
                raise SystemExit(130)

            # --- one optimizer step: grad_accum micro-batches, then clip, then AdamW
            lr = lr_at(step, args.lr, args.warmup_steps, args.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            seed = step_seed(args.seed, step, rank)
            generator.manual_seed(seed)
            torch.manual_seed(seed)  # dropout
            step_loss = torch.zeros((), device=device)
            for micro in range(args.grad_accum):
                x, y = get_batch(train_data, args.batch_size, cfg.block_size, args.objective, generator,
                                 mask_id, cfg.vocab_size)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                # gradients are all-reduced once, after the last micro-batch
                sync = not ddp or micro == args.grad_accum - 1
                with contextlib.nullcontext() if sync else model.no_sync():
                    with autocast(device, args.dtype):
                        _, loss = model(x, y)
                    scaler.scale(loss / args.grad_accum).backward()
                step_loss += loss.detach() / args.grad_accum
            optimizer_step(optimizer, scaler, net.parameters(), args.grad_clip)
            step += 1
            pending.append(step_loss)
            bar.update(1)

            # --- logging: mean train loss since the last log, tokens/s over training time only
            if step % args.log_interval == 0 or step == args.max_steps:
                loss_mean = torch.stack(pending).mean()
                if ddp:
                    dist.all_reduce(loss_mean)
                loss_mean = loss_mean.item() / world  # waits for the device, so the clock below is honest
                if not math.isfinite(loss_mean):
                    raise UserError(f"training loss is {loss_mean} at step {step} — lower --lr or raise "
                                    "--warmup-steps (float16: try bfloat16)")
                now = train_time + time.time() - tic
                tok_s = len(pending) * tokens_per_step / max(now - window_start, 1e-9)
                mfu = fpt * tok_s / (peak * world) if peak else None
                log.log(step=step, tokens=step * tokens_per_step, loss=loss_mean, lr=lr,
                        tokens_per_sec=tok_s, mfu=mfu)
                bar.set_postfix(loss=f"{loss_mean:.3f}", tok_s=f"{tok_s / 1e3:.1f}k",
                                **({"mfu": f"{mfu:.1%}"} if mfu is not None else {}))
                pending, window_start = [], now
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        bar.close()
    train_time += time.time() - tic
    if master:
        _report(args, device, stem, best_path, log, step, tokens_per_step, train_time, started,
                train_ids, val_ids, mask_id)


# ----------------------------------------------------------------------------- what the base model learned

def _report(args, device, stem, best_path, log, step, tokens_per_step, train_time, started,
            train_ids, val_ids, mask_id):
    """After training: the curves, samples or fill-ins from the best checkpoint, the knowledge
    probe, and the one summary line."""
    log.plot(os.path.join(args.out_dir, f"{stem}.png"), ["loss", "val_loss", "lr"], x="tokens",
             title=f"{args.objective} pretraining")
    net, tokenizer, ckpt = load_model(best_path, device)
    tokens = step * tokens_per_step
    summary = dict(val_loss=ckpt["val_loss"], best_step=ckpt["step"], steps=step, tokens=tokens,
                   tokens_per_sec=tokens / max(train_time, 1e-9))
    shown = [f"val_loss {ckpt['val_loss']:.4f}"]

    if args.objective == "mlm":
        # the unigram baseline always guesses the commonest training token
        unigram = float((val_ids == np.bincount(train_ids).argmax()).mean())
        _, acc = estimate_loss(net, torch.from_numpy(val_ids), args, device, mask_id=mask_id,
                               vocab_size=net.cfg.vocab_size)
        summary.update(masked_accuracy=acc, unigram_accuracy=unigram)
        shown.append(f"masked accuracy {acc:.1%} (unigram baseline {unigram:.1%})")
        x, y = get_batch(torch.from_numpy(val_ids), 1, min(64, net.cfg.block_size), "mlm",
                         torch.Generator().manual_seed(args.seed), mask_id, net.cfg.vocab_size)
        with torch.no_grad():
            guess = net(x.to(device))[0].argmax(-1)[0].cpu()
        chosen = y[0] != -100
        print("masked input:  " + tokenizer.decode(x[0].tolist()).replace("\n", " "))
        print("model's fill:  " + tokenizer.decode(torch.where(chosen, guess, x[0]).tolist()).replace("\n", " "))
    else:
        try:  # a sample starts where a line starts
            start = tokenizer.encode("\n")
        except (ValueError, KeyError):
            start = val_ids[:1].tolist()
        gen = torch.Generator(device=device).manual_seed(args.seed)
        with torch.no_grad(), autocast(device, args.dtype):
            out = net.generate(torch.tensor([start] * 3, device=device), 200, temperature=0.8, top_k=50, generator=gen)
        for i, row in enumerate(out.tolist()):
            print(f"--- sample {i + 1}\n{tokenizer.decode(row[len(start):]).strip()}")
        if os.path.exists(args.eval_data):
            shown += _knowledge_probe(net, tokenizer, args, device, summary)
    summary["wall_s"] = time.time() - started
    log.summary(**summary)
    minutes, seconds = divmod(int(summary["wall_s"]), 60)
    shown.append(f"{tokens / 1e6:.2f}M tokens in {minutes}m{seconds:02d}s ({summary['tokens_per_sec'] / 1e3:.1f}k tok/s)")
    print("summary: " + " | ".join(shown))


def _knowledge_probe(net, tokenizer, args, device, summary):
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
    # seed 002: handed a question, a base model continues the text (often with more questions)
    for r in [r for r in graded if r["kind"] == "fact"][:1]:
        reply = generate_answers(net, tokenizer, [r["prompt"]], device, max_new_tokens=new_tokens, chat=False)[0]
        print(f"a base model asked a question continues the text:\n  {r['prompt']}|{reply!r}")
    summary.update(pass_rates=rates)
    return [f"cloze {rates['cloze']:.1%}"] if "cloze" in rates else []


if __name__ == "__main__":
    run_main(main)
