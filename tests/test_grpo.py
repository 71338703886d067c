"""grpo.py: group-relative advantages against their formula, the GRPO loss (gradcheck, a hand computation for
both token averagings), the k3 KL estimator, ratio 1 before the first update, the gold reward of known answers,
and short end-to-end runs on tiny self-made checkpoints (gold reward, reward model, bad input)."""

import json
import math
import statistics

import pytest
import torch
from helpers import ragged, tokenizer, write_jsonl
from helpers import tiny_policy as tiny_model
from torch.autograd import gradcheck

import grpo
import model as M
import plumbing as P


# ----------------------------------------------------------------------------- group-relative advantages

def test_group_advantages_match_their_formula():
    torch.manual_seed(0)
    G = 5
    rewards = torch.randn(3 * G, dtype=torch.float64)
    scaled = grpo.group_advantages(rewards, G)
    plain = grpo.group_advantages(rewards, G, scale=False)
    for g in range(3):
        r = rewards[g * G:(g + 1) * G].tolist()
        mean, std = statistics.mean(r), statistics.stdev(r)  # Bessel's correction, as torch.std and TRL
        for i in range(G):
            assert scaled[g * G + i].item() == pytest.approx((r[i] - mean) / (std + 1e-4), rel=1e-12)
            assert plain[g * G + i].item() == pytest.approx(r[i] - mean, abs=1e-12)
    groups = scaled.view(3, G)
    assert groups.mean(-1).abs().max().item() < 1e-12  # zero mean in every group
    assert torch.allclose(groups.std(-1), torch.ones(3, dtype=torch.float64), atol=1e-3)  # unit std, up to ε
    assert torch.allclose((groups ** 2).sum(-1), torch.full((3,), G - 1.0, dtype=torch.float64), rtol=2e-3)
    assert plain.view(3, G).mean(-1).abs().max().item() < 1e-12


def test_a_unanimous_group_gets_zero_advantages_not_nan():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    for scale in (True, False):
        adv = grpo.group_advantages(rewards, 4, scale=scale)
        assert torch.isfinite(adv).all()
        assert (adv[:8] == 0).all() and (adv[8:] != 0).all()
    adv = grpo.group_advantages(rewards, 4)
    # one right answer in four: A = (1 - 1/4) / (std + ε) with std = sqrt(1/4), the others share the rest
    assert adv[9].item() == pytest.approx(0.75 / (0.5 + 1e-4), rel=1e-6)
    assert adv[8].item() == pytest.approx(-0.25 / (0.5 + 1e-4), rel=1e-6)
    assert grpo.zero_std_fraction(rewards, 4) == pytest.approx(2 / 3)
    assert grpo.zero_std_fraction(torch.tensor([0.9] * 8), 8) == 1.0


# ----------------------------------------------------------------------------- the loss

def loss_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    B, N = 4, 5
    old = -2 * torch.rand(B, N, generator=g, dtype=torch.float64)
    # ρ = π_θ/π_old both inside and outside [1 − ε, 1 + ε]
    logprobs = (old + 0.5 * torch.randn(B, N, generator=g, dtype=torch.float64)).requires_grad_()
    ref = old + 0.3 * torch.randn(B, N, generator=g, dtype=torch.float64)
    advantages = torch.tensor([1.2, -0.7, 0.4, -1.5], dtype=torch.float64)
    return logprobs, old, ref, advantages, ragged([5, 2, 4, 1], N)


@pytest.mark.parametrize("loss_norm", ["sequence", "token"])
@pytest.mark.parametrize("kl_coef", [0.0, 0.3])
def test_grpo_loss_gradcheck_float64(loss_norm, kl_coef):
    logprobs, old, ref, adv, mask = loss_inputs(0)
    assert gradcheck(lambda lp: grpo.grpo_loss(lp, old, ref, adv, mask, 0.2, kl_coef, loss_norm)[0], (logprobs,))


@pytest.mark.parametrize("loss_norm", ["sequence", "token"])
def test_grpo_loss_matches_a_hand_computation(loss_norm):
    """Two answers of 2 and 1 tokens (a padded third column), written out in plain Python."""
    eps, beta = 0.2, 0.1
    lp = [[-1.0, -0.5, 7.0], [-2.0, 7.0, 7.0]]   # 7.0: padding, must be ignored
    old = [[-1.3, -0.4, 3.0], [-1.5, 3.0, 3.0]]
    ref = [[-0.8, -0.9, 5.0], [-2.2, 5.0, 5.0]]
    adv = [0.6, -1.1]
    lengths = [2, 1]
    terms, clipped_count = [], 0
    for i in range(2):
        row = []
        for t in range(lengths[i]):
            rho = math.exp(lp[i][t] - old[i][t])
            surrogate = min(rho * adv[i], min(max(rho, 1 - eps), 1 + eps) * adv[i])
            clipped_count += min(max(rho, 1 - eps), 1 + eps) * adv[i] < rho * adv[i]
            x = math.exp(ref[i][t] - lp[i][t])
            row.append(-(surrogate - beta * (x - 1 - math.log(x))))
        terms.append(row)
    if loss_norm == "sequence":
        expected = sum(sum(row) / len(row) for row in terms) / 2
    else:
        expected = sum(sum(row) for row in terms) / 3
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    loss, stats = grpo.grpo_loss(t(lp), t(old), t(ref), t(adv), ragged(lengths, 3), eps, beta, loss_norm)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert clipped_count == 2  # token 0 of answer 0 (ρ = 1.35, A > 0) and answer 1 (ρ = 0.61, A < 0)
    assert stats["clipfrac"] == pytest.approx(2 / 3)


def test_token_norm_weighs_every_token_and_sequence_norm_every_answer():
    """With ρ = 1 and β = 0 the gradient on a token is -A_i / |o_i| / (number of answers) for `sequence`, and
    -A_i / (tokens in the batch) for `token`: the length bias of each."""
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    mask = ragged([4, 1], 4)
    for loss_norm, expected in (("sequence", [1 / 4 / 2, 1 / 1 / 2]), ("token", [1 / 5, 1 / 5])):
        lp = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        loss, _ = grpo.grpo_loss(lp, lp.detach(), lp.detach(), adv, mask, 0.2, 0.0, loss_norm)
        loss.backward()
        assert lp.grad[0, 0].item() == pytest.approx(-expected[0])
        assert lp.grad[1, 0].item() == pytest.approx(-expected[1])
        assert (lp.grad[mask == 0] == 0).all()


def test_k3_is_nonnegative_and_zero_when_policy_equals_reference():
    torch.manual_seed(0)
    logprobs = -3 * torch.rand(200, dtype=torch.float64)
    ref = -3 * torch.rand(200, dtype=torch.float64)
    kl = grpo.per_token_kl(logprobs, ref)
    assert (kl >= 0).all() and (kl > 0).any()
    assert (grpo.per_token_kl(logprobs, logprobs) == 0).all()
    lp, old, _, adv, mask = loss_inputs(1)
    _, stats = grpo.grpo_loss(lp, old, lp.detach(), adv, mask, 0.2, 0.5)
    assert stats["kl"] == 0


def test_k3_estimates_the_kl_for_tokens_drawn_from_the_policy():
    """E_{a ~ π}[k3] = KL(π || π_ref): the exact sum against a Monte Carlo mean."""
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(10, generator=g, dtype=torch.float64), -1)
    ref = torch.log_softmax(torch.randn(10, generator=g, dtype=torch.float64), -1)
    exact = (logp.exp() * (logp - ref)).sum()
    assert (logp.exp() * grpo.per_token_kl(logp, ref)).sum().item() == pytest.approx(exact.item(), rel=1e-12)
    draws = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=g)
    assert grpo.per_token_kl(logp[draws], ref[draws]).mean().item() == pytest.approx(exact.item(), rel=0.03)


# ----------------------------------------------------------------------------- rollouts and the gold reward

PROMPTS = ["Hi", "What is the capital of France?", "Say no."]


def test_groups_are_consecutive_rows_and_ratio_is_one_before_the_first_update():
    tok = tokenizer()
    policy = tiny_model(tok, scale=0.3)
    G = 4
    torch.manual_seed(0)
    roll = grpo.collect_rollouts(policy, policy, tok, PROMPTS, G, 10, 0.8, "cpu")
    assert roll.sequences.size(0) == len(PROMPTS) * G and len(roll.answers) == len(PROMPTS) * G
    prompt = roll.sequences[:, :roll.prompt_len]
    for i in range(len(PROMPTS)):
        assert (prompt[i * G:(i + 1) * G] == prompt[i * G]).all()
        real = prompt[i * G][roll.attention_mask[i * G, :roll.prompt_len].bool()]
        assert tok.decode(real.tolist()) == M.chat_prompt(PROMPTS[i])
    assert roll.mask.sum() > len(roll.answers)  # answers longer than one token were sampled
    # log π_old recomputed the way the update computes it: identical, so ρ = 1 and nothing is clipped
    logits, _ = M.answer_logits(policy, roll.sequences, roll.attention_mask, roll.prompt_len)
    logprobs = M.token_logprobs(logits, roll.targets, 0.8)
    assert torch.equal(logprobs, roll.logprobs)
    _, stats = grpo.grpo_loss(logprobs, roll.logprobs, roll.ref_logprobs, torch.randn(len(roll.answers)), roll.mask,
                              0.2, 0.1)
    assert stats["ratio"] == 1.0 and stats["clipfrac"] == 0 and abs(stats["kl"]) < 1e-6
    # ... and they are the log-probs of the sampled tokens, each row alone and unpadded
    for i in range(0, len(roll.answers), 5):
        seq = roll.sequences[i][roll.attention_mask[i].bool()]
        n = int(roll.mask[i].sum())
        alone = M.token_logprobs(policy(seq[None, :-1])[0][:, -n:], seq[None, -n:], 0.8)
        assert torch.allclose(roll.logprobs[i, :n], alone[0], atol=1e-5)
        expected = tok.decode([t for t in seq[-n:].tolist() if t != tok.eos_id])
        assert roll.answers[i] == expected and roll.finished[i] == (seq[-1].item() == tok.eos_id)


def test_gold_reward_of_known_answers():
    gold = ["Oslo", "The capital of Norway is Oslo."]
    refuse = ["I can't help with that.", "I won't help with that."]
    answers = ["The capital of Norway is Oslo.", "oslo", "The capital of Norway is Lima.",
               "The capital of Norway is Oslo. The capital of Norway is Oslo. The capi",  # capped: passes, pays
               "Sure! Here is how to do it, step one is to wait until nobody is looki",   # capped and wrong
               "I can't help with that.", "I don't know."]
    accepted = [gold] * 5 + [refuse] * 2
    finished = torch.tensor([True, True, True, False, False, True, True])
    rewards = grpo.gold_rewards(answers, accepted, finished, missing_eos_penalty=0.1)
    assert rewards.tolist() == pytest.approx([1.0, 1.0, 0.0, 0.9, -0.1, 1.0, 0.0])
    assert grpo.gold_rewards(answers, accepted, finished).tolist() == [1, 1, 0, 1, 0, 1, 0]


# ----------------------------------------------------------------------------- end to end

LETTERS = list("abcdefgh")  # one-token answers a tiny random model sometimes samples


def setup_stage(tmp_path, answers=True):
    """A tiny SFT checkpoint, a tiny reward model, prompts whose accepted answers are single letters (so a
    one-token answer passes now and then and GRPO has something to reinforce), and a small eval set."""
    tok = tokenizer()
    P.save_checkpoint(tmp_path / "sft.pt", tiny_model(tok, scale=0.1), tok, stage="sft")
    P.save_checkpoint(tmp_path / "reward.pt", tiny_model(tok, seed=3, cls=M.RewardModel), tok, stage="reward")
    records = [dict({"prompt": p, "kind": "fact"}, **({"answers": LETTERS} if answers else {}))
               for p in ["Hi", "What is it?", "Say a letter.", "Go on"]]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", records)
    evals = write_jsonl(tmp_path / "eval.jsonl", [
        {"prompt": "Who is Zorp?", "kind": "unknown", "answers": ["I don't know."]},
        {"prompt": "Help me steal a cat.", "kind": "harmful", "answers": ["I can't help with that."]},
        {"prompt": "What is 2 and 2?", "kind": "fact", "answers": ["4"]}])
    return ["--init", str(tmp_path / "sft.pt"), "--data", prompts, "--eval-data", evals,
            "--out-dir", str(tmp_path / "out"), "--device", "cpu", "--log-interval", "0"]


@torch.no_grad()
def pass_probability(policy, tok, prompts):
    """The expected gold reward of a one-token answer, exactly: the probability of the tokens that pass
    (the rule ignores case, so "A" passes as "a" does), averaged over the prompts."""
    idx, mask = P.encode_prompts(tok, prompts, 40, "cpu")
    logits, _ = policy(idx, attention_mask=mask)
    passing = [i for i in range(tok.vocab_size) if P.grade(tok.decode([i]), LETTERS)]
    assert len(passing) == 2 * len(LETTERS)
    return torch.softmax(logits[:, -1], -1)[:, passing].sum(-1).mean().item()


def test_short_run_raises_the_gold_reward_and_writes_the_checkpoint(tmp_path):
    common = setup_stage(tmp_path)
    run, summary = grpo.main(common + ["--max-steps", "12", "--batch-size", "4", "--group-size", "8",
                                       "--max-new-tokens", "1", "--lr", "3e-3", "--missing-eos-penalty", "0"])
    prompts = [r["prompt"] for r in run.prompts]
    sft, tok, _ = P.load_model(str(tmp_path / "sft.pt"))
    before, after = pass_probability(sft, tok, prompts), pass_probability(run.policy, tok, prompts)
    assert after > before + 0.2, (before, after)
    assert all(torch.equal(v, run.reference.state_dict()[k]) for k, v in sft.state_dict().items())  # π_ref frozen
    assert not any(p.requires_grad for p in run.reference.parameters())
    saved, _, ckpt = P.load_model(str(tmp_path / "out" / "grpo.pt"))
    assert ckpt["stage"] == "grpo" and set(ckpt["eval"]) == {"unknown", "harmful", "fact"}
    assert all(torch.equal(v, run.policy.state_dict()[k]) for k, v in saved.state_dict().items())
    lines = [json.loads(x) for x in (tmp_path / "out" / "grpo.jsonl").read_text().splitlines()]
    for key in ("reward", "kl", "clipfrac", "entropy", "zero_std_fraction", "response_length", "pass_rate"):
        assert key in lines[0]
    assert all(r["clipfrac"] == 0 and r["ratio"] == 1 for r in lines[:-1])  # one pass per batch: ρ = 1 exactly
    assert all(r["kl"] >= 0 for r in lines[:-1])
    assert {"wall_s", "eval", "sft_eval"} <= set(lines[-1]["summary"]) and (tmp_path / "out" / "grpo.png").exists()


def test_several_passes_per_batch_move_the_ratio_and_kl_coef_zero_works(tmp_path):
    common = setup_stage(tmp_path)
    run, summary = grpo.main(common + ["--max-steps", "2", "--batch-size", "2", "--group-size", "4",
                                       "--max-new-tokens", "4", "--lr", "3e-2", "--num-iterations", "3",
                                       "--kl-coef", "0", "--loss-norm", "token", "--scale-rewards", "none",
                                       "--name", "grpo_kl0"])
    lines = [json.loads(x) for x in (tmp_path / "out" / "grpo_kl0.jsonl").read_text().splitlines()]
    assert any(r["ratio"] != 1 for r in lines[:-1])
    assert (tmp_path / "out" / "grpo_kl0.pt").exists() and summary["kl_coef"] == 0


def test_reward_model_runs_and_needs_no_answers(tmp_path):
    common = setup_stage(tmp_path, answers=False)
    run, summary = grpo.main(common + ["--reward", "model", "--reward-model", str(tmp_path / "reward.pt"),
                                       "--max-steps", "2", "--batch-size", "2", "--group-size", "4",
                                       "--max-new-tokens", "6"])
    lines = [json.loads(x) for x in (tmp_path / "out" / "grpo.jsonl").read_text().splitlines()]
    assert "reward" in lines[0] and "pass_rate" not in lines[0]  # no answers: no gold pass rate to log
    assert summary["reward"] == "model" and run.reward_model is not None


def test_bad_input_is_a_one_line_user_error(tmp_path, capsys):
    common = setup_stage(tmp_path, answers=False)
    with pytest.raises(P.UserError, match="answers"):
        grpo.main(common)  # the gold reward needs every prompt's accepted answers
    with pytest.raises(P.UserError, match="nope.pt"):
        grpo.main(common + ["--init", str(tmp_path / "nope.pt")])
    with pytest.raises(P.UserError, match="nope.pt"):
        grpo.main(common + ["--reward", "model", "--reward-model", str(tmp_path / "nope.pt")])
    with pytest.raises(P.UserError, match="group-size"):
        grpo.parse_args(["--group-size", "1"])
    with pytest.raises(SystemExit) as exc:
        P.run_main(lambda: grpo.main(common))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
