"""reward.py: the Bradley-Terry loss, reading the reward at the last real token, pairs from rankings,
one vote per prompt, centring, a short end-to-end run and the errors for malformed lines."""

import json
import math

import pytest
import torch
from helpers import tokenizer, write_jsonl
from torch.autograd import gradcheck

import model as M
import plumbing as P
import reward as R


def tiny_cfg(tok, **kw):
    cfg = dict(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    return M.ModelConfig(**cfg)


# ----------------------------------------------------------------------------- the losses

def test_bradley_terry_gradcheck_float64():
    torch.manual_seed(0)
    chosen = torch.randn(7, dtype=torch.float64, requires_grad=True)
    rejected = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda c, r: R.bradley_terry_loss(c, r), (chosen, rejected))
    assert gradcheck(lambda c, r: R.bradley_terry_loss(c, r, margin=0.7), (chosen, rejected))


def test_bradley_terry_matches_closed_form():
    chosen = torch.tensor([2.0, -1.0, 0.5, 30.0, -30.0], dtype=torch.float64)
    rejected = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0], dtype=torch.float64)
    for m in (0.0, 0.5):
        pairs = zip(chosen.tolist(), rejected.tolist())
        expected = sum(-math.log(1 / (1 + math.exp(-(c - r - m)))) for c, r in pairs) / 5  # −log σ(Δ − m)
        assert R.bradley_terry_loss(chosen, rejected, margin=m).item() == pytest.approx(expected, rel=1e-12)
    # stable where σ underflows: a badly mis-ordered pair costs its full difference, not inf
    assert R.bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([0.0])).item() == pytest.approx(200.0)


def test_equal_rewards_cost_ln2():
    r = torch.randn(5)
    assert R.bradley_terry_loss(r, r.clone()).item() == pytest.approx(math.log(2), rel=1e-6)


def test_hinge_and_mse_alternatives():
    chosen, rejected = torch.tensor([3.0, 0.2]), torch.tensor([1.0, 0.0])
    # gap 2 >= margin 1 costs nothing; gap 0.2 costs 0.8
    assert R.hinge_loss(chosen, rejected, margin=1.0).item() == pytest.approx(0.4)
    assert R.mse_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(0.5)


# ----------------------------------------------------------------------------- the scalar head

def test_reward_is_read_at_last_real_token_whatever_the_padding():
    tok = tokenizer()
    torch.manual_seed(0)
    rm = M.RewardModel(tiny_cfg(tok)).eval()
    with torch.no_grad():
        rm.score_head.bias.fill_(0.3)
    ids, n_answer, _ = R.chat_ids(tok, "Hi?", "Hello.", 96)
    n, pad = len(ids), 5
    plain = torch.tensor([ids])
    right = torch.tensor([ids + [tok.pad_id] * pad])
    left = torch.tensor([[tok.pad_id] * pad + ids])
    right_mask = torch.tensor([[1] * n + [0] * pad])
    left_mask = torch.tensor([[0] * pad + [1] * n])
    with torch.no_grad():
        r_plain = rm(plain)
        r_right = rm(right, attention_mask=right_mask)
        r_left = rm(left, attention_mask=left_mask)
        # the content of padding never matters
        r_right_other = rm(torch.tensor([ids + [tok.eos_id] * pad]), attention_mask=right_mask)
        # batched through RewardModel.score's right padding, next to a longer row
        r_batch = rm.score([ids, ids + tok.encode(" and more")], tok.pad_id, [n_answer, n_answer + 9])
        # what the naive "last column" would read in the right-padded row
        _, _, hidden = rm.backbone(right, attention_mask=right_mask, return_hidden=True)
        r_last_column = rm.score_head(hidden[:, -1]).squeeze(-1)
    for r in (r_right, r_left, r_right_other, r_batch[:1]):
        torch.testing.assert_close(r, r_plain, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(r_last_column, r_plain, atol=1e-4)


def test_likelihood_weight_adds_the_answers_mean_logprob_whatever_the_padding():
    """r = w·h_last + b + α·mean_t log p(y_t | x, y_<t), the mean over the answer and its <|eos|>,
    checked against sft-style labels and the plain head; left padding gives the same reward."""
    tok = tokenizer()
    torch.manual_seed(2)
    alpha = 2.5
    rm = M.RewardModel(tiny_cfg(tok), likelihood_weight=alpha).eval()
    plain = M.RewardModel(tiny_cfg(tok)).eval()
    plain.load_state_dict(rm.state_dict())
    prompts, answers = ["Hi?", "What is 2 plus 2?"], ["Hello.", "2 plus 2 is 4."]
    encoded = [R.chat_ids(tok, p, a, 96) for p, a in zip(prompts, answers)]
    seqs, lengths = [e[0] for e in encoded], [e[1] for e in encoded]
    assert lengths == [len(tok.encode(a)) + 1 for a in answers]  # the answer and its <|eos|>
    with torch.no_grad():
        got = rm.score(seqs, tok.pad_id, lengths)
        head = plain.score(seqs, tok.pad_id, lengths)
        examples = [M.build_example(tok, [{"role": "user", "content": p}, {"role": "assistant", "content": a}], 95)
                    for p, a in zip(prompts, answers)]
        logps = M.sequence_logps(rm.backbone, [(ids, labels) for ids, labels, _ in examples], tok.pad_id, "cpu")
        torch.testing.assert_close(got, head + alpha * logps / torch.tensor(lengths), rtol=1e-5, atol=1e-5)
        ids, n = seqs[0], len(seqs[0])
        left = rm(torch.tensor([[tok.pad_id] * 4 + ids]), attention_mask=torch.tensor([[0] * 4 + [1] * n]),
                  answer_mask=torch.tensor([[0] * (4 + n - lengths[0]) + [1] * lengths[0]]))
    torch.testing.assert_close(left, got[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="answer_mask"):
        rm(torch.tensor([ids]))


# ----------------------------------------------------------------------------- pairs and rankings

def test_rankings_expand_to_every_ordered_pair(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "Q1", "chosen": "good", "rejected": "bad", "chosen_kind": "correct", "rejected_kind": "rude"},
        {"input": "Q2", "choices": [{"text": "b", "rank": 2, "kind": "rambling"},
                                    {"text": "a", "rank": 1, "kind": "correct"},
                                    {"text": "c", "rank": 3, "kind": "rude"}], "split": "val"},
        {"input": "Q3", "choices": [{"text": t, "rank": k} for k, t in enumerate("wxyz", 1)]},
        {"input": "Q4", "choices": [{"text": "p", "rank": 1}, {"text": "q", "rank": 1}, {"text": "s", "rank": 2}]},
    ])
    c1, c2, c3, c4 = R.read_preferences(str(path))

    def named(c):
        return {(c.answers[w], c.answers[l]) for w, l in c.pairs}

    assert named(c1) == {("good", "bad")} and c1.kinds == ["correct", "rude"] and c1.split == "train"
    assert named(c2) == {("a", "b"), ("a", "c"), ("b", "c")} and c2.split == "val"
    assert dict(zip(c2.answers, c2.kinds)) == {"a": "correct", "b": "rambling", "c": "rude"}
    assert len(c3.pairs) == 4 * 3 // 2 and named(c3) == {(a, b) for i, a in enumerate("wxyz") for b in "wxyz"[i + 1:]}
    assert named(c4) == {("p", "s"), ("q", "s")}  # a tie gives no pair
    assert len(c3.answers) == 4  # each answer goes through the model once, however many pairs it is in


def test_every_prompt_gets_one_vote():
    """A prompt ranked with K=4 answers (6 pairs) weighs as much as one with a single pair."""
    big = R.Comparison("Q", answers=list("abcd"), pairs=[(i, j) for i in range(4) for j in range(i + 1, 4)])
    small = R.Comparison("Q", answers=list("ab"), pairs=[(0, 1)])
    r_big, r_small = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0.0, 5.0])
    got = R.comparison_loss([r_big, r_small], [big, small], "bt", 0.0)
    per_big = R.bradley_terry_loss(r_big[[0, 0, 0, 1, 1, 2]], r_big[[1, 2, 3, 2, 3, 3]])
    per_small = R.bradley_terry_loss(r_small[:1], r_small[1:])
    assert got.item() == pytest.approx(((per_big + per_small) / 2).item())
    flat = R.bradley_terry_loss(torch.cat([r_big[[0, 0, 0, 1, 1, 2]], r_small[:1]]),
                                torch.cat([r_big[[1, 2, 3, 2, 3, 3]], r_small[1:]]))
    assert got.item() != pytest.approx(flat.item())


# ----------------------------------------------------------------------------- centring

def test_centring_gives_sft_samples_mean_zero_and_keeps_every_order():
    tok = tokenizer()
    torch.manual_seed(1)
    rm = M.RewardModel(tiny_cfg(tok)).eval()
    with torch.no_grad():
        rm.score_head.weight.normal_(std=1.0)
        rm.score_head.bias.fill_(2.0)
    prompts, answers = ["What is it?", "Who?", "Why?"], ["It is a cat.", "Nobody.", "I don't know why."]
    encoded = [R.chat_ids(tok, p, a, 96) for p, a in zip(prompts, answers)]
    seqs, lengths = [e[0] for e in encoded], [e[1] for e in encoded]
    with torch.no_grad():
        before = rm.score(seqs, tok.pad_id, lengths)
        offset = R.center_rewards(rm, tok, prompts, answers)
        after = rm.score(seqs, tok.pad_id, lengths)
    assert offset == pytest.approx(-before.mean().item(), abs=1e-5)
    assert after.mean().item() == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(after - after[0], before - before[0])


# ----------------------------------------------------------------------------- end to end

def make_world(tmp_path, n_train=32, n_val=12):
    """A tiny random 'SFT' checkpoint and preferences with a rule it can pick up in a few steps:
    a polite answer beats a rambling one, which beats a rude one."""
    tok = tokenizer()
    torch.manual_seed(0)
    P.save_checkpoint(str(tmp_path / "sft.pt"), M.Transformer(tiny_cfg(tok)), tok, stage="sft")
    records = []
    for i in range(n_train + n_val):
        prompt, split = f"What is item {i}?", "train" if i < n_train else "val"
        good, bad = f"Item {i} is a cup.", f"Go away {i}!"
        if i % 3 == 0:  # a ranking with scores (the mse path reads them)
            records.append({"input": prompt, "split": split, "choices": [
                {"text": bad, "rank": 3, "kind": "rude", "score": 0.0},
                {"text": good, "rank": 1, "kind": "correct", "score": 1.0},
                {"text": good + " Or not.", "rank": 2, "kind": "rambling", "score": 0.5}]})
        else:
            records.append({"prompt": prompt, "chosen": good, "rejected": bad, "chosen_kind": "correct",
                            "rejected_kind": "rude", "split": split})
    write_jsonl(tmp_path / "prefs.jsonl", records)
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"What is item {i}?"} for i in range(4)])
    return tmp_path


def run_args(world, *extra):
    return ["--init", str(world / "sft.pt"), "--data", str(world / "prefs.jsonl"),
            "--prompts", str(world / "prompts.jsonl"), "--out-dir", str(world / "out"), "--device", "cpu",
            "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "3", "--eval-interval", "10",
            "--log-interval", "5", "--norm-samples", "4", *extra]


def test_short_run_learns_the_preference_and_writes_reward_pt(tmp_path):
    world = make_world(tmp_path)
    # the scalar head alone (the default adds the likelihood term, tested below), so that what
    # the run learns is all the head's
    final = R.main(run_args(world, "--max-steps", "12", "--freeze-layers", "1", "--likelihood-weight", "0"))
    log = [json.loads(line) for line in (world / "out" / "reward.jsonl").read_text().splitlines()]
    # untrained, every reward is near 0: the loss is ln 2 whichever way the pairs happen to fall
    assert log[0]["step"] == 0 and log[0]["val_loss"] == pytest.approx(math.log(2), abs=0.02)
    assert final["accuracy"] >= 0.9 and final["loss"] < 0.4
    assert (world / "out" / "reward.png").exists() and "summary" in log[-1]
    rm, tok, ckpt = P.load_model(str(world / "out" / "reward.pt"), "cpu", model_class=M.RewardModel)
    assert ckpt["stage"] == "reward" and isinstance(ckpt["reward_offset"], float)
    assert ckpt["metrics"]["accuracy"] == pytest.approx(final["accuracy"])
    assert ckpt["kind_rewards"]["correct"] > ckpt["kind_rewards"]["rude"]
    # --freeze-layers 1 keeps the embeddings and block 0 as SFT left them; the rest learned
    sft = P.load_checkpoint(str(world / "sft.pt"))["model"]
    state = ckpt["model"]
    for name in ("wte.weight", "wpe.weight", "blocks.0.attn.c_attn.weight"):
        assert torch.equal(state["backbone." + name], sft[name])
    assert not torch.equal(state["backbone.blocks.1.attn.c_attn.weight"], sft["blocks.1.attn.c_attn.weight"])
    # the saved model orders an unseen pair as training left it
    with torch.no_grad():
        good, bad = M.reward_scores(rm, tok, ["What is item 99?"] * 2, ["Item 99 is a cup.", "Go away 99!"])
    assert good > bad


@pytest.mark.parametrize("loss", ["hinge", "mse"])
def test_alternative_losses_run(tmp_path, loss):
    world = make_world(tmp_path, n_train=12, n_val=6)
    final = R.main(run_args(world, "--max-steps", "3", "--loss", loss, "--norm-samples", "0"))
    assert math.isfinite(final["loss"]) and (world / "out" / "reward.pt").exists()


def test_likelihood_weight_run_saves_a_model_that_scores_with_it(tmp_path):
    world = make_world(tmp_path, n_train=8, n_val=4)
    R.main(run_args(world, "--max-steps", "2", "--likelihood-weight", "2"))
    rm, tok, ckpt = P.load_model(str(world / "out" / "reward.pt"), "cpu", model_class=M.RewardModel)
    assert ckpt["likelihood_weight"] == 2.0 and rm.likelihood_weight == 2.0
    head_only = M.RewardModel(rm.backbone.cfg)
    head_only.load_state_dict(rm.state_dict())
    with_term, = M.reward_scores(rm, tok, ["What is item 99?"], ["Item 99 is a cup."])
    without, = M.reward_scores(head_only, tok, ["What is item 99?"], ["Item 99 is a cup."])
    assert with_term < without  # log-likelihoods are negative: the term is there, and weighted


# ----------------------------------------------------------------------------- bad input


GOOD_LINE = {"prompt": "Q", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize("bad_line, message", [
    ('{"prompt": "Q", "chosen": "a"', "invalid JSON"),
    ({"prompt": "Q", "chosen": "a"}, "'rejected'"),
    ({"input": "Q", "choices": [{"text": "a", "rank": "first"}, {"text": "b", "rank": 2}]}, "rank"),
    ({"input": "Q", "choices": [{"text": "a", "rank": 1}]}, "at least 2"),
    ({"input": "Q", "choices": [{"text": "a", "rank": 1, "score": "high"}, {"text": "b", "rank": 2}]}, "score"),
    ({"question": "Q", "answer": "a"}, "neither a pair"),
    ({"prompt": "Q", "chosen": "a", "rejected": "a"}, "same answer"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "prefs.jsonl"
    bad = bad_line if isinstance(bad_line, str) else json.dumps(bad_line)
    path.write_text(json.dumps(GOOD_LINE) + "\n\n" + json.dumps(GOOD_LINE) + "\n" + bad + "\n")
    with pytest.raises(P.UserError, match=message) as err:
        R.read_preferences(str(path))
    assert f"{path}:4" in str(err.value)


def test_command_line_reports_bad_data_with_exit_status_2(tmp_path, capsys, monkeypatch):
    world = make_world(tmp_path, n_train=4, n_val=2)
    with open(world / "prefs.jsonl", "a") as f:
        f.write('{"input": "Q", "choices": "a, b"}\n')
    monkeypatch.setattr("sys.argv", ["reward.py", *run_args(world, "--max-steps", "1")])
    with pytest.raises(SystemExit) as exit_info:
        P.run_main(R.main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "prefs.jsonl:7)" in err and "\n" not in err
    assert not (world / "out" / "reward.pt").exists()
