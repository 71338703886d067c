"""GPT-2-small training throughput and MFU on one CUDA GPU: float32 (TF32), bfloat16, bfloat16 + compile.

This is the script that produced benchmarks/results/h100-gpt2-small.txt (one H100 80GB HBM3,
PyTorch 2.11, 2026-11-22). It times full AdamW steps of model.Transformer on random tokens
(12 layers, 12 heads, width 768, block 1024, vocabulary 50304, batch 16) after 5 warm-up steps:
    python benchmarks/gpu_gpt2_small.py
benchmarks/run.py --device cuda measures the same rows among others; it had not been run on a GPU yet
when these figures were taken.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import ModelConfig, Transformer, configure_optimizer, autocast, flops_per_token, peak_flops
torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
dev = "cuda"
def bench(compile_, dtype, B=16, T=1024, steps=20):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50304, block_size=T, n_layer=12, n_head=12, n_embd=768, bias=False)
    m = Transformer(cfg).to(dev)
    opt = configure_optimizer(m, 6e-4, device_type="cuda")
    fm = torch.compile(m) if compile_ else m
    x = torch.randint(0, 50304, (B, T), device=dev); y = torch.randint(0, 50304, (B, T), device=dev)
    def step():
        with autocast(dev, dtype):
            _, loss = fm(x, y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(5): step()
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t = time.time()
    for _ in range(steps): step()
    torch.cuda.synchronize(); dt = time.time() - t
    tps = B * T * steps / dt
    n = m.num_params()
    mfu = flops_per_token(cfg, n) * tps / peak_flops(dev)
    print(f"gpt2-small B={B} T={T} dtype={dtype} compile={compile_}: {tps:,.0f} tok/s, MFU {100*mfu:.1f}%, peak mem {torch.cuda.max_memory_allocated()/2**30:.1f} GiB, params {n/1e6:.1f}M", flush=True)
print(torch.__version__, torch.cuda.get_device_name())
bench(False, "float32", steps=10)
bench(False, "bfloat16")
bench(True, "bfloat16")
