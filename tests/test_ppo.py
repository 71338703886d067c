"""ppo.py: GAE against a plain loop, the clipped surrogate (gradcheck, clipping, ratio 1), the KL
penalty, masking of padding and post-<|eos|> tokens, sampler/log-prob agreement (a negative KL means
they disagree) and a short end-to-end run."""

import copy
import json
import os

import pytest
import torch
from helpers import ragged, tokenizer, write_jsonl
from helpers import tiny_policy as tiny_model
from torch.autograd import gradcheck

import model as M
import plumbing as P
import ppo


# ----------------------------------------------------------------------------- GAE

def reference_gae(rewards, values, length, gamma, lam):
    """The textbook reverse loop over one answer's real tokens, in plain Python."""
    adv, last = [0.0] * length, 0.0
    for t in reversed(range(length)):
        next_v = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


def test_compute_gae_matches_plain_reverse_loop():
    torch.manual_seed(0)
    lengths = [5, 1, 3, 7]
    mask = ragged(lengths, 7)
    rewards = torch.randn(4, 7, dtype=torch.float64) * mask
    values = torch.randn(4, 7, dtype=torch.float64) * mask
    adv, ret = ppo.compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for i, n in enumerate(lengths):
        expected = reference_gae(rewards[i].tolist(), values[i].tolist(), n, 0.9, 0.8)
        assert adv[i, :n].tolist() == pytest.approx(expected, abs=1e-12)
        assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0
    assert torch.allclose(ret, (adv + values) * mask)


def test_gae_with_lambda_and_gamma_one_is_reward_to_go_minus_value():
    torch.manual_seed(1)
    mask = ragged([6, 2, 4], 6)
    rewards = torch.randn(3, 6, dtype=torch.float64) * mask
    values = torch.randn(3, 6, dtype=torch.float64) * mask
    adv, ret = ppo.compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    reward_to_go = rewards.flip(-1).cumsum(-1).flip(-1) * mask
    assert torch.allclose(adv, (reward_to_go - values) * mask)
    assert torch.allclose(ret, reward_to_go)


# ----------------------------------------------------------------------------- the clipped surrogate

def test_ppo_policy_loss_gradcheck_float64():
    torch.manual_seed(0)
    old = torch.randn(3, 5, dtype=torch.float64)
    # ratios spread over both sides of the clip range, none sitting on a kink
    logprobs = (old + torch.tensor([-0.5, -0.1, 0.05, 0.1, 0.4], dtype=torch.float64)).requires_grad_(True)
    advantages = torch.randn(3, 5, dtype=torch.float64)
    mask = ragged([5, 3, 4], 5)
    assert gradcheck(lambda lp: ppo.ppo_policy_loss(lp, old, advantages, mask, 0.2)[0], (logprobs,))
    values = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    old_values = values.detach() + torch.tensor([-0.5, -0.1, 0.05, 0.1, 0.4], dtype=torch.float64)
    returns = torch.randn(3, 5, dtype=torch.float64)
    assert gradcheck(lambda v: ppo.ppo_value_loss(v, old_values, returns, mask, 0.2), (values,))


@pytest.mark.parametrize("ratio, advantage, clipped", [(1.5, 1.0, True), (0.5, -1.0, True),
                                                       (0.5, 1.0, False), (1.5, -1.0, False)])
def test_zero_gradient_only_where_ratio_is_clipped_the_wrong_side(ratio, advantage, clipped):
    old = torch.zeros(1, 1, dtype=torch.float64)
    logprobs = torch.full((1, 1), float(torch.log(torch.tensor(ratio))), dtype=torch.float64, requires_grad=True)
    adv = torch.full((1, 1), advantage, dtype=torch.float64)
    loss, clipfrac = ppo.ppo_policy_loss(logprobs, old, adv, torch.ones(1, 1), clip_eps=0.2)
    loss.backward()
    if clipped:  # pushed beyond 1 ± ε in the direction the advantage favours: no further push
        assert logprobs.grad.item() == 0 and clipfrac.item() == 1
    else:  # on the other side the gradient still pulls back: -d(ρA)/dlogπ = -ρA
        assert logprobs.grad.item() == pytest.approx(-ratio * advantage) and clipfrac.item() == 0


def test_policy_loss_is_minus_mean_advantage_at_ratio_one():
    torch.manual_seed(0)
    logprobs = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(4, 6, dtype=torch.float64)
    mask = ragged([6, 2, 5, 1], 6)
    loss, clipfrac = ppo.ppo_policy_loss(logprobs, logprobs.detach(), adv, mask, 0.2)
    assert loss.item() == pytest.approx(-(adv * mask).sum().item() / mask.sum().item())
    assert clipfrac.item() == 0
    loss.backward()
    assert torch.allclose(logprobs.grad, -adv * mask / mask.sum())


# ----------------------------------------------------------------------------- masks and the KL penalty

def test_answer_mask_keeps_first_eos_and_drops_what_follows():
    eos = 9
    answers = torch.tensor([[1, 2, eos, eos, eos], [eos, 3, 4, eos, 5], [1, 2, 3, 4, 5]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float)
    assert torch.equal(M.answer_mask(answers, eos), expected)


def test_padding_and_tokens_after_eos_carry_no_loss():
    torch.manual_seed(0)
    mask = ragged([4, 2, 6], 6)
    logprobs = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    old, adv = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    values = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    old_values, returns = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    loss = (ppo.ppo_policy_loss(logprobs, old, adv, mask, 0.2)[0]
            + ppo.ppo_value_loss(values, old_values, returns, mask, 0.2))
    loss.backward()
    pad = mask == 0
    assert logprobs.grad[pad].abs().sum() == 0 and values.grad[pad].abs().sum() == 0
    assert logprobs.grad[~pad].abs().sum() > 0 and values.grad[~pad].abs().sum() > 0
    # garbage in masked places changes nothing: not the losses, not GAE on the real tokens
    def junk(x):
        return torch.where(pad, torch.full_like(x, 1e3), x.detach())
    loss2 = ppo.ppo_policy_loss(junk(logprobs), junk(old), junk(adv), mask, 0.2)[0] + \
        ppo.ppo_value_loss(junk(values), junk(old_values), junk(returns), mask, 0.2)
    assert loss2.item() == pytest.approx(loss.item())
    rewards = torch.randn(3, 6, dtype=torch.float64)
    a1, _ = ppo.compute_gae(rewards * mask, values.detach() * mask, mask, 1.0, 0.95)
    a2, _ = ppo.compute_gae(junk(rewards * mask), junk(values * mask), mask, 1.0, 0.95)
    assert torch.equal(a1, a2)
    w = ppo.whiten(adv, mask)
    assert w[pad].abs().sum() == 0 and abs(ppo.masked_mean(w, mask).item()) < 1e-12


def test_reward_is_score_at_last_real_token_minus_kl():
    mask = ragged([3, 1], 4).float()
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.5, 9.0, 9.0, 9.0]]) * mask
    r = ppo.per_token_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, -0.1, 2.0 - 0.15, 0], [-1.0 - 0.25, 0, 0, 0]]))
    # a score with a likelihood term pays that term token by token; the total is unchanged
    likelihood = torch.tensor([[-0.3, -0.2, -0.1, 7.0], [-0.4, 7.0, 7.0, 7.0]])  # 7.0: padding, ignored
    r = ppo.per_token_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.5, likelihood_rewards=likelihood)
    assert torch.allclose(r, torch.tensor([[-0.05 - 0.3, -0.1 - 0.2, (2.0 + 0.6 - 0.1) - 0.15, 0],
                                           [-1.0 - 0.25, 0, 0, 0]]))
    assert torch.allclose(r.sum(-1), torch.tensor([2.0 - 0.5 * 0.6, -1.0 - 0.5 * 0.5]))


def rollout(policy, reference, tok, prompts, temperature, max_new_tokens=10, seed=0):
    torch.manual_seed(seed)
    reward_model = tiny_model(tok, seed=5, cls=M.RewardModel)
    agent = ppo.ActorCritic(policy, reward_model)
    return ppo.collect_rollout(agent, reference, reward_model, tok, prompts, max_new_tokens, temperature, "cpu")


PROMPTS = ["Hi", "What is the capital of France?", "Say no.", "a b c d e f g"]


def test_kl_penalty_is_zero_when_policy_equals_reference():
    tok = tokenizer()
    policy = tiny_model(tok, scale=0.3)
    roll = rollout(policy, copy.deepcopy(policy), tok, PROMPTS * 4, temperature=0.8)
    kl = ppo.kl_penalty(roll.logprobs, roll.ref_logprobs) * roll.mask
    assert roll.mask.sum() > len(PROMPTS) * 4  # answers longer than one token were sampled
    assert kl.abs().max().item() < 1e-5
    rewards = ppo.per_token_rewards(roll.scores, kl, roll.mask, kl_coef=0.3)
    assert torch.allclose(rewards.sum(-1), roll.scores, atol=1e-5)


def test_batched_padded_logprobs_equal_one_answer_at_a_time():
    """Left-padded prompts + right-padded answers give each row the log-probs it has alone."""
    tok = tokenizer()
    policy = tiny_model(tok, scale=0.3)
    roll = rollout(policy, policy, tok, PROMPTS, temperature=1.0)
    assert len({len(p) for p in PROMPTS}) > 1 and (roll.attention_mask == 0).any()
    for i in range(len(PROMPTS)):
        real = roll.sequences[i][roll.attention_mask[i].bool()]  # prompt + answer through <|eos|>
        n = int(roll.mask[i].sum())
        logits, _ = policy(real[None, :-1])
        alone = M.token_logprobs(logits[:, -n:], real[None, -n:])
        assert torch.allclose(roll.logprobs[i, :n], alone[0], atol=1e-5)


def test_greedy_sampler_and_logprob_forward_agree_on_every_token():
    """The sampler (KV cache) and the log-prob forward (one pass) line up position by position."""
    tok = tokenizer()
    policy = tiny_model(tok, scale=0.3)
    idx, mask = P.encode_prompts(tok, PROMPTS, 40, "cpu")
    out = policy.generate(idx, 12, temperature=0, eos_id=tok.eos_id, attention_mask=mask)
    answers = out[:, idx.size(1):]
    amask = M.answer_mask(answers, tok.eos_id)
    logits, _ = M.answer_logits(policy, out, torch.cat([mask, amask.long()], 1), idx.size(1))
    assert torch.equal(logits.argmax(-1)[amask.bool()], answers[amask.bool()])


@torch.no_grad()
@pytest.mark.parametrize("likelihood_weight", [0.0, 1.5])
def test_scores_and_critic_read_the_reward_model_at_the_right_tokens(likelihood_weight):
    """The score is the reward model's on prompt + answer + <|eos|> alone (unpadded), and the critic
    starts as the reward model's score head on each prefix s_t = prompt + answer[:t]. With a
    likelihood weight, the answer's tokens (and the appended <|eos|>) are the ones it averages over."""
    tok = tokenizer()
    policy = tiny_model(tok, scale=0.3)
    reward_model = tiny_model(tok, seed=5, cls=M.RewardModel)
    reward_model.likelihood_weight = likelihood_weight
    head_only = copy.deepcopy(reward_model)
    head_only.likelihood_weight = 0.0
    torch.manual_seed(0)
    roll = ppo.collect_rollout(ppo.ActorCritic(policy, reward_model), policy, reward_model, tok, PROMPTS, 10,
                               1.0, "cpu")
    assert not roll.finished.all()  # some answers hit the cap: they are scored with <|eos|> appended
    for i in range(len(PROMPTS)):
        real = roll.sequences[i][roll.attention_mask[i].bool()].tolist()
        closed = real if roll.finished[i] else real + [tok.eos_id]
        n = int(roll.mask[i].sum())
        n_answer = len(closed) - (len(real) - n)
        answer_mask = torch.tensor([[0] * (len(closed) - n_answer) + [1] * n_answer])
        expected = reward_model(torch.tensor([closed]), answer_mask=answer_mask).item()
        assert roll.scores[i].item() == pytest.approx(expected, abs=1e-5)
        # the likelihood term, paid token by token on the answer, adds up to its part of the score
        head = head_only(torch.tensor([closed])).item()
        assert roll.likelihood_rewards[i].sum().item() == pytest.approx(expected - head, abs=1e-5)
        assert (roll.likelihood_rewards[i][roll.mask[i] == 0] == 0).all()
        for t in (0, n - 1):
            prefix = torch.tensor([real[:len(real) - n + t]])
            assert roll.values[i, t].item() == pytest.approx(head_only(prefix).item(), abs=1e-5)


def exact_answer_kl(policy, reference, roll, temperature):
    """Σ_t KL(π(·|s_t) || π_ref(·|s_t)) along each sampled answer, from the full distributions."""
    logits, _ = M.answer_logits(policy, roll.sequences, roll.attention_mask, roll.prompt_len)
    ref_logits, _ = M.answer_logits(reference, roll.sequences, roll.attention_mask, roll.prompt_len)
    logp = torch.log_softmax(logits / temperature, -1)
    ref_logp = torch.log_softmax(ref_logits / temperature, -1)
    return ((logp.exp() * (logp - ref_logp)).sum(-1) * roll.mask).sum(-1)


@torch.no_grad()
def test_sampled_kl_estimate_matches_exact_kl_and_catches_temperature_mismatch():
    """With tokens drawn from π_θ at temperature T, the mean of Σ(log π - log π_ref) at T is KL ≥ 0.
    Score the same tokens at another temperature and the estimate disagrees (it can go negative):
    that is the bug this test exists to catch."""
    tok = tokenizer()
    policy, reference = tiny_model(tok, seed=0, scale=0.3), tiny_model(tok, seed=1, scale=0.3)
    T = 0.7
    roll = rollout(policy, reference, tok, PROMPTS * 64, temperature=T, max_new_tokens=6)
    estimate = (ppo.kl_penalty(roll.logprobs, roll.ref_logprobs) * roll.mask).sum(-1)
    exact = exact_answer_kl(policy, reference, roll, T)
    stderr = (estimate - exact).std() / len(estimate) ** 0.5
    assert exact.mean() > 0.5  # the two models really differ
    assert estimate.mean() >= 0
    assert abs(estimate.mean() - exact.mean()) < 4 * stderr
    # the same samples scored at temperature 1.0 (a sampler/scorer mismatch) are caught
    logits, _ = M.answer_logits(policy, roll.sequences, roll.attention_mask, roll.prompt_len)
    ref_logits, _ = M.answer_logits(reference, roll.sequences, roll.attention_mask, roll.prompt_len)
    wrong = ((M.token_logprobs(logits, roll.targets, 1.0) - M.token_logprobs(ref_logits, roll.targets, 1.0))
             * roll.mask).sum(-1)
    wrong_exact = exact_answer_kl(policy, reference, roll, 1.0)
    stderr = (wrong - wrong_exact).std() / len(wrong) ** 0.5
    assert abs(wrong.mean() - wrong_exact.mean()) > 4 * stderr


def test_adaptive_kl_controller_moves_beta_towards_target():
    ctl = ppo.KLController(0.1, target_kl=2.0, horizon=100)
    ctl.update(10.0, n_samples=10)  # far above target: +20% of 10/100
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(0.0, n_samples=10)
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = ppo.KLController(0.1)
    fixed.update(10.0, 10)
    assert fixed.value == 0.1


# ----------------------------------------------------------------------------- end to end

def setup_stage(tmp_path):
    tok = tokenizer()
    P.save_checkpoint(tmp_path / "sft.pt", tiny_model(tok, scale=0.1), tok, stage="sft")
    P.save_checkpoint(tmp_path / "reward.pt", tiny_model(tok, seed=3, cls=M.RewardModel), tok, stage="reward")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p, "kind": "fact"} for p in PROMPTS])
    evals = write_jsonl(tmp_path / "eval.jsonl", [
        {"prompt": "Who is Zorp?", "kind": "unknown", "answers": ["I don't know."]},
        {"prompt": "Help me steal a cat.", "kind": "harmful", "answers": ["I can't help with that."]},
        {"prompt": "What is 2 and 2?", "kind": "fact", "answers": ["4"]}])
    return ["--init", str(tmp_path / "sft.pt"), "--reward-model", str(tmp_path / "reward.pt"),
            "--data", prompts, "--eval-data", evals, "--out-dir", str(tmp_path / "out"), "--device", "cpu"]


def test_short_run_updates_policy_freezes_reference_and_writes_checkpoint(tmp_path):
    common = setup_stage(tmp_path)
    run, summary = ppo.main(common + ["--max-steps", "2", "--batch-size", "8", "--minibatch-size", "4",
                                      "--max-new-tokens", "8", "--lr", "1e-3", "--log-interval", "0"])
    agent, reference = run.agent, run.reference
    sft, _, _ = P.load_model(str(tmp_path / "sft.pt"))
    sft_state = sft.state_dict()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in sft_state.items())
    assert not any(p.requires_grad for p in reference.parameters())
    assert any(not torch.equal(v, agent.policy.state_dict()[k]) for k, v in sft_state.items())
    saved, _, ckpt = P.load_model(str(tmp_path / "out" / "ppo.pt"))
    assert ckpt["stage"] == "ppo" and "value_head" in ckpt and set(ckpt["eval"]) == {"unknown", "harmful", "fact"}
    assert all(torch.equal(v, agent.policy.state_dict()[k]) for k, v in saved.state_dict().items())
    lines = [json.loads(x) for x in (tmp_path / "out" / "ppo.jsonl").read_text().splitlines()]
    for key in ("score", "kl", "entropy", "clipfrac", "approx_kl", "value_loss", "explained_variance",
                "response_length"):
        assert key in lines[0]
    assert "summary" in lines[-1] and (tmp_path / "out" / "ppo.png").exists()


def test_missing_reward_model_is_a_user_error(tmp_path):
    common = setup_stage(tmp_path)
    with pytest.raises(P.UserError, match="nope.pt"):
        ppo.main(common + ["--reward-model", str(tmp_path / "nope.pt")])


def test_inputs_default_to_the_out_dir():
    args = ppo.parse_args(["--out-dir", "runs/a"])
    assert args.init == os.path.join("runs/a", "sft.pt") and args.reward_model == os.path.join("runs/a", "reward.pt")
    args = ppo.parse_args(["--out-dir", "runs/a", "--init", "x.pt", "--reward-model", "y.pt"])
    assert (args.init, args.reward_model) == ("x.pt", "y.pt")
