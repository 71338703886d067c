"""Benchmarks: how much each speed-up in this course buys, measured as a ratio in one run.

A speed claim is only worth something next to the thing it beats, measured the same way, on the
same machine, at the same time. So every row here is a pair (a baseline and the faster way) or a
throughput with the facts needed to compare it (machine, sizes, precision), and the run writes the
machine and its load next to the numbers:

    BPE training       the plain algorithm, bpe.train_naive (recount every pair of the whole text for
                       each merge), vs bpe.py's incremental BPETokenizer.train; their merge lists are
                       asserted to be identical
    BPE encoding       megabytes of text per second, first pass (cold) and again (chunk cache warm)
    generation         256 new tokens with the key/value cache vs recomputing the prefix each step
    attention          the written-out softmax(QK^T/sqrt(d) + M)V vs PyTorch's fused SDPA kernel,
                       forward + backward, same weights, outputs checked to agree
    pretraining        tokens/s and MFU of full AdamW training steps, float32 / bfloat16 / --compile
    memory             peak memory of a training step

Measuring honestly. GPU work is asynchronous: a timer read before torch.cuda.synchronize() times
the launch, not the work, so every clock here synchronizes first. The first steps pay one-off
costs (allocator growth, kernel selection, torch.compile's code generation), so training is timed
after warmup steps and the compile time is reported apart. On a shared machine the load changes
while we measure; alternating the two sides of a comparison (A B A B ...) and taking medians lets
a busy spell hit both, which keeps the *ratio* meaningful even when absolute times are not.

Model FLOPs utilization says how close training runs to the hardware's limit:

    MFU = flops_per_token · tokens_per_second / peak_flops

with flops_per_token = 6N + 12·n_layer·n_embd·T (model.flops_per_token; 2N forward and 4N backward
per token for N parameters, plus attention over T positions) and the accelerator's dense bfloat16
peak (plumbing.peak_flops; none for CPUs, so MFU is n/a there). Peak memory is
torch.cuda.max_memory_allocated on CUDA; on a CPU it is the process's resident-set high-water mark
(getrusage ru_maxrss), reported whole and as the growth during training steps (gradients, AdamW's
two moments, activations) over what the process held before the first step. Each training row
runs in a fresh process so that these peaks belong to that row alone.

Run it:
    python benchmarks/run.py --quick                 # CPU, a few minutes -> benchmarks/results/cpu-quick.md
    python benchmarks/run.py                         # everything at full size (BPE on the whole corpus)
    python benchmarks/run.py --only bpe,encode --bpe-data your_text.txt     # any UTF-8 text of your own
    python benchmarks/run.py --device cuda --out "$OUT"   # GPU rows: bfloat16, --compile, flash SDPA
What to look for: the ratio column. bpe.py's trainer should be tens to hundreds of times faster than
the naive one (and agree exactly); the cache should win more the longer the generation; SDPA wins
most on GPUs (flash attention never materialises the T×T scores); bfloat16 and --compile pay off
on accelerators, much less on CPUs.
"""

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the course files are flat modules at the repository root

import torch  # noqa: E402

from bpe import DEFAULT_SPECIALS, GPT2_PATTERN, BPETokenizer, CharTokenizer, train_naive  # noqa: E402
from model import ModelConfig, SelfAttention, Transformer, configure_optimizer, flops_per_token  # noqa: E402
from plumbing import UserError, autocast, grad_scaler, peak_flops, pick_device, run_main, set_seed  # noqa: E402

SECTIONS = ("bpe", "encode", "generate", "attention", "train", "memory")
PROMPT_TOKENS = 16


def model_configs(vocab_size):
    """The two model sizes every model row uses.
    default: the course's first laptop size, `pretrain.py --n-layer 4 --batch-size 32` (block 128, 4 heads,
    width 128, character vocabulary of data/corpus.txt); pretrain.py now defaults to 2 layers at batch 16.
    gpt2-small: GPT-2's 124M shape, its 50257-token vocabulary padded to 50304 (a multiple of 64,
    which tensor cores like); token ids are random, the speed does not depend on them."""
    return {"default": ModelConfig(vocab_size=vocab_size, block_size=128, n_layer=4, n_head=4, n_embd=128),
            "gpt2-small": ModelConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768)}


# ----------------------------------------------------------------------------- clocks

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clock(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns, device, repeats, warmups=None):
    """Median seconds of each fn, run in turns (A B A B ...) so that load changes hit all of them.
    One untimed call of each first (or of its cheaper stand-in in warmups): the first call pays for
    memory allocation and kernel choice."""
    for fn in warmups or fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            times[k].append(clock(fn, device))
    return [statistics.median(t) for t in times]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- BPE: naive vs fast

def bench_bpe(text, vocab_size, repeats):
    num_merges = vocab_size - 256 - len(DEFAULT_SPECIALS)
    log(f"bpe: naive vs fast training, {num_merges} merges on {len(text.encode()):,} bytes")
    naive, fast = [], []
    naive_s = clock(lambda: naive.append(list(train_naive(text, vocab_size, pattern=GPT2_PATTERN).merges)), "cpu")
    fast_s = statistics.median(clock(lambda: fast.append(BPETokenizer.train(text, vocab_size, pattern=GPT2_PATTERN)),
                                     "cpu") for _ in range(max(3, repeats)))  # cheap: always a median of 3+
    learned = list(fast[-1].merges)
    if learned != naive[0]:
        k = next((i for i, (x, y) in enumerate(zip(learned, naive[0])) if x != y), min(len(learned), len(naive[0])))
        raise AssertionError(f"bpe.py's two trainers disagree from merge {k} on "
                             f"(fast {learned[k:k + 1]}, naive {naive[0][k:k + 1]}) — a bug in bpe.py")
    return fast[-1], {"bytes": len(text.encode()), "merges": len(learned), "naive_s": naive_s, "fast_s": fast_s,
                      "speedup": naive_s / fast_s, "identical_merges": True}


def bench_encode(tokenizer, text):
    fresh = BPETokenizer.from_dict(tokenizer.to_dict())  # an empty chunk cache: the cold pass
    n_bytes = len(text.encode())
    log(f"encode: {n_bytes:,} bytes")
    out = {}
    cold = clock(lambda: out.setdefault("ids", fresh.encode(text)), "cpu")
    warm = clock(lambda: fresh.encode(text), "cpu")
    if fresh.decode(out["ids"]) != text:
        raise AssertionError("decode(encode(text)) != text — a bug in bpe.py")
    char = CharTokenizer.train(text)
    char_s = clock(lambda: char.encode(text), "cpu")
    return {"bytes": n_bytes, "tokens": len(out["ids"]), "vocab_size": fresh.vocab_size,
            "bytes_per_token": n_bytes / len(out["ids"]), "cold_mb_s": n_bytes / 1e6 / cold,
            "warm_mb_s": n_bytes / 1e6 / warm, "char_mb_s": n_bytes / 1e6 / char_s}


# ----------------------------------------------------------------------------- generation, attention

def bench_generate(name, cfg, device, new_tokens, repeats):
    # block_size covers prompt + new tokens: past it, generate() slides its window and has to
    # recompute the whole context every step, cache or not
    cfg = replace(cfg, block_size=PROMPT_TOKENS + new_tokens)
    set_seed(0)
    net = Transformer(cfg).to(device).eval()
    prompt = torch.randint(cfg.vocab_size, (1, PROMPT_TOKENS), device=device)
    outs = {}

    def run(use_cache, n=new_tokens):
        outs[use_cache] = net.generate(prompt, n, temperature=0.0, use_cache=use_cache)

    log(f"generate: {name}, {new_tokens} tokens, cache vs none")
    no_cache, cache = interleaved([lambda: run(False), lambda: run(True)], device, repeats,
                                  warmups=[lambda: run(False, 4), lambda: run(True, 4)])
    return {"config": name, "new_tokens": new_tokens, "no_cache_tok_s": new_tokens / no_cache,
            "cache_tok_s": new_tokens / cache, "speedup": no_cache / cache,
            "same_greedy_tokens": bool(torch.equal(outs[False], outs[True]))}


def bench_attention(name, cfg, batch, seq, device, dtype, repeats):
    set_seed(0)
    manual = SelfAttention(replace(cfg, attn_impl="manual")).to(device)
    fused = SelfAttention(replace(cfg, attn_impl="sdpa")).to(device)
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(batch, seq, cfg.n_embd, device=device, requires_grad=True)
    grad = torch.randn(batch, seq, cfg.n_embd, device=device)
    outs = {}

    def fwd_bwd(module):
        module.zero_grad(set_to_none=True)
        x.grad = None
        with autocast(device, dtype):
            y = module(x)
        y.backward(grad.to(y.dtype))
        outs[module.cfg.attn_impl] = y.detach().float()

    log(f"attention: {name} {batch}x{seq} {dtype}, manual vs sdpa")
    t_manual, t_sdpa = interleaved([lambda: fwd_bwd(manual), lambda: fwd_bwd(fused)], device, max(3, repeats))
    diff = (outs["manual"] - outs["sdpa"]).abs().max().item()
    flash = None
    if torch.device(device).type == "cuda":
        # does this shape and dtype run on the flash kernel? (forcing it raises if not)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                fwd_bwd(fused)
            flash = True
        except RuntimeError:
            flash = False
    return {"config": name, "batch": batch, "seq": seq, "dtype": dtype, "manual_ms": 1e3 * t_manual,
            "sdpa_ms": 1e3 * t_sdpa, "speedup": t_manual / t_sdpa, "max_abs_diff": diff, "flash": flash}


# ----------------------------------------------------------------------------- training steps

def host_memory(reset=False):
    """(resident bytes now, resident high-water mark, how measured) of this process. Linux keeps the
    mark per address space in /proc/self/status (VmHWM), so it starts afresh in each probe process;
    writing 5 to /proc/self/clear_refs sets it back to the current size. getrusage's ru_maxrss would
    not do: Linux carries it across fork and exec, so a probe would inherit its parent's peak."""
    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        with open("/proc/self/status") as f:
            kb = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return (int(kb["VmRSS"].split()[0]) * 1024, int(kb["VmHWM"].split()[0]) * 1024,
                "the probe process's resident set size: /proc/self/status VmRSS before the first step, "
                "VmHWM (high-water mark, reset just before the first step) after the last")
    except (OSError, KeyError, ValueError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return rss, rss, "getrusage ru_maxrss (may include the parent process's peak)"


def train_probe(spec):
    """Time spec["steps"] AdamW training steps after spec["warmup"] ones; runs in its own process."""
    device, dtype, batch, seq = spec["device"], spec["dtype"], spec["batch"], spec["seq"]
    cfg = ModelConfig(**spec["cfg"])
    cuda = torch.device(device).type == "cuda"
    torch.set_num_threads(spec["threads"])
    set_seed(0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as pretrain.py: TF32 tensor cores for float32
        torch.backends.cudnn.allow_tf32 = True
    net = Transformer(cfg).to(device)
    model = torch.compile(net) if spec["compile"] else net
    optimizer = configure_optimizer(net, 2e-3, 0.1, (0.9, 0.99), fused=torch.device(device).type == "cuda")
    scaler = grad_scaler(device, dtype)
    x = torch.randint(cfg.vocab_size, (batch, seq), device=device)
    y = torch.randint(cfg.vocab_size, (batch, seq), device=device)
    before = torch.cuda.memory_allocated(device) if cuda else host_memory()[0]

    def step():  # pretrain.py's optimizer step: autocast forward, backward, clip, AdamW
        with autocast(device, dtype):
            _, loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        host_memory(reset=True)
    warmup_s = clock(lambda: [step() for _ in range(spec["warmup"])], device)
    losses = []
    elapsed = clock(lambda: losses.extend(step() for _ in range(spec["steps"])), device)
    if not all(torch.isfinite(l).item() for l in losses):
        raise RuntimeError(f"non-finite loss {[l.item() for l in losses]}")
    peak = torch.cuda.max_memory_allocated(device) if cuda else host_memory()[1]
    n_params = net.num_params()
    tok_s = spec["steps"] * batch * seq / elapsed
    peak_device = peak_flops(device)
    fpt = flops_per_token(replace(cfg, block_size=seq), n_params)  # attention over the sequence trained on
    return {"params": n_params, "tokens_per_sec": tok_s, "step_ms": 1e3 * elapsed / spec["steps"],
            "warmup_s": warmup_s, "mfu": fpt * tok_s / peak_device if peak_device else None,
            "peak_bytes": peak, "before_bytes": before, "step_growth_bytes": peak - before,
            "memory_method": "torch.cuda.max_memory_allocated" if cuda else host_memory()[2],
            "grads_adam_bytes": 12 * sum(p.numel() for p in net.parameters())}  # float32 grad + 2 moments


def run_probe(spec):
    """train_probe in a fresh Python process; an error (say, out of memory) becomes the row's note."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        return {"error": lines[-1][:300] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_train(configs, plan, device, memory_only=False):
    rows = []
    for name, cfg in configs.items():
        batch, seq = plan["sizes"][name]
        runs = [(v, plan["threads"]) for v in plan["variants"][name]][:1 if memory_only else None]
        if torch.device(device).type == "cpu" and name == "default" and plan["threads"] > 1 and not memory_only:
            # on a shared CPU, threads that wait for each other at every op can cost more than they give
            runs.append(("float32", 1))
        for variant, threads in runs:
            dtype, compiled = variant.split("+")[0], variant.endswith("+compile")
            spec = {"cfg": asdict(cfg), "device": device, "dtype": dtype, "compile": compiled, "batch": batch,
                    "seq": seq, "threads": threads, "warmup": 0 if memory_only else plan["warmup"],
                    "steps": 1 if memory_only else plan["steps"]}
            log(f"train: {name} {variant} {batch}x{seq}, {threads} threads, {spec['warmup']} warmup + "
                f"{spec['steps']} timed steps")
            rows.append({"config": name, "variant": variant, "dtype": dtype, "compile": compiled, "batch": batch,
                         "seq": seq, "threads": threads, **run_probe(spec)})
    return rows


# ----------------------------------------------------------------------------- machine, report

def machine_info(device, argv):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    cuda = torch.device(device).type == "cuda"
    info = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu,
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": device,
            "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "cuda": torch.version.cuda if cuda else None, "load_avg_start": [round(x, 2) for x in os.getloadavg()],
            "command": " ".join(["python benchmarks/run.py", *argv])}
    try:
        info["uptime_start"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT)
        info["commit"] = (commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
                          if commit.returncode == 0 else None)
    except OSError:
        info.setdefault("uptime_start", None)
        info["commit"] = None
    return info


def fmt_bytes(n):
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def fmt(x, spec=",.0f", none="n/a"):
    return none if x is None else format(x, spec)


def markdown(report):
    m, r = report["machine"], report["results"]
    gpu = f", GPU {m['gpu']} (CUDA {m['cuda']})" if m["gpu"] else ""
    out = [f"# Benchmarks: {report['tag']}", "",
           f"- machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} ({m['torch_threads']} CPU "
           f"thread{'s' if m['torch_threads'] != 1 else ''}), "
           f"Python {m['python']}, {m['platform']}{gpu}",
           f"- load average (1/5/15 min) at start {m['load_avg_start']}, at end {m['load_avg_end']} "
           f"(`uptime` at start: {m['uptime_start']}); on a shared machine absolute times are noisy, "
           "ratios less so (both sides alternate)",
           f"- {m['timestamp']}, commit {m['commit']}, `{m['command']}`, total {report['elapsed_s']:.0f} s", ""]
    if "bpe" in r:
        b = r["bpe"]
        out += ["## BPE training: naive vs bpe.py", "",
                "| text | merges | naive | bpe.py | speed-up | merges identical |",
                "|---|---:|---:|---:|---:|---|",
                f"| {b['bytes']:,} bytes of {report['plan']['bpe_data']} | {b['merges']} | {b['naive_s']:.2f} s | "
                f"{b['fast_s']:.3f} s | **{b['speedup']:.0f}×** | "
                f"{'yes (asserted)' if b['identical_merges'] else 'NO'} |", ""]
    if "encode" in r:
        e = r["encode"]
        out += ["## BPE encoding throughput", "", "| text | vocab | bytes/token | cold (MB/s) | warm cache (MB/s) | "
                "char tokenizer (MB/s) |", "|---|---:|---:|---:|---:|---:|",
                f"| {e['bytes']:,} bytes | {e['vocab_size']} | {e['bytes_per_token']:.2f} | **{e['cold_mb_s']:.2f}** | "
                f"{e['warm_mb_s']:.2f} | {e['char_mb_s']:.2f} |", ""]
    if r.get("generate"):
        out += ["## Generation: KV cache vs none (batch 1, greedy, float32)", "",
                "| config | new tokens | no cache (tok/s) | KV cache (tok/s) | speed-up | same tokens |",
                "|---|---:|---:|---:|---:|---|"]
        out += [f"| {g['config']} | {g['new_tokens']} | {g['no_cache_tok_s']:.1f} | {g['cache_tok_s']:.1f} | "
                f"**{g['speedup']:.2f}×** | "
                f"{'yes' if g['same_greedy_tokens'] else 'no (float rounding flipped an argmax)'} |"
                for g in r["generate"]]
        out += [f"\n{n}" for n in report["notes"].get("generate", [])] + [""]
    if r.get("attention"):
        out += ["## Attention forward+backward: hand-written vs SDPA", "",
                "| config | batch×seq | dtype | manual (ms) | SDPA (ms) | speed-up | max abs diff | flash kernel |",
                "|---|---|---|---:|---:|---:|---:|---|"]
        out += [f"| {a['config']} | {a['batch']}×{a['seq']} | {a['dtype']} | {a['manual_ms']:.1f} | "
                f"{a['sdpa_ms']:.1f} | "
                f"**{a['speedup']:.2f}×** | {a['max_abs_diff']:.1e} | {fmt(a['flash'], '', 'n/a (CPU)')} |"
                for a in r["attention"]]
        out += [""]
    if r.get("train"):
        out += ["## Pretraining throughput (AdamW steps, random tokens)", "",
                "| config | params | batch×seq | precision | threads | tokens/s | vs float32 eager | MFU | step (ms) | "
                "warmup (s) | peak memory |", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t in r["train"]:
            head = (f"| {t['config']} | {fmt(t.get('params'))} | {t['batch']}×{t['seq']} | {t['variant']} | "
                    f"{t['threads']} |")
            if "error" in t:
                out.append(head + f" error: {t['error']} | | | | | |")
                continue
            base = next((b for b in r["train"] if b["config"] == t["config"] and b["variant"] == "float32"
                         and b["threads"] == report["plan"]["threads"] and "error" not in b), None)
            ratio = f"{t['tokens_per_sec'] / base['tokens_per_sec']:.2f}×" if base else "n/a"
            out.append(head + f" **{t['tokens_per_sec']:,.0f}** | {ratio} | {fmt(t['mfu'], '.1%')} | "
                       f"{t['step_ms']:,.0f} | {t['warmup_s']:.1f} | {fmt_bytes(t['peak_bytes'])} |")
        out += [f"\n{n}" for n in report["notes"].get("train", [])] + [""]
    mem = [t for t in r.get("train") or r.get("memory") or []
           if "error" not in t and t["threads"] == report["plan"]["threads"]]
    if mem and "memory" in report["plan"]["only"]:
        out += ["## Peak memory of a training step", "", f"Measured with {mem[0]['memory_method']}.", "",
                "| config | batch×seq | precision | peak | before the first step | growth in training | "
                "of which gradients + AdamW moments (12 B/param) |", "|---|---|---|---:|---:|---:|---:|"]
        out += [f"| {t['config']} | {t['batch']}×{t['seq']} | {t['variant']} | {fmt_bytes(t['peak_bytes'])} | "
                f"{fmt_bytes(t['before_bytes'])} | {fmt_bytes(t['step_growth_bytes'])} | "
                f"{fmt_bytes(t['grads_adam_bytes'])} |" for t in mem]
        out += [""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- the plan and main

def build_parser():
    p = argparse.ArgumentParser(description="Measure the course's speed-ups as ratios in one run; writes "
                                "<out>/<tag>.md and .json.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--quick", action="store_true", help="small sizes: a few minutes on a 2-core CPU")
    a("--only", default=",".join(SECTIONS), help="comma-separated sections to run: " + ",".join(SECTIONS))
    a("--device", default="auto", help="auto, cpu or cuda")
    a("--out", default=os.path.join(ROOT, "benchmarks", "results"), help="directory for the .md and .json")
    a("--tag", default=None, help="result file name (default: cpu or the GPU's name, -quick with --quick)")
    a("--bpe-data", default=os.path.join(ROOT, "data", "corpus.txt"), help="UTF-8 text for the BPE rows "
      "(any UTF-8 text of your own)")
    a("--bpe-bytes", type=int, default=None, help="train BPE on the first N bytes (default: 100000 quick, all)")
    a("--bpe-vocab", type=int, default=None, help="BPE vocabulary size (default: 361 quick = 100 merges, "
      "512 as bpe.py)")
    a("--encode-bytes", type=int, default=None, help="encode the first N bytes (default: all)")
    a("--configs", default="default,gpt2-small", help="model sizes for the model rows: default, gpt2-small")
    a("--new-tokens", type=int, default=256, help="tokens to generate")
    a("--batch", type=int, default=None, help="default config: sequences per training step (default: "
      "pretrain.py's 32; 8 on CPU with --quick)")
    a("--seq", type=int, default=128, help="default config: tokens per sequence (pretrain.py's block size)")
    a("--gpt2-batch", type=int, default=None, help="gpt2-small: sequences per step (default: 16 CUDA, 1 CPU)")
    a("--gpt2-seq", type=int, default=None, help="gpt2-small: tokens per sequence (default: 1024; 128 CPU quick)")
    a("--variants", default=None, help="training rows, e.g. float32,bfloat16,bfloat16+compile (default: CUDA "
      "float32,bfloat16,bfloat16+compile; CPU float32,bfloat16,float32+compile; CPU --quick float32,bfloat16 "
      "and float32 only for gpt2-small)")
    a("--compile-rows", action=argparse.BooleanOptionalAction, default=None,
      help="add/remove the +compile training rows of the default variants")
    a("--steps", type=int, default=None, help="timed training steps (default: 2 quick, 10 CPU, 20 CUDA)")
    a("--warmup", type=int, default=None, help="untimed training steps first (default: 1 quick, 3 CPU, 5 CUDA)")
    a("--repeats", type=int, default=None, help="alternations per A/B comparison (default: 1 quick, 5)")
    a("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    a("--probe", default=None, help=argparse.SUPPRESS)  # internal: one training row in this process
    return p


def make_plan(args, device):
    cuda = torch.device(device).type == "cuda"
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for bad in [s for s in only if s not in SECTIONS] + [c for c in configs if c not in ("default", "gpt2-small")]:
        raise UserError(f"unknown section or config {bad!r} — --only takes {','.join(SECTIONS)}; "
                        "--configs takes default,gpt2-small")
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",")]
        for v in variants:
            if v.split("+")[0] not in ("float32", "bfloat16", "float16") or v.count("+") > 1 or \
                    ("+" in v and not v.endswith("+compile")):
                raise UserError(f"unknown variant {v!r} — use DTYPE or DTYPE+compile, DTYPE one of float32, "
                                "bfloat16, float16")
    else:
        variants = ["float32", "bfloat16"]
        if args.compile_rows if args.compile_rows is not None else not (args.quick and not cuda):
            variants.append("bfloat16+compile" if cuda else "float32+compile")
    gpt2_variants = variants[:1] if (args.quick and not cuda and not args.variants) else variants
    gpt2 = (args.gpt2_batch or (16 if cuda else 1), args.gpt2_seq or (128 if args.quick and not cuda else 1024))
    return {"only": only, "configs": configs, "bpe_data": os.path.relpath(args.bpe_data, ROOT),
            "bpe_bytes": args.bpe_bytes if args.bpe_bytes is not None else (100_000 if args.quick else None),
            "bpe_vocab": args.bpe_vocab or (256 + len(DEFAULT_SPECIALS) + 100 if args.quick else 512),
            "encode_bytes": args.encode_bytes, "new_tokens": args.new_tokens,
            "sizes": {"default": (args.batch or (8 if args.quick and not cuda else 32), args.seq), "gpt2-small": gpt2},
            "variants": {"default": variants, "gpt2-small": gpt2_variants},
            "steps": args.steps or (2 if args.quick else 20 if cuda else 10),
            "warmup": args.warmup if args.warmup is not None else (1 if args.quick else 5 if cuda else 3),
            "repeats": args.repeats or (1 if args.quick else 5), "threads": torch.get_num_threads()}


def read_text(path, n_bytes=None):
    if not os.path.isfile(path):
        raise UserError(f"text file not found ({path}) — pass an existing UTF-8 file with --bpe-data")
    with open(path, "rb") as f:
        raw = f.read() if n_bytes is None else f.read(n_bytes)
    text = raw.decode("utf-8", errors="ignore")  # a cut may split the last character: drop it
    if not text:
        raise UserError(f"{path} is empty — pass a file with text in it")
    return text


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.probe:
        print(json.dumps(train_probe(json.loads(args.probe))))
        return
    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available — use --device cpu or auto")
    if torch.device(device).type not in ("cpu", "cuda"):
        raise UserError(f"device {device} is not benchmarked here — use --device cpu or cuda")
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 rows use TF32 tensor cores, as pretrain.py does
        torch.backends.cudnn.allow_tf32 = True
    plan = make_plan(args, device)
    machine = machine_info(device, sys.argv[1:] if argv is None else argv)
    tag = args.tag or (re.sub(r"[^a-z0-9]+", "-", machine["gpu"].lower()).strip("-") if machine["gpu"] else "cpu") \
        + ("-quick" if args.quick and not args.tag else "")
    log(f"{tag}: sections {','.join(plan['only'])} on {device}")
    results, notes = {}, {}
    corpus = read_text(args.bpe_data)
    configs = {k: v for k, v in model_configs(CharTokenizer.train(corpus).vocab_size).items() if k in plan["configs"]}

    tokenizer = None
    if "bpe" in plan["only"]:
        tokenizer, results["bpe"] = bench_bpe(read_text(args.bpe_data, plan["bpe_bytes"]), plan["bpe_vocab"],
                                              plan["repeats"])
    if "encode" in plan["only"]:
        if tokenizer is None:
            tokenizer = BPETokenizer.train(read_text(args.bpe_data, plan["bpe_bytes"]), plan["bpe_vocab"], GPT2_PATTERN)
        results["encode"] = bench_encode(tokenizer, read_text(args.bpe_data, plan["encode_bytes"]))
    if "generate" in plan["only"]:
        results["generate"] = []
        for name, cfg in configs.items():
            if name == "gpt2-small" and torch.device(device).type == "cpu":
                notes.setdefault("generate", []).append("gpt2-small generation is skipped on CPU: without the "
                                                        "cache it takes minutes.")
                continue
            results["generate"].append(bench_generate(name, cfg, device, plan["new_tokens"], plan["repeats"]))
    if "attention" in plan["only"]:
        dtypes = ["float32", "bfloat16"] if torch.device(device).type == "cuda" else ["float32"]
        results["attention"] = [bench_attention(name, cfg, *plan["sizes"][name], device, dtype, plan["repeats"])
                                for name, cfg in configs.items() for dtype in dtypes]
    if "train" in plan["only"]:
        results["train"] = bench_train(configs, plan, device)
        if torch.device(device).type == "cpu":
            notes.setdefault("train", []).append("MFU is n/a on CPUs (plumbing.peak_flops knows accelerators only).")
            if plan["threads"] > 1 and "default" in configs:
                notes["train"].append(f"The 1-thread row repeats default float32 with torch.set_num_threads(1): when "
                                      f"other processes keep the cores busy (load average above), {plan['threads']} "
                                      "threads that meet at a barrier after every op wait for each other, and "
                                      "one thread can be much faster.")
        else:
            notes.setdefault("train", []).append("MFU = model.flops_per_token (attention over the trained sequence "
                                                 "length) × tokens/s / plumbing.peak_flops, the dense bfloat16 peak, "
                                                 "for every precision; float32 matmuls run on TF32 tensor cores.")
        if plan["variants"]["gpt2-small"] != plan["variants"]["default"] and "gpt2-small" in configs:
            notes.setdefault("train", []).append(f"--quick on CPU: gpt2-small runs float32 only, with "
                                                 f"{plan['sizes']['gpt2-small'][1]}-token sequences.")
    elif "memory" in plan["only"]:
        results["memory"] = bench_train(configs, plan, device, memory_only=True)

    machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {"tag": tag, "machine": machine, "plan": plan, "results": results, "notes": notes,
              "elapsed_s": time.time() - started}
    os.makedirs(args.out, exist_ok=True)
    md = markdown(report)
    with open(os.path.join(args.out, f"{tag}.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out, f"{tag}.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(md)
    failed = [f"{t['config']} {t['variant']}" for t in results.get("train") or results.get("memory") or []
              if "error" in t]
    if failed:
        log(f"warning: {len(failed)} training row(s) failed: {', '.join(failed)} (the error is in the table)")
    print(f"wrote {os.path.join(args.out, tag)}.md and .json in {report['elapsed_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
