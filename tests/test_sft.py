"""SFT: which tokens are trained on, the truncation rule, padding, and a short end-to-end run."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import model as M
import plumbing as P
from bpe import CharTokenizer
from lora import remove_adapters, remove_prefix
from sft import (ADAPTER_LR, PREFIX_LR, build_example, freeze_bottom_layers, n_supervised_tokens, parse_args,
                 record_turns, render_example, supervised_loss, validation_loss)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INSTRUCTION = {"instruction": "What is 2 plus 2?", "input": "", "output": "2 plus 2 is 4.", "split": "train"}
WITH_INPUT = {"instruction": "Tell me the capital of this country.", "input": "Norway",
              "output": "The capital of Norway is Oslo.", "split": "train"}
CONVERSATION = {"conversation": [
    {"role": "user", "content": "What does a cow say?"}, {"role": "assistant", "content": "A cow says moo."},
    {"role": "user", "content": "And a cat?"}, {"role": "assistant", "content": "A cat says meow."}],
    "split": "val"}
RECORDS = [INSTRUCTION, WITH_INPUT, CONVERSATION]
EVAL = [{"prompt": "What is 2 plus 2?", "kind": "task", "answers": ["4", "2 plus 2 is 4."]},
        {"prompt": "What does a cow say?", "kind": "fact", "answers": ["A cow says moo."]}]


@pytest.fixture(scope="module")
def tok():
    text = "".join(json.dumps(r) for r in RECORDS + EVAL) + "User: \nAssistant: "
    return CharTokenizer.train(text)


def supervised_text(tok, ids, labels):
    """The assistant tokens the labels select, decoded turn by turn."""
    return tok.decode([i for i, l in zip(ids, labels) if l != -100])


@pytest.mark.parametrize("record", RECORDS)
def test_exactly_the_assistant_tokens_carry_labels(tok, record):
    ids, labels, truncated = build_example(tok, record, block_size=512)
    assert not truncated and len(ids) == len(labels)
    turns = record_turns(record)
    answers = [t["content"] for t in turns if t["role"] == "assistant"]
    assert supervised_text(tok, ids, labels) == "".join(a + "<|eos|>" for a in answers)
    # the labels are the ids themselves where set (next-token shift happens in pad_batch)
    assert all(l == i for i, l in zip(ids, labels) if l != -100)
    # the full text is the chat template, turn after turn
    expected = "".join(M.chat_prompt(t["content"]) if t["role"] == "user" else t["content"] + "<|eos|>" for t in turns)
    assert tok.decode(ids) == expected
    # every user turn is masked, <|eos|> closing each answer is supervised, pad is not eos
    assert sum(1 for i, l in zip(ids, labels) if i == tok.eos_id and l == tok.eos_id) == len(answers)
    assert tok.pad_id != tok.eos_id


def test_instruction_with_input_joins_them_with_a_newline():
    assert record_turns(WITH_INPUT)[0]["content"] == "Tell me the capital of this country.\nNorway"
    assert record_turns(INSTRUCTION)[0]["content"] == "What is 2 plus 2?"


def test_bad_records_are_user_errors():
    with pytest.raises(P.UserError):
        record_turns({"prompt": "x"})
    with pytest.raises(P.UserError):
        record_turns({"conversation": [{"role": "assistant", "content": "hi"}]})
    with pytest.raises(P.UserError):  # must end with what the assistant says
        record_turns({"conversation": [{"role": "user", "content": "hi"}]})


def test_render_brackets_the_supervised_tokens(tok):
    ids, labels, _ = build_example(tok, CONVERSATION, block_size=512)
    assert render_example(tok, ids, labels) == (
        "User: What does a cow say?\nAssistant: [A cow says moo.<|eos|>]"
        "User: And a cat?\nAssistant: [A cat says meow.<|eos|>]")


def test_truncation_keeps_the_answer_and_the_end_of_the_prompt(tok):
    full, full_labels, _ = build_example(tok, CONVERSATION, block_size=512)
    answer = "A cat says meow.<|eos|>"
    last_pair = "User: And a cat?\nAssistant: " + answer
    block = len(tok.encode(last_pair)) + 4  # block + 1 tokens: the last pair and 5 tokens before it
    ids, labels, truncated = build_example(tok, CONVERSATION, block_size=block)
    assert truncated and len(ids) == block + 1
    assert tok.decode(ids) == "moo.<|eos|>" + last_pair
    assert ids == full[-(block + 1):] and labels == full_labels[-(block + 1):]  # cut from the left
    assert supervised_text(tok, ids, labels) == "moo.<|eos|>" + answer
    # an answer longer than the context: half the context stays prompt, the answer is cut on the right
    ids, labels, truncated = build_example(tok, CONVERSATION, block_size=16)
    assert truncated and len(ids) == 17
    assert labels[:8] == [-100] * 8 and tok.decode(ids[:8]) == "istant: "
    assert supervised_text(tok, ids, labels) == answer[:9]


def test_padding_does_not_change_the_loss_of_a_sequence(tok):
    torch.manual_seed(0)
    net = M.Transformer(M.ModelConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()
    short = build_example(tok, INSTRUCTION, 128)[:2]
    long = build_example(tok, CONVERSATION, 128)[:2]
    x, y, mask = M.pad_batch([short], tok.pad_id)
    _, alone = net(x, targets=y, attention_mask=mask)
    xb, yb, maskb = M.pad_batch([short, long], tok.pad_id)
    assert (maskb[0] == 0).any() and (xb[0][maskb[0] == 0] == tok.pad_id).all()
    assert (yb[0][maskb[0] == 0] == -100).all()  # padding is never a target
    logits, _ = net(xb, attention_mask=maskb)
    padded = F.cross_entropy(logits[0], yb[0], ignore_index=-100)
    torch.testing.assert_close(padded, alone)
    # left padding (positions count real tokens) gives the same loss too
    n = x.size(1)
    left = torch.full((1, n + 5), tok.pad_id)
    left[0, 5:] = x[0]
    left_mask = torch.zeros_like(left)
    left_mask[0, 5:] = 1
    left_y = torch.full_like(left, -100)
    left_y[0, 5:] = y[0]
    _, left_loss = net(left, targets=left_y, attention_mask=left_mask)
    torch.testing.assert_close(left_loss, alone)


def test_grad_accumulation_equals_one_batch_of_every_example(tok):
    """Micro-batches of different answer lengths, each loss divided by the step's supervised tokens:
    the summed gradient is the gradient of the mean over all supervised tokens of the step at once."""
    torch.manual_seed(0)
    net = M.Transformer(M.ModelConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2,
                                      n_embd=32)).double()
    examples = [build_example(tok, r, 128)[:2] for r in (INSTRUCTION, WITH_INPUT, CONVERSATION)]
    micro_batches = [examples[:1], examples[1:]]  # 1 short example, then 2 of other lengths
    n_supervised = sum(n_supervised_tokens(b) for b in micro_batches)

    def gradient(batches):
        net.zero_grad()
        for batch in batches:
            supervised_loss(net, batch, tok.pad_id, "cpu", "float32", n_supervised)[0].backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    accumulated, whole = gradient(micro_batches), gradient([examples])
    torch.testing.assert_close(accumulated, whole)
    # the mean of the micro-batches' own means would weigh the short example's tokens more: not equal
    net.zero_grad()
    for batch in micro_batches:
        (supervised_loss(net, batch, tok.pad_id, "cpu", "float32", n_supervised_tokens(batch))[0] / 2).backward()
    assert not torch.allclose(torch.cat([p.grad.flatten() for p in net.parameters()]), whole)


def test_freeze_layers_stops_gradients_below_the_cut(tok):
    net = M.Transformer(M.ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=3, n_head=2, n_embd=16))
    freeze_bottom_layers(net, 2)
    x = torch.randint(0, tok.vocab_size, (2, 10))
    net(x[:, :-1], targets=x[:, 1:])[1].backward()
    for name, p in net.named_parameters():
        frozen = name.startswith(("blocks.0.", "blocks.1.", "wpe."))
        assert (p.grad is None) == frozen, name
    with pytest.raises(P.UserError):
        freeze_bottom_layers(net, 4)


def test_answer_format_counts_one_sentence_answers_that_stop():
    outputs = ["The sky is blue.", "The sky is blue.\nUser: more", "The sky is blue. And green.", "sssss", "",
               "The sky is blue."]
    finished = [True, True, True, True, True, False]  # the last one hit the length cap: it never stopped
    records = [{"output": o, "finished": f, "kind": "fact"} for o, f in zip(outputs, finished)]
    assert P.answer_format(records) == 1 / 6
    assert P.answer_format(records + [{"output": "x", "finished": False, "kind": "cloze"}]) == 1 / 6  # chat only


def make_tiny_pretrain(tmp_path, tok):
    torch.manual_seed(0)
    net = M.Transformer(M.ModelConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32))
    P.save_checkpoint(str(tmp_path / "pretrain.pt"), net, tok, stage="pretrain")


def run_sft(tmp_path, *flags):
    with open(tmp_path / "sft.jsonl", "w") as f:
        for r in RECORDS * 4 + [dict(CONVERSATION, split="train")]:
            f.write(json.dumps(r) + "\n")
    with open(tmp_path / "eval.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in EVAL))
    with open(tmp_path / "corpus.txt", "w") as f:  # pretraining text to replay: the facts, said plainly
        f.write(" ".join(a for r in EVAL for a in r["answers"]) * 20)
    cmd = [sys.executable, os.path.join(ROOT, "sft.py"), "--out-dir", str(tmp_path),
           "--data", str(tmp_path / "sft.jsonl"),
           "--eval-data", str(tmp_path / "eval.jsonl"), "--replay-data", str(tmp_path / "corpus.txt"),
           "--replay-windows", "2", "--device", "cpu", "--batch-size", "4", "--lr", "3e-3",
           "--warmup-steps", "2", "--eval-interval", "10", "--patience", "0", *flags]
    # a tiny model runs faster on one thread than on two fighting over a shared CPU
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)


def summary(tmp_path):
    with open(tmp_path / "sft.jsonl") as f:
        lines = [json.loads(l) for l in f]
    return lines, lines[-1]["summary"]


def test_short_sft_run_lowers_loss_and_writes_checkpoint(tmp_path, tok):
    make_tiny_pretrain(tmp_path, tok)
    result = run_sft(tmp_path, "--max-steps", "30", "--eval-limit", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[" in result.stdout and "gold pass rate" in result.stdout
    lines, s = summary(tmp_path)
    first_val = lines[0]["val_loss"]
    assert s["val_loss"] < first_val - 0.5, (first_val, s["val_loss"])
    net, _, ckpt = P.load_model(str(tmp_path / "sft.pt"))
    assert ckpt["stage"] == "sft" and set(ckpt["eval"]) == {"task", "fact"}
    assert os.path.exists(tmp_path / "sft.png")


def test_lora_sft_saves_a_merged_plain_transformer(tmp_path, tok):
    make_tiny_pretrain(tmp_path, tok)
    base, _, _ = P.load_model(str(tmp_path / "pretrain.pt"))
    result = run_sft(tmp_path, "--max-steps", "15", "--eval-limit", "0", "--lora-rank", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    _, s = summary(tmp_path)
    assert 0 < s["trainable_fraction"] < 0.2
    assert "replay: off" in result.stdout and s["replay_weight"] == 0  # the frozen W keeps pretraining
    net, _, ckpt = P.load_model(str(tmp_path / "sft.pt"))  # loads as a plain Transformer
    assert ckpt["lora"]["rank"] == 2 and all(k.endswith(("lora_A", "lora_B")) for k in ckpt["lora"]["state"])
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    assert changed and all(".attn.c_attn.weight" in k or ".attn.c_proj.weight" in k for k in changed)


@pytest.mark.parametrize("method", ["lora", "adapter", "prefix"])
def test_peft_sft_checkpoint_loads_as_the_trained_model(tmp_path, tok, method):
    """Each method trains only its own weights, without replay, and writes a checkpoint that load_model
    (the loader of every stage) turns back into the trained model: its validation loss is the one the run
    reported for the weights it kept. LoRA is merged into W; adapters and a prefix are rebuilt."""
    make_tiny_pretrain(tmp_path, tok)
    base, _, _ = P.load_model(str(tmp_path / "pretrain.pt"))
    result = run_sft(tmp_path, "--max-steps", "15", "--eval-limit", "0", "--peft", method,
                     "--adapter-size", "4", "--prefix-len", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainable parameters" in result.stdout and "replay: off" in result.stdout
    _, s = summary(tmp_path)
    assert 0 < s["trainable_fraction"] < 0.2 and s["replay_weight"] == 0 and s["peft"]["method"] == method
    net, _, ckpt = P.load_model(str(tmp_path / "sft.pt"))
    val = [build_example(tok, r, net.cfg.block_size)[:2] for r in RECORDS * 4 if r["split"] == "val"]  # as run_sft
    loss = validation_loss(net, val, 4, tok.pad_id, "cpu", "float32")
    if method == "lora":  # merged: a plain transformer, equal to the unmerged one up to float rounding
        assert "peft" not in ckpt and ckpt["lora"]["rank"] == 8
        assert loss == pytest.approx(s["val_loss"], rel=1e-4)
    else:
        assert ckpt["peft"]["method"] == method
        assert loss == pytest.approx(s["val_loss"], rel=1e-6)
        # the frozen weights came back untouched: without the method's modules it is the starting model
        state = remove_prefix(remove_adapters(net)).state_dict()
        assert state.keys() == base.state_dict().keys()
        assert all(torch.equal(v, base.state_dict()[k]) for k, v in state.items())


def test_peft_flags():
    assert parse_args(["--lora-rank", "8"]).peft_config == dict(
        method="lora", rank=8, alpha=16.0, targets=["attn.c_attn", "attn.c_proj"])  # as before --peft
    assert parse_args(["--peft", "lora"]).lora_rank == 8 and parse_args(["--lora-rank", "0"]).peft is None
    adapter, prefix = parse_args(["--peft", "adapter", "--adapter-size", "6"]), parse_args(["--peft", "prefix"])
    assert adapter.peft_config == dict(method="adapter", size=6, where=["attn", "mlp"])
    assert (adapter.lr, prefix.lr, adapter.replay_weight, prefix.replay_weight) == (ADAPTER_LR, PREFIX_LR, 0, 0)
    with pytest.raises(P.UserError, match="LoRA's size"):
        parse_args(["--peft", "prefix", "--lora-rank", "4"])
    with pytest.raises(P.UserError, match="--prefix-len must be at least 1"):
        parse_args(["--peft", "prefix", "--prefix-len", "0"])


def test_bad_data_is_a_one_line_error(tmp_path, tok):
    make_tiny_pretrain(tmp_path, tok)
    result = run_sft(tmp_path, "--max-steps", "1", "--eval-limit", "0", "--data", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    # a record of the wrong format names the file and the record
    wrong = tmp_path / "prefs.jsonl"
    wrong.write_text('{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."}\n')
    result = run_sft(tmp_path, "--max-steps", "1", "--eval-limit", "0", "--data", str(wrong))
    assert result.returncode == 2 and f"({wrong}, record 1)" in result.stderr and result.stderr.count("\n") == 1


def test_replay_trains_the_pretraining_loss_alongside(tmp_path, tok):
    make_tiny_pretrain(tmp_path, tok)
    result = run_sft(tmp_path, "--max-steps", "30", "--eval-limit", "0", "--log-interval", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replay: 2 windows of 97 tokens" in result.stdout
    lines, s = summary(tmp_path)
    replay = [r["replay_loss"] for r in lines if "replay_loss" in r]
    assert s["replay_weight"] == 1.0 and len(replay) == 30
    assert replay[-1] < replay[0] - 0.5, replay  # the replayed text is being learnt too
    # --replay-weight 0: no replay term, and the SFT batches drawn are the same as with it
    off = tmp_path / "off"
    off.mkdir()
    make_tiny_pretrain(off, tok)
    result = run_sft(off, "--max-steps", "30", "--eval-limit", "0", "--log-interval", "1", "--replay-weight", "0")
    assert result.returncode == 0 and "replay: off" in result.stdout
    lines_off, s_off = summary(off)
    assert s_off["replay_weight"] == 0 and not any("replay_loss" in r for r in lines_off)
    step1 = [next(r["loss"] for r in run if r.get("step") == 1 and "loss" in r) for run in (lines, lines_off)]
    assert step1[0] == pytest.approx(step1[1], abs=1e-6)  # before any update: the same first SFT batch


def test_scratch_sft_does_not_replay_by_default(tmp_path, tok):
    make_tiny_pretrain(tmp_path, tok)
    result = run_sft(tmp_path, "--max-steps", "2", "--eval-limit", "0", "--init", "scratch")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replay: off" in result.stdout and summary(tmp_path)[1]["replay_weight"] == 0


def test_missing_replay_text_is_a_one_line_error(tmp_path, tok):
    make_tiny_pretrain(tmp_path, tok)
    result = run_sft(tmp_path, "--max-steps", "1", "--eval-limit", "0", "--replay-data", str(tmp_path / "none.txt"))
    assert result.returncode == 2 and "none.txt" in result.stderr and result.stderr.count("\n") == 1
