"""Smoke test of benchmarks/run.py: every section at toy sizes, the table and JSON it writes."""

import importlib.util
import json
import os

import pytest

import bpe
from plumbing import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", os.path.join(ROOT, "benchmarks", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_harness_writes_every_row(tmp_path):
    run = load_run()
    run.main(["--quick", "--device", "cpu", "--out", str(tmp_path), "--tag", "smoke", "--threads", "1",
              "--bpe-bytes", "6000", "--bpe-vocab", "300", "--encode-bytes", "20000", "--new-tokens", "8",
              "--configs", "default",
              "--batch", "2", "--seq", "32", "--variants", "float32", "--steps", "1", "--warmup", "0",
              "--repeats", "1"])
    report = json.loads((tmp_path / "smoke.json").read_text())
    r = report["results"]
    assert r["bpe"]["identical_merges"] and r["bpe"]["merges"] == 300 - 256 - 5 and r["bpe"]["speedup"] > 0
    assert r["encode"]["cold_mb_s"] > 0 and r["encode"]["bytes_per_token"] > 1
    (gen,) = r["generate"]
    assert gen["new_tokens"] == 8 and gen["same_greedy_tokens"] and gen["speedup"] > 0
    (attn,) = r["attention"]
    assert attn["max_abs_diff"] < 1e-4  # hand-written attention and SDPA compute the same thing
    (train,) = r["train"]
    assert "error" not in train, train.get("error")
    assert train["tokens_per_sec"] > 0 and train["mfu"] is None and train["peak_bytes"] >= train["before_bytes"] > 0
    assert report["machine"]["cpu_cores"] and report["machine"]["load_avg_end"]
    md = (tmp_path / "smoke.md").read_text()
    for heading in ("BPE training: naive vs bpe.py", "BPE encoding throughput", "KV cache vs none",
                    "hand-written vs SDPA", "Pretraining throughput", "Peak memory of a training step"):
        assert heading in md
    assert "yes (asserted)" in md and "load average" in md


def test_naive_reference_matches_bpe_py_and_notices_a_difference():
    run = load_run()
    text = "the cat sat on the mat; the hat, the bat. aaaa bbbb aaaa! " * 5
    # the naive side of the BPE row is bpe.py's plain trainer, not a copy of its own
    assert run.train_naive is bpe.train_naive
    merges = list(run.train_naive(text, 256 + 5 + 30, pattern=run.GPT2_PATTERN).merges)
    assert merges == list(run.BPETokenizer.train(text, 256 + 5 + 30, pattern=run.GPT2_PATTERN).merges)
    assert merges != list(run.train_naive(text, 256 + 5 + 30, None).merges)  # no pre-tokenization: merges cross words


def test_bad_flags_are_user_errors(tmp_path):
    run = load_run()
    with pytest.raises(UserError, match="unknown section"):
        run.main(["--only", "bpe,nonsense", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="not found"):
        run.main(["--only", "bpe", "--bpe-data", str(tmp_path / "missing.txt"), "--out", str(tmp_path)])
