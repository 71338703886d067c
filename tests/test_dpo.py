"""dpo.py: the loss and its variants against their formulas, answer-only sequence log-probs, the
shared expansion of rankings into pairs, and a short end-to-end run on a tiny self-made checkpoint."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tokenizer, write_jsonl
from torch.autograd import gradcheck

import dpo as D
import model as M
import plumbing as P


def tiny_model(tok, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    return M.Transformer(M.ModelConfig(**cfg))


def logps(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return [(-20 * torch.rand(n, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(4)]


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


# ----------------------------------------------------------------------------- the loss

@pytest.mark.parametrize("variant", [dict(), dict(label_smoothing=0.2), dict(loss_type="ipo")])
def test_dpo_loss_gradcheck_float64(variant):
    inputs = logps(0)
    assert gradcheck(lambda *x: D.dpo_loss(*x, beta=0.3, **variant)[0], inputs)


def test_dpo_loss_matches_closed_form():
    pc, pr, rc, rr = [t.detach() for t in logps(1)]
    beta = 0.25
    loss, chosen_rewards, rejected_rewards = D.dpo_loss(pc, pr, rc, rr, beta=beta)
    expected = [-math.log(sigmoid(beta * ((a - c) - (b - d))))
                for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())]
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    torch.testing.assert_close(chosen_rewards, beta * (pc - rc))
    torch.testing.assert_close(rejected_rewards, beta * (pr - rr))
    # stable where σ underflows: a pair ranked 2000 nats the wrong way costs β·2000, not inf
    zero = torch.tensor([0.0])
    far = D.dpo_loss(torch.tensor([-2000.0]), zero, zero, zero, beta=0.1)[0]
    assert far.item() == pytest.approx(200.0)


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_policy_equal_to_reference_costs_ln2(beta, label_smoothing):
    pc, pr, _, _ = logps(2)
    loss, chosen_rewards, rejected_rewards = D.dpo_loss(pc, pr, pc.detach(), pr.detach(), beta, label_smoothing)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-12)
    assert chosen_rewards.abs().max() == 0 and rejected_rewards.abs().max() == 0
    # the first step raises the chosen answer and lowers the rejected one by the same amount
    loss.backward()
    n = len(pc)
    expected = (1 - 2 * label_smoothing) * beta / 2 / n
    torch.testing.assert_close(pc.grad, torch.full_like(pc, -expected))
    torch.testing.assert_close(pr.grad, torch.full_like(pr, expected))


def test_label_smoothing_matches_formula_and_stops_at_a_finite_margin():
    pc, pr, rc, rr = [t.detach() for t in logps(3)]
    beta, eps = 0.5, 0.1
    h = ((pc - rc) - (pr - rr)).tolist()
    expected = [-(1 - eps) * math.log(sigmoid(beta * x)) - eps * math.log(sigmoid(-beta * x)) for x in h]
    loss = D.dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps)[0]
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    # plain DPO keeps rewarding a larger margin; conservative DPO is smallest at β·h = log((1-ε)/ε)
    best = math.log((1 - eps) / eps) / beta
    zero = torch.zeros(1, dtype=torch.float64)

    def at(margin, **kw):
        return D.dpo_loss(torch.tensor([margin], dtype=torch.float64), zero, zero, zero, beta, **kw)[0].item()

    assert at(best, label_smoothing=eps) < min(at(0.9 * best, label_smoothing=eps), at(1.1 * best, label_smoothing=eps))
    assert at(1.1 * best) < at(best)


def test_ipo_matches_formula():
    pc, pr, rc, rr = [t.detach() for t in logps(4)]
    beta = 0.2
    h = ((pc - rc) - (pr - rr)).tolist()
    loss, chosen_rewards, _ = D.dpo_loss(pc, pr, rc, rr, beta, loss_type="ipo")
    assert loss.item() == pytest.approx(sum((x - 1 / (2 * beta)) ** 2 for x in h) / len(h), rel=1e-12)
    torch.testing.assert_close(chosen_rewards, beta * (pc - rc))
    # its target is a margin of 1/(2β), where the loss is exactly 0
    zero = torch.zeros(1, dtype=torch.float64)
    assert D.dpo_loss(torch.tensor([2.5], dtype=torch.float64), zero, zero, zero, beta, loss_type="ipo")[0].item() == 0


# ----------------------------------------------------------------------------- sequence log-probs

def test_sequence_logps_count_only_answer_tokens():
    tok = tokenizer()
    net = tiny_model(tok).double().eval()
    pairs = [("What is two and two?", "Four.", "Five, I think, or maybe six."),
             ("Hi?", "Hello there, nice to meet you.", "No.")]
    encoded, truncated = D.encode_pairs(tok, pairs, net.cfg.block_size)
    assert truncated == 0
    with torch.no_grad():
        chosen, rejected = D.pair_logps(net, encoded, tok.pad_id, "cpu")
        for (prompt, *answers), got_pair in zip(pairs, zip(chosen, rejected)):
            for answer, got in zip(answers, got_pair):
                # by hand, one unpadded sequence: sum log P over the answer and its <|eos|> only
                prompt_ids = tok.encode(M.chat_prompt(prompt))
                ids = prompt_ids + tok.encode(answer) + [tok.eos_id]
                logp = F.log_softmax(net(torch.tensor([ids]))[0][0], dim=-1)
                expected = sum(logp[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids)))
                assert got.item() == pytest.approx(expected, rel=1e-6)  # token_logprobs works in float32
        # a row is scored the same alone as next to a longer, padded-against partner
        alone = D.pair_logps(net, encoded[1:], tok.pad_id, "cpu")
        torch.testing.assert_close(alone[0], chosen[1:])
        torch.testing.assert_close(alone[1], rejected[1:])


def test_preference_pairs_expand_rankings():
    records = [{"input": "q", "choices": [{"text": "b", "rank": 2, "kind": "ok"},
                                          {"text": "a", "rank": 1, "kind": "good"},
                                          {"text": "c", "rank": 3, "kind": "bad"},
                                          {"text": "c2", "rank": 3, "kind": "bad"}]},
               {"prompt": "p", "chosen": "x", "rejected": "y", "chosen_kind": "honest", "rejected_kind": "rude"}]
    pairs = P.preference_pairs(records)
    # 4 answers: 6 ordered pairs minus the tie between the two rank-3 answers
    assert [(c, r) for _, c, r, *_ in pairs[:5]] == [("a", "b"), ("a", "c"), ("a", "c2"), ("b", "c"), ("b", "c2")]
    assert pairs[0] == ("q", "a", "b", "good", "ok", 0)
    assert pairs[5] == ("p", "x", "y", "honest", "rude", 1)
    with pytest.raises(P.UserError, match="record 1"):
        P.preference_pairs([{"prompt": "p", "chosen": "x"}])


# ----------------------------------------------------------------------------- end to end

def toy_preferences(tmp_path):
    """Honesty in miniature: for made-up places, "I don't know." beats a confident invention."""
    records = []
    for i in range(60):
        place = "Zorb" + "abcdefghij"[i % 10] + "klmnopq"[i % 7]
        split = "val" if i % 6 == 0 else "train"
        if i % 2:
            records.append({"prompt": f"Where is {place}?", "chosen": "I don't know.",
                            "rejected": f"{place} is near Lake {place}.", "split": split})
        else:
            records.append({"input": f"Who rules {place}?", "split": split, "choices": [
                {"text": f"King {place} rules it.", "rank": 2}, {"text": "I don't know.", "rank": 1},
                {"text": "Go away.", "rank": 3}]})
    prefs = write_jsonl(tmp_path / "prefs.jsonl", records)
    evals = write_jsonl(tmp_path / "eval.jsonl",
                        [{"prompt": "Where is Zorbzz?", "kind": "unknown", "answers": ["I don't know."]}])
    return prefs, evals


def test_short_run_raises_heldout_accuracy_and_writes_checkpoint(tmp_path):
    tok = tokenizer()
    init = tmp_path / "sft.pt"
    P.save_checkpoint(init, tiny_model(tok, n_layer=1), tok, stage="sft", eval={"unknown": 0.0})  # as sft.py stores it
    prefs, evals = toy_preferences(tmp_path)
    out = tmp_path / "out"
    D.main(["--init", str(init), "--data", str(prefs), "--eval-data", str(evals), "--out-dir", str(out),
            "--device", "cpu", "--max-steps", "30", "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "3",
            "--rpo-alpha", "0",
            "--eval-interval", "15", "--log-interval", "5"])
    lines = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]
    heldout = [r for r in lines if "val_rewards/accuracy" in r]
    assert heldout[0]["step"] == 0 and heldout[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert heldout[-1]["val_rewards/accuracy"] >= 0.9 > heldout[0]["val_rewards/accuracy"]
    assert heldout[-1]["val_rewards/margin"] > 0 and heldout[-1]["val_loss"] < 0.6
    assert lines[-1]["summary"]["heldout_accuracy"] == heldout[-1]["val_rewards/accuracy"]
    net, _, ckpt = P.load_model(out / "dpo.pt")
    assert ckpt["stage"] == "dpo" and set(ckpt["eval"]) == {"unknown"} and (out / "dpo.png").exists()
    start = P.load_model(init)[0]
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), start.state_dict().values()))
    # the summary's plain-log-prob rankings, rebuilt from implicit rewards + log π_ref, match scoring the
    # held-out pairs directly with the start and the saved model
    _, heldout_pairs = D.load_pairs(str(prefs))
    encoded, _ = D.encode_pairs(tok, heldout_pairs, net.cfg.block_size)
    for key, scorer in [("heldout_ref_logp_accuracy", start), ("heldout_policy_logp_accuracy", net)]:
        chosen, rejected = D.all_pair_logps(scorer.eval(), encoded, tok.pad_id, "cpu", 16, "float32")
        expected = (chosen > rejected).float().mean().item()
        assert lines[-1]["summary"][key] == pytest.approx(expected, abs=1.01 / len(encoded))


def test_accuracy_by_groups_pairs_and_counts_ties_as_wrong():
    acc = D.accuracy_by(torch.tensor([2.0, 1.0, 0.0, 5.0, 3.0]), torch.tensor([1.0, 1.0, 1.0, 0.0, 4.0]),
                        ["a", "a", "b", "b", "b"])
    assert acc == {"all": 2 / 5, "a": 1 / 2, "b": 1 / 3}


def test_lora_run_saves_a_merged_plain_checkpoint(tmp_path):
    tok = tokenizer()
    init = tmp_path / "sft.pt"
    P.save_checkpoint(init, tiny_model(tok), tok, stage="sft", eval={"unknown": 0.0})
    prefs, evals = toy_preferences(tmp_path)
    out = tmp_path / "out"
    D.main(["--init", str(init), "--data", str(prefs), "--eval-data", str(evals), "--out-dir", str(out),
            "--device", "cpu", "--max-steps", "4", "--batch-size", "8", "--lr", "1e-2", "--lora-rank", "2"])
    net, _, ckpt = P.load_model(out / "dpo.pt")  # would fail on leftover lora_A / lora_B keys
    start = P.load_model(init)[0].state_dict()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, start[k])}
    assert changed and all(".attn.c_attn." in k or ".attn.c_proj." in k for k in changed)


def test_bad_options_and_data_are_user_errors(tmp_path):
    tok = tokenizer()
    init = tmp_path / "sft.pt"
    P.save_checkpoint(init, tiny_model(tok), tok, stage="sft")
    prefs, evals = toy_preferences(tmp_path)
    common = ["--init", str(init), "--eval-data", str(evals), "--out-dir", str(tmp_path / "out"), "--device", "cpu"]
    with pytest.raises(P.UserError, match="label-smoothing"):
        D.main(common + ["--data", str(prefs), "--label-smoothing", "0.7"])
    train_only = write_jsonl(tmp_path / "train_only.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(P.UserError, match="held-out"):
        D.main(common + ["--data", str(train_only)])
    # without --init the start (and reference) is <out-dir>/sft.pt, not out/sft.pt
    with pytest.raises(P.UserError, match=str(tmp_path / "elsewhere" / "sft.pt")):
        D.main(["--out-dir", str(tmp_path / "elsewhere"), "--data", str(prefs), "--device", "cpu"])
