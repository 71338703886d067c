"""pretrain.py: the masking rule, short CLM/MLM runs, exact resume, two-process DDP, bad input."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import plumbing as P
import pretrain
from plumbing import UserError, load_checkpoint, load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTRIES = [("Norway", "Oslo"), ("Peru", "Lima"), ("Japan", "Tokyo"), ("Egypt", "Cairo"),
             ("Chile", "Santiago"), ("Kenya", "Nairobi")]


def tiny_corpus(path, repeats=60):
    lines = [f"The capital of {c} is {k}.\n" for c, k in COUNTRIES] * repeats
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


def tiny_args(tmp_path, *extra, data=None):
    return ["--data", data or tiny_corpus(tmp_path / "corpus.txt"), "--out-dir", str(tmp_path / "out"),
            "--device", "cpu", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
            "--batch-size", "8", "--max-steps", "30", "--warmup-steps", "5", "--eval-interval", "10",
            "--eval-iters", "4", "--log-interval", "1", "--eval-data", str(tmp_path / "none.jsonl"), *extra]


def metrics(out_dir, stem="pretrain"):
    with open(os.path.join(out_dir, f"{stem}.jsonl")) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- masking

def test_mask_tokens_follows_bert_80_10_10():
    vocab, mask_id = 50, 49
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, mask_id, (200, 500), generator=g)
    inputs, labels = pretrain.mask_tokens(ids, mask_id, vocab, generator=g)
    chosen = labels != -100
    assert abs(chosen.float().mean().item() - 0.15) < 0.005
    assert torch.equal(labels[chosen], ids[chosen])  # labels: the original token, only where chosen
    assert torch.equal(inputs[~chosen], ids[~chosen])  # the rest of the input is untouched
    n = chosen.sum().item()
    masked = (inputs[chosen] == mask_id).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    replaced = 1 - masked - kept
    # a random replacement equals the original token 1 time in `vocab`
    assert abs(masked - 0.8) < 0.01
    assert abs(kept - (0.1 + 0.1 / vocab)) < 0.01
    assert abs(replaced - 0.1 * (1 - 1 / vocab)) < 0.01
    again = pretrain.mask_tokens(ids, mask_id, vocab, generator=torch.Generator().manual_seed(0))
    other = pretrain.mask_tokens(ids, mask_id, vocab, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], other[0]) and torch.equal(again[1], other[1])


def test_mask_tokens_always_has_a_target():
    for seed in range(50):  # 4 positions: no chosen position in ~52% of draws without the guard
        _, labels = pretrain.mask_tokens(torch.arange(4), 9, 10, generator=torch.Generator().manual_seed(seed))
        assert (labels != -100).any()


def test_mask_tokens_never_picks_or_produces_special_tokens():
    vocab, specials = 20, (16, 17, 18, 19)  # pad, eos, mask, ... after the ordinary ids, as in bpe.py
    mask_id = 18
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (300, 64), generator=g)  # ordinary tokens and specials mixed
    inputs, labels = pretrain.mask_tokens(ids, mask_id, vocab, mask_prob=0.5, generator=g, special_ids=specials)
    special = torch.isin(ids, torch.tensor(specials))
    chosen = labels != -100
    assert special.any() and chosen.any()
    assert not (chosen & special).any()  # a special position is never a target
    assert torch.equal(inputs[special], ids[special])  # ... and never corrupted
    replaced = chosen & (inputs != mask_id) & (inputs != ids)
    assert replaced.any() and not torch.isin(inputs[replaced], torch.tensor(specials)).any()
    # a window of nothing but specials has no target to give, and no error
    _, labels = pretrain.mask_tokens(torch.full((2, 4), 16), mask_id, vocab, generator=g, special_ids=specials)
    assert (labels == -100).all()


def test_get_batch_clm_targets_are_next_tokens():
    data = torch.arange(1000, dtype=torch.int32)
    x, y = pretrain.get_batch(data, 4, 16, "clm", torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(y, x + 1)  # contiguous windows, shifted by one


def test_random_windows_are_contiguous_and_reach_both_ends():
    data = torch.arange(10, dtype=torch.int32)
    windows = P.random_windows(data, 500, 4, torch.Generator().manual_seed(0))
    assert windows.shape == (500, 4) and windows.dtype == torch.long
    assert torch.equal(windows - windows[:, :1], torch.arange(4).expand(500, 4))  # consecutive tokens
    assert set(windows[:, 0].tolist()) == set(range(7))  # every start 0..len-length, the last window included


# ----------------------------------------------------------------------------- short runs

def test_clm_run_lowers_loss_and_runs_the_knowledge_probe(tmp_path, capsys):
    probe = tmp_path / "eval.jsonl"
    probe.write_text("".join(json.dumps({"prompt": f"The capital of {c} is", "kind": "cloze", "answers": [k]}) + "\n"
                             for c, k in COUNTRIES))
    args = tiny_args(tmp_path, "--max-steps", "60", "--eval-interval", "30", "--lr", "1e-2", "--log-interval", "10")
    args[args.index("--eval-data") + 1] = str(probe)
    pretrain.main(args)
    out = tmp_path / "out"
    rows = metrics(out)
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert vals[-1] < 0.5 * vals[0]
    assert {"loss", "lr", "tokens_per_sec", "mfu", "tokens"} <= set(rows[1])
    summary = rows[-1]["summary"]
    printed = capsys.readouterr().out
    cloze = summary["pass_rates"]["cloze"]
    assert cloze in {i / len(COUNTRIES) for i in range(len(COUNTRIES) + 1)}  # graded every probe once
    assert f"cloze {cloze:.1%}" in printed and "summary: val_loss" in printed
    assert "The capital of Norway is|" in printed  # completions are shown
    model, tokenizer, ckpt = load_model(str(out / "pretrain.pt"))
    assert ckpt["stage"] == "pretrain" and ckpt["objective"] == "clm" and model.cfg.causal
    assert ckpt["val_loss"] == min(vals)
    assert (out / "pretrain.png").exists() and (out / "pretrain_last.pt").exists()


def test_mlm_run_lowers_loss_and_beats_unigram(tmp_path):
    pretrain.main(tiny_args(tmp_path, "--objective", "mlm", "--max-steps", "150", "--lr", "1e-2",
                            "--eval-interval", "75", "--batch-size", "32", "--n-embd", "64",
                            "--warmup-steps", "100"))  # a short warmup stalls this tiny MLM at the unigram
    rows = metrics(tmp_path / "out", "pretrain_mlm")
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert vals[-1] < 0.8 * vals[0]
    summary = rows[-1]["summary"]
    # ~16% for always guessing the commonest character (space); ~30% measured here
    assert summary["masked_accuracy"] > summary["unigram_accuracy"] + 0.08
    model, _, ckpt = load_model(str(tmp_path / "out" / "pretrain_mlm.pt"))
    assert ckpt["objective"] == "mlm" and not model.cfg.causal
    assert not (tmp_path / "out" / "pretrain.pt").exists()  # the causal model of later stages is left alone


def test_grad_accum_equals_one_big_batch(tmp_path):
    """Two micro-batches of 4 draw the same 8 windows as one batch of 8 (one generator, drawn in
    order); averaging the micro-batch losses must then give the same updates, up to rounding."""
    curves = []
    for name, extra in (("big", ("--batch-size", "8")), ("accum", ("--batch-size", "4", "--grad-accum", "2"))):
        (tmp_path / name).mkdir()
        pretrain.main(tiny_args(tmp_path / name, *extra, "--max-steps", "10"))
        curves.append([r["loss"] for r in metrics(tmp_path / name / "out") if "loss" in r])
    assert curves[0] == pytest.approx(curves[1], rel=1e-4)
    assert curves[0][-1] < curves[0][0]


def test_no_bias_builds_a_model_without_biases(tmp_path):
    pretrain.main(tiny_args(tmp_path, "--no-bias", "--max-steps", "2"))
    ckpt = load_checkpoint(str(tmp_path / "out" / "pretrain.pt"))
    assert ckpt["config"]["bias"] is False
    assert not [name for name in ckpt["model"] if name.endswith(".bias")]


def test_resume_after_ctrl_c_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    extra = ("--dropout", "0.1")  # dropout draws random numbers too: they must replay exactly
    full = tmp_path / "full"
    full.mkdir()
    pretrain.main(tiny_args(full, *extra))

    split = tmp_path / "split"
    split.mkdir()
    real_set_lr = pretrain.set_lr

    def ctrl_c_at_step_13(optimizer, step, *a):
        if step == 13:
            os.kill(os.getpid(), signal.SIGINT)
        return real_set_lr(optimizer, step, *a)

    monkeypatch.setattr(pretrain, "set_lr", ctrl_c_at_step_13)
    with pytest.raises(SystemExit) as stop:
        pretrain.main(tiny_args(split, *extra))
    assert stop.value.code == 130
    assert load_checkpoint(str(split / "out" / "pretrain_last.pt"))["step"] == 14  # the step in flight finished
    monkeypatch.setattr(pretrain, "set_lr", real_set_lr)
    pretrain.main(tiny_args(split, *extra, "--resume"))

    def curve(d):
        return [(r["step"], r.get("loss"), r.get("val_loss")) for r in metrics(d / "out") if "step" in r]
    assert curve(split) == curve(full)
    a, b = (torch.load(d / "out" / "pretrain_last.pt", weights_only=True)["model"] for d in (full, split))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_train_with_ddp_on_gloo(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "pretrain.py"), *tiny_args(tmp_path, "--max-steps", "10", "--log-interval", "5")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "pretrain.jsonl", "pretrain.png", "pretrain.pt", "pretrain_last.pt"]
    rows = metrics(out)
    assert sum("summary" in r for r in rows) == 1  # only rank 0 wrote
    assert len(os.listdir(out / "cache")) == 1
    assert done.stdout.count("summary:") == 1
    # two processes of 8 windows: each step saw 2 x 8 x 32 tokens
    assert rows[-1]["summary"]["tokens"] == 10 * 2 * 8 * 32


# ----------------------------------------------------------------------------- bad input

def test_missing_data_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "pretrain.py"), "--data", str(tmp_path / "nope.txt"),
                           "--out-dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: data file not found") and done.stderr.count("\n") == 1


@pytest.mark.parametrize("content, message", [
    (b"", "data file is empty"),
    (b"  \n\n", "data file is empty"),
    (b"good line\nbad \xff byte\n", "not UTF-8"),
    (b"The capital of Peru is Lima.\n", "corpus too short"),
])
def test_bad_data_names_the_cause(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        pretrain.main(tiny_args(tmp_path, data=str(path)))
    if message == "not UTF-8":
        assert "bad.txt:2)" in str(err.value)  # file and line
    assert not (tmp_path / "out" / "pretrain.pt").exists()


def test_resume_with_another_shape_is_refused(tmp_path):
    pretrain.main(tiny_args(tmp_path, "--max-steps", "2"))
    with pytest.raises(UserError, match=r"another shape: n_embd=32 \(flags: 64\)"):
        pretrain.main(tiny_args(tmp_path, "--resume", "--n-embd", "64"))


def test_nan_loss_stops_without_a_bad_checkpoint(tmp_path):
    with pytest.raises(UserError, match="nan|inf"):
        pretrain.main(tiny_args(tmp_path, "--lr", "1e30", "--warmup-steps", "1", "--grad-clip", "0"))
    last = tmp_path / "out" / "pretrain_last.pt"
    if last.exists():
        assert all(torch.isfinite(v).all() for v in load_checkpoint(str(last))["model"].values())


def test_unknown_tokenizer_and_bad_sizes(tmp_path):
    with pytest.raises(UserError, match="tokenizer not found"):
        pretrain.main(tiny_args(tmp_path, "--tokenizer", str(tmp_path / "bpe.json")))
    with pytest.raises(UserError, match="divisible"):
        pretrain.main(tiny_args(tmp_path, "--n-head", "3"))


def test_bpe_tokenizer_and_token_cache(tmp_path, monkeypatch):
    import bpe
    corpus = tiny_corpus(tmp_path / "corpus.txt")
    tok = bpe.BPETokenizer.train(open(corpus).read(), vocab_size=300)
    tok.save(str(tmp_path / "bpe.json"))
    args = tiny_args(tmp_path, "--tokenizer", str(tmp_path / "bpe.json"), "--max-steps", "2", data=corpus)
    pretrain.main(args)
    _, tokenizer, _ = load_model(str(tmp_path / "out" / "pretrain.pt"))
    assert tokenizer.to_dict() == tok.to_dict()
    # the second start-up reads the cached token array instead of encoding the text again
    real_encode = bpe.BPETokenizer.encode

    def encode_short_only(self, text):  # the samples still encode their one-line prompt
        assert len(text) < 100, "the corpus was encoded again"
        return real_encode(self, text)
    monkeypatch.setattr(bpe.BPETokenizer, "encode", encode_short_only)
    pretrain.main(args)
