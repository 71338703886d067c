"""RLHF with PPO: the SFT model learns from the reward model's scores, on a KL leash.

This is InstructGPT's third stage. Reinforcement learning casts it as a loop between an *agent* and
its *environment*. The agent is the policy π_θ, a copy of the SFT model. The environment hands it a
*state*, a prompt from data/prompts.jsonl in the chat template. The agent's *action* is the answer it
samples token by token. The *reward* comes from the reward model that reward.py trained on human
preferences, standing in for the human judge. Sample, score, update, repeat.

A reward model is a learned proxy fitted to a few thousand comparisons, and an optimiser that
maximises it alone will find answers it over-rates: that is *reward hacking*. So every answer token also
pays a KL penalty to the frozen SFT model π_ref (the reference). The reward for the token a_t taken
in state s_t (prompt plus answer so far) is

    r_t = -β · (log π_θ(a_t|s_t) - log π_ref(a_t|s_t))  +  [t is the last answer token] · RM(prompt, answer)

Because the answer is sampled from π_θ, the penalty summed over the answer is β times a one-sample
estimate of KL(π_θ || π_ref) ≥ 0. `--kl-coef` sets β. `--target-kl` turns on the adaptive controller
of Ziegler et al. (2019), β ← β · (1 + clip(KL/target - 1, -0.2, 0.2) · B/horizon), which raises β when
the policy drifts past the target and lowers it when it stays close. The readings write the
objective as L_PPO + β·KL, with the term in the loss (grpo.py does that); we follow InstructGPT and
put it in the reward, so GAE credits it to the tokens that caused it. The default reward model
(reward.py, `--likelihood-weight` α = 3) has a score that is itself partly a sum over tokens,
α · (1/|y|) Σ_t log p_RM(a_t|s_t); that part is paid
the same way, α · log p_RM(a_t|s_t) / |y| on token t, and only the rest of the score at the end
(`per_token_rewards`). Paid at the end instead, it is a noise the critic cannot predict.

Credit assignment. A critic V(s_t) predicts the return from token t onward. Generalised advantage
estimation (GAE) blends its one-step errors:

    δ_t = r_t + γ V(s_{t+1}) - V(s_t)          (V = 0 after the last answer token)
    A_t = δ_t + γλ A_{t+1}                     returns R_t = A_t + V(s_t)

The advantages are whitened (zero mean, unit variance over the batch's answer tokens).

PPO reuses one batch of samples for several epochs of minibatch steps. The ratio to the policy that
sampled them, π_θ_old, is clipped, so no single batch moves the policy far:

    ρ_t = π_θ(a_t|s_t) / π_θ_old(a_t|s_t)
    L_policy = -E_t[min(ρ_t A_t, clip(ρ_t, 1-ε, 1+ε) A_t)]
    L_value  = ½ E_t[max((V - R)², (V_old + clip(V - V_old, -ε, ε) - R)²)]
    loss     = L_policy + c_V · L_value

Choices made here:
  * Critic = a value head, one Linear(n_embd → 1) on the *frozen reward model's* hidden states,
    initialised from its score head (InstructGPT also starts the value function from the reward
    model). The reward model's forward pass is already made to score each answer, so the critic
    costs one extra linear layer: no second transformer to train on a laptop CPU. It also starts
    with a sensible estimate and never pulls on the policy's weights. A value head on the policy's
    own hidden states, the other cheap option, starts at zero: until it has learned, the correct
    fact answers, which score below a refusal, get negative advantages and are unlearned.
  * An answer ends at <|eos|> or after `--max-new-tokens`. The reward model only ever saw answers
    closed by <|eos|> (model.build_example), so every answer is scored in that form: one that hit the
    length cap gets an <|eos|> appended for scoring and then loses `--missing-eos-penalty`. Without
    that rule, rambling until the cap would cost nothing.
  * Dropout stays off and log-probabilities are computed at the sampling temperature. Otherwise the
    recomputed π_θ_old is not the distribution the tokens came from, ρ ≠ 1 before the first step, and
    the KL estimate can go negative. A negative mean `kl` means a bug, and tests/test_ppo.py checks it.

Run it:   python ppo.py                              (out/sft.pt + out/reward.pt → out/ppo.pt)
          python ppo.py --kl-coef 0 --name ppo_kl0   (no leash: watch for reward hacking)
What to look for in out/ppo.png and the log: `score` (reward-model score of the samples) rises; `kl`
to the reference grows and then levels off; `clipfrac` and `approx_kl` stay small (the trust
region holds; a larger --lr makes the clip work); `explained_variance` climbs (the critic learns).
At the end a table compares the gold pass rate per kind with the SFT model's. RLHF should raise
`unknown` and `harmful` (honest "I don't know." and refusals are what the preference data rewards)
without costing `fact`; it can only do so as far as the reward model tells those answers apart.
docs/06-ppo.md has the measured rows for the default β and for β = 0 over the results' seeds.
"""

import argparse
import copy
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm import tqdm

from model import (RewardModel, answer_logits, configure_optimizer, entropy_from_logits, reward_scores, sample_answers,
                   set_lr, token_logprobs)
from plumbing import (CHAT_KINDS, MetricsLog, UserError, add_common_args, autocast, batches, encode_prompts, evaluate,
                      format_pass_rates, format_rl_summary, grad_scaler, load_model, load_policy, pick_device,
                      read_jsonl, require_positive, rl_summary, run_main, save_checkpoint, set_seed, show_changes)


# ----------------------------------------------------------------------------- the agent: actor and critic

class ActorCritic(nn.Module):
    """The agent. Actor: the policy, a Transformer. Critic: V(s_t) = w·h_t + b, a value head over the
    frozen reward model's hidden state h_t at s_t, starting as a copy of the reward model's score head.
    (A reward model's likelihood term, reward.py --likelihood-weight, is paid token by token instead:
    per_token_rewards.)"""

    def __init__(self, policy, reward_model):
        super().__init__()
        self.policy = policy
        self.value_head = copy.deepcopy(reward_model.score_head).float().requires_grad_(True)

    def values(self, features):
        return self.value_head(features.float()).squeeze(-1)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x, mask, eps=1e-8):
    """Zero mean, unit variance over the entries where mask is 1 (answer tokens); 0 elsewhere."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


# ----------------------------------------------------------------------------- rollouts (the environment step)

@torch.no_grad()
def score_answers(reward_model, sequences, attention_mask, finished, eos_id, pad_id, prompt_len):
    """Reward-model score of prompt + answer + <|eos|>, the form it was trained on: rows that did not
    finish get an <|eos|> appended in one extra column. Read at the last real token, as
    RewardModel.forward does; the same pass also yields the hidden states at the answer's states
    s_t (columns prompt_len-1 ..), the critic's features, and the score's likelihood term split over
    the answer tokens (zeros when the reward model has none; an appended <|eos|>'s share goes to the
    last token). Returns (scores (B,), features (B, N, C), likelihood_rewards (B, N))."""
    extra = torch.where(finished, pad_id, eos_id)[:, None]
    ids = torch.cat([sequences, extra], dim=1)
    mask = torch.cat([attention_mask, (~finished).long()[:, None]], dim=1)
    answer_mask = mask * (torch.arange(ids.size(1), device=ids.device) >= prompt_len)  # for α > 0
    scores, hidden, logps = reward_model(ids, attention_mask=mask, answer_mask=answer_mask, return_hidden=True)
    N = sequences.size(1) - prompt_len
    token_lp = logps[:, prompt_len - 1:prompt_len - 1 + N].float().clone()  # log p of answer token t
    last = (attention_mask[:, prompt_len:].sum(-1) - 1).clamp(min=0)
    token_lp[torch.arange(ids.size(0)), last] += logps[:, prompt_len - 1 + N].float()  # appended <|eos|>
    n = answer_mask[:, 1:].sum(-1).clamp(min=1)[:, None]
    likelihood_rewards = reward_model.likelihood_weight * token_lp / n
    return scores.float(), hidden[:, prompt_len - 1:-2].float(), likelihood_rewards


@dataclass
class Rollout:
    sequences: torch.Tensor       # (B, P + N) prompt (left-padded) + answer (pad after <|eos|>)
    attention_mask: torch.Tensor  # (B, P + N) 1 = real token
    prompt_len: int               # P
    targets: torch.Tensor         # (B, N) answer tokens, -100 where mask is 0
    mask: torch.Tensor            # (B, N) 1.0 on answer tokens (through the first <|eos|>)
    finished: torch.Tensor        # (B,) True where the answer produced <|eos|>
    logprobs: torch.Tensor        # (B, N) log π_θ_old(a_t|s_t) at the sampling temperature
    ref_logprobs: torch.Tensor    # (B, N) log π_ref(a_t|s_t), same temperature
    features: torch.Tensor        # (B, N, C) frozen reward-model hidden states at s_t (critic input)
    values: torch.Tensor          # (B, N) V_old(s_t)
    entropy: torch.Tensor         # (B, N) entropy of π_θ_old(·|s_t)
    scores: torch.Tensor          # (B,) reward-model score
    likelihood_rewards: torch.Tensor  # (B, N) the score's likelihood term, token by token (0 if α = 0)


@torch.no_grad()
def collect_rollout(agent, reference, reward_model, tokenizer, prompts, max_new_tokens, temperature,
                    device, dtype="float32"):
    """Sample one answer per prompt with the KV-cached sampler and record everything PPO needs."""
    agent.eval()  # dropout off: the recomputed log-probs must be those of the sampling distribution
    block = min(agent.policy.cfg.block_size, reward_model.cfg.block_size)
    idx, prompt_mask = encode_prompts(tokenizer, prompts, block - max_new_tokens - 1, device)
    with autocast(device, dtype):
        s = sample_answers(agent.policy, idx, prompt_mask, max_new_tokens, temperature, tokenizer.eos_id,
                           tokenizer.pad_id)
        logits, _ = answer_logits(agent.policy, s.sequences, s.attention_mask, s.prompt_len)
        ref_logits, _ = answer_logits(reference, s.sequences, s.attention_mask, s.prompt_len)
        scores, features, likelihood_rewards = score_answers(reward_model, s.sequences, s.attention_mask, s.finished,
                                                             tokenizer.eos_id, tokenizer.pad_id, s.prompt_len)
    return Rollout(s.sequences, s.attention_mask, s.prompt_len, s.targets, s.mask, s.finished,
                   token_logprobs(logits, s.targets, temperature), token_logprobs(ref_logits, s.targets, temperature),
                   features, agent.values(features) * s.mask, entropy_from_logits(logits, temperature) * s.mask, scores,
                   likelihood_rewards * s.mask)


# ----------------------------------------------------------------------------- rewards, KL and advantages

def kl_penalty(logprobs, ref_logprobs):
    """Per-token log π_θ(a|s) - log π_ref(a|s). With a ~ π_θ its sum over an answer is an unbiased
    estimate of KL(π_θ || π_ref) for that prompt: single samples may be negative, the mean is not."""
    return logprobs - ref_logprobs


def per_token_rewards(scores, kl, mask, kl_coef, likelihood_rewards=None):
    """r_t = -β·kl_t on every answer token, plus the sequence score on the last one. The likelihood
    term of a score (reward.py --likelihood-weight) is a sum over tokens, so, like the KL penalty, it
    is paid where it is earned: its token-t share on token t, the rest of the score on the last
    token. The rewards of an answer still add up to score − β·Σ_t kl_t."""
    rewards = -kl_coef * kl * mask
    if likelihood_rewards is not None:
        rewards = rewards + likelihood_rewards * mask
        scores = scores - (likelihood_rewards * mask).sum(-1)
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rewards[torch.arange(rewards.size(0)), last] += scores
    return rewards


def compute_gae(rewards, values, mask, gamma, lam):
    """Advantages and returns by GAE(γ, λ). rewards, values, mask: (B, N), answers left-aligned
    (mask 1 then 0). Beyond the last answer token the episode is over, so V there counts as 0."""
    B, N = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(N)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantages[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


class KLController:
    """β for the KL penalty: fixed, or adapted towards target_kl (Ziegler et al., 2019)."""

    def __init__(self, kl_coef, target_kl=None, horizon=500):
        self.value, self.target, self.horizon = kl_coef, target_kl, horizon

    def update(self, kl, n_samples):
        if self.target is None:
            return
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.value *= 1 + error * n_samples / self.horizon


# ----------------------------------------------------------------------------- the PPO losses

def ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps):
    """Clipped surrogate, negated for minimising: -mean over answer tokens of
    min(ρA, clip(ρ, 1-ε, 1+ε)A) with ρ = exp(logprobs - old_logprobs). Returns (loss, clip fraction)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -masked_mean(torch.min(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped < unclipped).float(), mask)  # tokens whose gradient the clip removed
    return loss, clipfrac


def ppo_value_loss(values, old_values, returns, mask, clip_eps):
    """½·mean of the larger of the plain and the clipped squared error: the critic, too, may move
    only ε from the values it had when the batch was collected."""
    clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def explained_variance(values, returns, mask):
    """1 - Var(R - V)/Var(R) over answer tokens: 1 = the critic predicts returns, ≤ 0 = no better than
    their mean."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    err = returns - values
    var_err = masked_mean((err - masked_mean(err, mask)) ** 2, mask)
    return (1 - var_err / var_returns.clamp(min=1e-8)).item()


def ppo_update(agent, optimizer, scaler, rollout, advantages, returns, args):
    """Several epochs of minibatch steps on one rollout; returns mean statistics."""
    agent.eval()  # still no dropout: ρ must be exactly 1 before the first step
    stats = {"clipfrac": [], "approx_kl": [], "value_loss": [], "policy_loss": []}
    B = rollout.sequences.size(0)
    for _ in range(args.ppo_epochs):
        for mb in torch.randperm(B).split(args.minibatch_size):
            with autocast(args.device, args.dtype):
                logits, _ = answer_logits(agent.policy, rollout.sequences[mb], rollout.attention_mask[mb],
                                          rollout.prompt_len)
            values = agent.values(rollout.features[mb])
            logprobs = token_logprobs(logits, rollout.targets[mb], args.temperature)
            mask = rollout.mask[mb]
            policy_loss, clipfrac = ppo_policy_loss(logprobs, rollout.logprobs[mb], advantages[mb], mask,
                                                    args.clip_eps)
            value_loss = ppo_value_loss(values, rollout.values[mb], returns[mb], mask, args.clip_value)
            loss = policy_loss + args.vf_coef * value_loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(agent.policy.parameters(), args.grad_clip)
            torch.nn.utils.clip_grad_norm_(agent.value_head.parameters(), args.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            with torch.no_grad():
                log_ratio = logprobs - rollout.logprobs[mb]
                # k3 estimator of KL(π_old || π_θ): (ρ - 1) - log ρ ≥ 0 for every token
                approx_kl = masked_mean(log_ratio.exp() - 1 - log_ratio, mask)
            for key, value in (("clipfrac", clipfrac), ("approx_kl", approx_kl), ("value_loss", value_loss),
                               ("policy_loss", policy_loss)):
                stats[key].append(value.item())
    return {k: sum(v) / len(v) for k, v in stats.items()}


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, data="data/prompts.jsonl", max_steps=160, batch_size=64, lr=2e-5,
                    warmup_steps=0, eval_interval=0, log_interval=5)
    a = p.add_argument
    a("--reward-model", default=None, help="reward checkpoint that scores answers (default: <out-dir>/reward.pt)")
    a("--eval-data", default="data/eval.jsonl", help="gold evaluation prompts (default: %(default)s)")
    a("--name", default="ppo", help="output file stem under --out-dir, e.g. ppo_kl0 (default: %(default)s)")
    a("--kl-coef", type=float, default=1.0,
      help="β of the per-token KL penalty to the SFT model; 0 = no leash (default: %(default)s)")
    a("--target-kl", type=float, default=None, help="adapt β so the answer KL approaches this (default: fixed β)")
    a("--kl-horizon", type=float, default=500, help="adaptive β changes by up to 20%% per this many samples; "
      "Ziegler et al. used 10000 for far longer runs (default: %(default)s)")
    a("--max-new-tokens", type=int, default=40, help="answer length cap in tokens (default: %(default)s)")
    a("--temperature", type=float, default=1.0,
      help="sampling temperature of rollouts, also used for every log-prob (default: %(default)s)")
    a("--missing-eos-penalty", type=float, default=1.0,
      help="subtracted from the score of an answer that hit the cap without <|eos|> (default: %(default)s)")
    a("--ppo-epochs", type=int, default=2, help="passes over each rollout batch (default: %(default)s)")
    a("--minibatch-size", type=int, default=32, help="answers per PPO gradient step (default: %(default)s)")
    a("--clip-eps", type=float, default=0.2, help="ε of the clipped ratio (default: %(default)s)")
    a("--clip-value", type=float, default=0.2, help="ε of the clipped value loss (default: %(default)s)")
    a("--vf-coef", type=float, default=0.1, help="weight c_V of the value loss (default: %(default)s)")
    a("--value-lr", type=float, default=1e-3, help="peak learning rate of the value head, which starts as a "
      "copy of the reward model's score head (default: %(default)s)")
    a("--gamma", type=float, default=1.0, help="discount γ (default: %(default)s)")
    a("--lam", type=float, default=0.95, help="GAE λ (default: %(default)s)")
    a("--grad-clip", type=float, default=1.0, help="max gradient norm (default: %(default)s)")
    p.epilog = "--init defaults to <out-dir>/sft.pt, the SFT model that is both the start and the reference."
    args = p.parse_args(argv)
    args.init = args.init or os.path.join(args.out_dir, "sft.pt")
    args.reward_model = args.reward_model or os.path.join(args.out_dir, "reward.pt")
    if args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature} — PPO needs a sampling temperature > 0")
    require_positive(args, "max_new_tokens", "batch_size", "minibatch_size")
    return args


# ----------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What the loop works with: the agent (policy + value head), the frozen reference and reward model."""
    args: argparse.Namespace
    agent: ActorCritic
    reference: torch.nn.Module
    reward_model: RewardModel
    tokenizer: object
    prompts: list
    eval_records: list
    log: MetricsLog


def setup(args):
    """π_θ and π_ref from the SFT checkpoint, the frozen reward model, the prompts."""
    device = args.device
    policy, tokenizer, _ = load_policy(args.init, device)
    reference, _, _ = load_model(args.init, device)  # a second, frozen copy: π_ref
    reference.requires_grad_(False)
    reward_model, rm_tokenizer, _ = load_model(args.reward_model, device, model_class=RewardModel)
    reward_model.requires_grad_(False)
    if rm_tokenizer.to_dict() != tokenizer.to_dict():
        raise UserError(f"{args.reward_model} and {args.init} use different tokenizers — "
                        "train the reward model from the same SFT checkpoint")
    if policy.cfg.block_size <= args.max_new_tokens + 8:
        raise UserError(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in "
                        f"block_size {policy.cfg.block_size} — lower it")
    prompts = [r["prompt"] for r in read_jsonl(args.data, required=("prompt",))]
    eval_records = read_jsonl(args.eval_data, required=("prompt", "kind", "answers"))
    agent = ActorCritic(policy, reward_model).to(device)
    if args.compile:
        agent.policy = torch.compile(agent.policy)
    print(f"{args.init} → policy + frozen reference ({policy.num_params() / 1e6:.2f}M params); "
          f"scores by {args.reward_model}; {len(prompts)} prompts; β={args.kl_coef}"
          + (f", adaptive to KL {args.target_kl}" if args.target_kl is not None else ""))
    log = MetricsLog(os.path.join(args.out_dir, args.name) + ".jsonl")
    return Run(args, agent, reference, reward_model, tokenizer, prompts, eval_records, log)


def make_optimizer(run):
    """No weight decay: it would pull the policy towards zero, not towards the SFT model. The value head
    must fit new targets (returns under the KL penalty) while the policy only adjusts, so the head gets
    its own, larger rate."""
    args = run.args
    optimizer = configure_optimizer(run.agent.policy, args.lr, weight_decay=0.0,
                                    fused=torch.device(args.device).type == "cuda")
    optimizer.add_param_group({"params": list(run.agent.value_head.parameters()), "weight_decay": 0.0,
                               "lr": args.value_lr, "peak_lr": args.value_lr})
    return optimizer


# ----------------------------------------------------------------------------- training

def train(run):
    """The loop: sample a batch of answers, score them, turn scores and KL into per-token rewards and
    advantages, then a few epochs of clipped PPO updates."""
    args, agent = run.args, run.agent
    optimizer, scaler = make_optimizer(run), grad_scaler(args.device, args.dtype)
    kl_ctl = KLController(args.kl_coef, args.target_kl, args.kl_horizon)
    stream = batches(run.prompts, args.batch_size, args.seed)
    bar = tqdm(range(1, args.max_steps + 1), desc=args.name)
    for step in bar:
        lr = set_lr(optimizer, step - 1, args.warmup_steps, args.max_steps, min_lr_ratio=1.0)  # constant once warm
        batch = next(stream)
        roll = collect_rollout(agent, run.reference, run.reward_model, run.tokenizer, batch, args.max_new_tokens,
                               args.temperature, args.device, args.dtype)
        kl = kl_penalty(roll.logprobs, roll.ref_logprobs) * roll.mask
        scores = roll.scores - args.missing_eos_penalty * (~roll.finished).float()
        rewards = per_token_rewards(scores, kl, roll.mask, kl_ctl.value, roll.likelihood_rewards)
        advantages, returns = compute_gae(rewards, roll.values, roll.mask, args.gamma, args.lam)
        advantages = whiten(advantages, roll.mask)
        stats = ppo_update(agent, optimizer, scaler, roll, advantages, returns, args)
        seq_kl = kl.sum(-1).mean().item()
        record = dict(step=step, score=roll.scores.mean().item(), kl=seq_kl,
                      entropy=masked_mean(roll.entropy, roll.mask).item(),
                      clipfrac=stats["clipfrac"], approx_kl=stats["approx_kl"], value_loss=stats["value_loss"],
                      explained_variance=explained_variance(roll.values, returns, roll.mask),
                      response_length=roll.mask.sum(-1).mean().item(),
                      eos_rate=roll.finished.float().mean().item(), reward=rewards.sum(-1).mean().item(),
                      kl_coef=kl_ctl.value, lr=lr)
        kl_ctl.update(seq_kl, len(batch))
        if args.eval_interval and step % args.eval_interval == 0:
            rates, _ = evaluate(agent.policy, run.tokenizer, run.eval_records, args.device,
                                kinds=("fact", "unknown", "harmful"))
            record.update({f"gold_{k}": v for k, v in rates.items()})
        run.log.log(**record)
        bar.set_postfix(score=f"{record['score']:.3f}", kl=f"{seq_kl:.2f}")
        if args.log_interval and (step % args.log_interval == 0 or step == args.max_steps):
            tqdm.write(f"step {step:4d} | score {record['score']:+.3f} | kl {seq_kl:6.3f} | "
                       f"entropy {record['entropy']:.3f} | clipfrac {stats['clipfrac']:.3f} | "
                       f"approx_kl {stats['approx_kl']:.4f} | value_loss {stats['value_loss']:.4f} | "
                       f"expl_var {record['explained_variance']:+.2f} | len {record['response_length']:.1f}")
    return kl_ctl.value


# ----------------------------------------------------------------------------- the verdict

def mean_score(reward_model, tokenizer, records):
    """Mean reward-model score of evaluate()'s greedy answers (chat kinds), in the trained form."""
    records = [r for r in records if r["kind"] != "cloze"]
    if not records:
        return float("nan")
    scores = reward_scores(reward_model, tokenizer, [r["prompt"] for r in records], [r["output"] for r in records])
    return sum(scores) / len(scores)


def report(run, kl_coef, train_time, started):
    """The human judge's verdict: gold pass rates, SFT (the reference) next to PPO; the checkpoint."""
    args, tok = run.args, run.tokenizer
    sft_rates, sft_records = evaluate(run.reference, tok, run.eval_records, args.device, kinds=CHAT_KINDS)
    ppo_rates, ppo_records = evaluate(run.agent.policy, tok, run.eval_records, args.device, kinds=CHAT_KINDS)
    sft_score = mean_score(run.reward_model, tok, sft_records)
    ppo_score = mean_score(run.reward_model, tok, ppo_records)
    print(format_pass_rates({"sft": sft_rates, args.name: ppo_rates}))
    print(f"mean reward-model score of greedy eval answers: sft {sft_score:+.3f} → {args.name} {ppo_score:+.3f}")
    show_changes(sft_records, ppo_records, args.name)
    summary = dict(rl_summary(run.log.records, "score", run.eval_records, ppo_rates, sft_rates),
                   kl_coef=kl_coef, eval=ppo_rates, sft_eval=sft_rates, rm_score=ppo_score, sft_rm_score=sft_score,
                   steps=args.max_steps, train_seconds=round(train_time, 1), wall_s=round(time.time() - started, 1))
    out = os.path.join(args.out_dir, args.name)
    save_checkpoint(out + ".pt", run.agent.policy, tok, stage="ppo", step=args.max_steps,
                    value_head=run.agent.value_head.state_dict(), eval=ppo_rates, sft_eval=sft_rates,
                    rm_score=ppo_score, sft_rm_score=sft_score, kl_coef=kl_coef,
                    init=args.init, reward_model=args.reward_model)
    run.log.summary(**summary)
    run.log.plot(out + ".png", ["score", "kl", "entropy", "clipfrac", "approx_kl", "value_loss",
                                "explained_variance", "response_length"],
                 title=f"{args.name}: PPO with β={args.kl_coef}")
    print(format_rl_summary(summary, "score", sft_rates, ppo_rates, out + ".pt"))
    return summary


def main(argv=None):
    started = time.time()
    args = parse_args(argv)
    set_seed(args.seed)
    args.device = pick_device(args.device)
    run = setup(args)
    kl_coef = train(run)
    summary = report(run, kl_coef, time.time() - started, started)
    return run, summary


if __name__ == "__main__":
    run_main(main)
