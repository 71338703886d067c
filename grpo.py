"""GRPO: reinforcement learning from a verifiable reward, with group-relative advantages.

Group Relative Policy Optimization comes from DeepSeekMath (Shao et al., 2024); DeepSeek-R1 (2025)
trained with it on rewards that a rule computes, not a model: is the final answer right, is the
format right. That is reinforcement learning from verifiable rewards (RLVR). Where an answer can be
checked, there is no learned reward model to over-rate anything, so nothing to hack but the checker.
Here the checker is the gold grading rule of data/README.md, the stand-in for the human judge that
grades every stage, applied to the training prompts of data/prompts.jsonl, which carry their
accepted answers. The evaluation prompts (data/eval.jsonl) are others that training never sees.

The loop. Each step takes B prompts q and samples a *group* of G answers o_1 .. o_G for each, from
the policy as it is now, π_θ_old. Every answer gets one reward, and its advantage is how much better
it did than its own group:

    r_i = 1 if o_i passes the gold rule, else 0;  minus p if o_i hit the length cap without <|eos|>
    A_i = (r_i − mean(r_1 .. r_G)) / (std(r_1 .. r_G) + ε)             the same for every token of o_i

The group's mean reward is the baseline that PPO's critic provides in ppo.py: no value network, no
GAE, and every token of an answer shares its advantage. An answer that beats its siblings is made
more likely, one that trails them less likely. A group whose G answers all score the same (all
right, or all wrong) has A_i = 0 for every answer and teaches nothing; `zero_std_fraction` counts
such groups. The objective (DeepSeekMath, eq. 3) is maximised:

    ρ_i,t = π_θ(o_i,t | q, o_i,<t) / π_θ_old(o_i,t | q, o_i,<t)
    J = (1/G) Σ_i (1/|o_i|) Σ_t [ min(ρ_i,t A_i, clip(ρ_i,t, 1−ε, 1+ε) A_i) − β D_i,t ]
    D_i,t = ρ_ref − 1 − log ρ_ref ≥ 0,   ρ_ref = π_ref(o_i,t | q, o_i,<t) / π_θ(o_i,t | q, o_i,<t)

and the loss is −J, averaged over the B prompts (`grpo_loss`). π_ref is the frozen SFT model.

The KL term. PPO (ppo.py, InstructGPT) pays β·(log π_θ − log π_ref) in the *reward*, token by
token; GRPO puts β·D in the *loss*, next to the surrogate, so the advantages stay pure reward. D is
Schulman's k3 estimator: for a token drawn from π_θ its expectation is KL(π_θ || π_ref) at that
state, and unlike k1 = log π_θ − log π_ref it is never negative (x − 1 − log x ≥ 0), which lowers
its variance. One subtlety: differentiated as a loss, with the sampled tokens held fixed, its
gradient E[(1 − ρ_ref) ∇log π_θ] is the gradient of the other direction, KL(π_ref || π_θ), at the
visited states. Both vanish only at π_θ = π_ref, so either way it pulls back to the reference.
`--kl-coef` sets β: DeepSeekMath used 0.04; DAPO and Dr. GRPO drop the term (β = 0) for long
reasoning, where the policy is meant to move far. The default here is larger, measured on the
default models rather than taken from the papers: with a weaker leash the tiny model's "I don't
know." spreads to facts it knew. β = 0 works too (the KL is still logged).

The clip, and how often a batch is reused. `--num-iterations` μ is the number of optimizer steps
taken on each batch of samples, each on the whole batch. With μ = 1 (the default here, as in TRL)
the only step sees π_θ = π_θ_old: ρ = 1 exactly, the clip never binds (`clipfrac` is 0), and the
gradient is REINFORCE with the group mean as baseline, (1/G) Σ_i A_i (1/|o_i|) Σ_t ∇log π_θ(o_i,t),
plus the KL's. With μ ≥ 2 the later steps are off-policy, ρ moves away from 1 and the clip caps how
far one batch can move the policy (`clipfrac` > 0 counts the tokens where it binds).

Token averaging and the length bias it brings (`--loss-norm`):
  * `sequence` (the GRPO paper): the mean over each answer's tokens, then over answers. Every answer
    weighs the same in total, so one token of a short answer weighs more than one of a long answer.
    Dr. GRPO (Liu et al., 2025) points at the bias this brings: a right answer (A > 0) is reinforced
    harder per token the shorter it is, and a wrong one (A < 0) is punished less per token the
    longer it is, so wrong answers are free to grow long.
  * `token` (DAPO, Yu et al., 2025; Dr. GRPO): one mean over every answer token of the batch. Each
    token weighs the same, so a long answer weighs more in total and its length no longer dilutes
    its signal. What is left is a milder bias: the divisor, the batch's token count, changes from
    batch to batch (Dr. GRPO divides by a constant, the length cap, instead).
Our answers are one short sentence each, so the two differ far less than on chains of reasoning; a
rambling answer that hits the cap is where they part.

Scaling by the group's standard deviation (`--scale-rewards`): with `group` (the paper) every group
that is not unanimous gets advantages of the same overall size, Σ_i A_i² = G − 1 whatever the split,
so a prompt the policy has nearly settled (7 of 8 right, or 1 of 8) weighs as much as one split 4 to
4, and a rare success gets a large advantage. `none` (Dr. GRPO) keeps A_i = r_i − mean(r): advantages
in reward units, so nearly settled prompts count less (Dr. GRPO calls the scaling a difficulty bias).

What differs from the textbook:
  * The reward is the gold rule the evaluation uses, on other prompts; that is the RLVR setting
    (DeepSeek-R1 checks math answers against the known solution). `--reward model` scores the same
    samples with reward.py's reward model instead, on prompt + answer + <|eos|> (the form it was
    trained on, as ppo.py's score_answers does), so the algorithm (GRPO against PPO) and the reward
    (gold rule against a learned model) can be compared one at a time.
  * An answer that hits `--max-new-tokens` without <|eos|> loses `--missing-eos-penalty` p, a small
    format reward like DeepSeek-R1's: without it rambling to the cap would cost nothing, since the
    rule grades the first sentence only.
  * Each of the μ steps uses the whole batch (no minibatches), so μ = 1 is exactly on-policy. The
    group's std has Bessel's correction and ε = 1e-4, as in TRL.
  * A unanimous group is kept: its advantages are 0 and it still pays the KL. DAPO's "dynamic
    sampling" would sample new prompts until every group in the batch has a spread.
  * No entropy bonus; dropout stays off and every log-probability is taken at the sampling
    temperature, as in ppo.py, so that ρ = 1 before the first step and the KL estimates are right.

The limit to know: GRPO can only reinforce what the policy already samples. A prompt whose G answers
all fail has zero advantage, so a behaviour the SFT model almost never produces (an honest "I don't
know." for a made-up name: watch `reward_unknown`) is not learned from a 0/1 reward: RL from a
verifiable reward turns pass@G into pass@1, and pass@G is the ceiling. The levers are exploration:
a larger `--group-size` (more tries per prompt) and a higher `--temperature` (rarer answers, and
more junk). A graded reward (`--reward model`) also tells a better wrong answer from a worse one,
so it can lead towards an answer a step at a time where a 0/1 reward only says "found it". And
once found, a rare answer can be learned too broadly: a tiny model that learns "I don't know." for
invented names starts saying it to real questions, which the KL term and the fact prompts' own
rewards pull back.

Run it:   python grpo.py                                     (out/sft.pt → out/grpo.pt, gold reward)
          python grpo.py --kl-coef 0 --name grpo_kl0         (no leash to the SFT model)
          python grpo.py --reward model --name grpo_rm       (PPO's reward model, GRPO's algorithm)
          python grpo.py --scale-rewards none --loss-norm token --name grpo_dr      (Dr. GRPO)
          python grpo.py --group-size 16 --batch-size 4 --temperature 1.5 --kl-coef 0.3 --name grpo_explore
                                                             (explore harder: same samples per step)
What to look for in out/grpo.png and the log: `reward` (with the gold reward, the pass rate of the
sampled answers less the small penalty; `pass_rate` is the gold pass rate whatever the reward) and
`reward_<kind>` per kind of prompt: `reward_harmful` climbs, `reward_unknown` moves only if "I don't
know." gets sampled. `zero_std_fraction` is the share of groups with nothing to learn from (all
solved, or all out of reach); `kl` grows and levels off; `entropy` falls; `clipfrac` stays 0 at μ = 1.
At the end, the gold pass rate per kind on data/eval.jsonl: SFT, PPO and DPO when out/ppo.pt and
out/dpo.pt exist, and GRPO; `fact` and `heldout_fact` should stay where SFT left them. Then the
answers whose verdict changed, side by side.
"""

import argparse
import os
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from model import (RewardModel, answer_logits, configure_optimizer, entropy_from_logits, optimizer_step,
                   reward_scores, sample_answers, set_lr, token_logprobs)
from plumbing import (CHAT_KINDS, MetricsLog, UserError, add_common_args, autocast, batches, encode_prompts, evaluate,
                      format_pass_rates, format_rl_summary, grad_scaler, grade, load_checkpoint, load_model,
                      load_policy, pick_device, read_jsonl, require_positive, rl_summary, run_main, save_checkpoint,
                      set_seed, show_changes, stored_or_evaluated)


# ----------------------------------------------------------------------------- rollouts: G answers per prompt

@dataclass
class Rollout:
    """B·G sampled answers; rows i·G .. i·G + G − 1 are the group of prompt i."""
    sequences: torch.Tensor       # (B·G, P + N) prompt (left-padded) + answer (pad after <|eos|>)
    attention_mask: torch.Tensor  # (B·G, P + N) 1 = real token
    prompt_len: int               # P
    targets: torch.Tensor         # (B·G, N) answer tokens, -100 where mask is 0
    mask: torch.Tensor            # (B·G, N) 1.0 on answer tokens (through the first <|eos|>)
    finished: torch.Tensor        # (B·G,) True where the answer produced <|eos|>
    logprobs: torch.Tensor        # (B·G, N) log π_θ_old(o_t | q, o_<t) at the sampling temperature
    ref_logprobs: torch.Tensor    # (B·G, N) log π_ref(o_t | q, o_<t), same temperature
    entropy: torch.Tensor         # (B·G, N) entropy of π_θ_old(· | q, o_<t)
    answers: list                 # B·G decoded answers, cut at <|eos|>: what the gold rule grades


@torch.no_grad()
def collect_rollouts(policy, reference, tokenizer, prompts, group_size, max_new_tokens, temperature, device,
                     dtype="float32"):
    """Sample group_size answers for each prompt with the KV-cached sampler and record what GRPO needs."""
    policy.eval()  # dropout off: the recomputed log-probs must be those of the sampling distribution
    repeated = [p for p in prompts for _ in range(group_size)]
    idx, prompt_mask = encode_prompts(tokenizer, repeated, policy.cfg.block_size - max_new_tokens, device)
    with autocast(device, dtype):
        s = sample_answers(policy, idx, prompt_mask, max_new_tokens, temperature, tokenizer.eos_id, tokenizer.pad_id)
        logits, _ = answer_logits(policy, s.sequences, s.attention_mask, s.prompt_len)
        ref_logits, _ = answer_logits(reference, s.sequences, s.attention_mask, s.prompt_len)
    answers = [tokenizer.decode([t for t in row if t not in (-100, tokenizer.eos_id)]) for row in s.targets.tolist()]
    return Rollout(s.sequences, s.attention_mask, s.prompt_len, s.targets, s.mask, s.finished,
                   token_logprobs(logits, s.targets, temperature), token_logprobs(ref_logits, s.targets, temperature),
                   entropy_from_logits(logits, temperature) * s.mask, answers)


# ----------------------------------------------------------------------------- rewards and advantages

def gold_rewards(answers, accepted, finished, missing_eos_penalty=0.0):
    """The verifiable reward: 1 where the answer passes the gold rule against its prompt's accepted
    answers, 0 where it fails, minus missing_eos_penalty where it hit the length cap without <|eos|>."""
    passed = torch.tensor([float(grade(a, ok)) for a, ok in zip(answers, accepted)], device=finished.device)
    return passed - missing_eos_penalty * (~finished).float()


def model_rewards(reward_model, tokenizer, prompts, answers, finished, missing_eos_penalty=0.0):
    """The reward model's score of prompt + answer + <|eos|> (reward_scores closes every answer with
    <|eos|>, the form the model was trained on), minus the penalty for hitting the cap without one."""
    scores = torch.tensor(reward_scores(reward_model, tokenizer, prompts, answers), device=finished.device)
    return scores - missing_eos_penalty * (~finished).float()


def group_advantages(rewards, group_size, scale=True, eps=1e-4):
    """A_i = (r_i − mean of its group) / (std of its group + ε), or without the division (scale=False,
    Dr. GRPO). rewards: (B·G,), groups in consecutive rows. A unanimous group gets zeros."""
    groups = rewards.view(-1, group_size)
    advantages = groups - groups.mean(-1, keepdim=True)
    if scale:
        advantages = advantages / (groups.std(-1, keepdim=True) + eps)
    return advantages.reshape(-1)


def zero_std_fraction(rewards, group_size):
    """Share of groups whose answers all got the same reward: their advantages are all 0."""
    groups = rewards.view(-1, group_size)
    return (groups.amax(-1) == groups.amin(-1)).float().mean().item()


# ----------------------------------------------------------------------------- the GRPO loss

def per_token_kl(logprobs, ref_logprobs):
    """k3 = ρ_ref − 1 − log ρ_ref with ρ_ref = π_ref/π_θ, per token: ≥ 0, and 0 where π_θ = π_ref."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - 1 - log_ratio


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_eps, kl_coef, loss_norm="sequence"):
    """−J of the docstring. logprobs (B·G, N) under π_θ (with gradient), old_logprobs and ref_logprobs under
    π_θ_old and π_ref; advantages (B·G,), one per answer; mask (B·G, N) 1.0 on answer tokens.
    loss_norm "sequence": mean over each answer's tokens, then over answers; "token": one mean over all
    answer tokens. Returns (loss, {"kl": mean k3 per token, "clipfrac", "ratio": mean ρ})."""
    ratio = torch.exp((logprobs - old_logprobs) * mask)  # 1 on padding
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    kl = per_token_kl(logprobs * mask, ref_logprobs * mask)  # 0 on padding
    per_token = -(torch.min(unclipped, clipped) - kl_coef * kl) * mask
    if loss_norm == "sequence":
        loss = (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif loss_norm == "token":
        loss = per_token.sum() / mask.sum().clamp(min=1)
    else:
        raise ValueError(f"loss_norm must be 'sequence' or 'token', got {loss_norm!r}")
    n = mask.sum().clamp(min=1)
    stats = {"kl": (kl * mask).sum() / n, "clipfrac": ((clipped < unclipped).float() * mask).sum() / n,
             "ratio": (ratio * mask).sum() / n}
    return loss, {k: v.item() for k, v in stats.items()}


def grpo_update(policy, optimizer, scaler, roll, advantages, args):
    """μ = --num-iterations optimizer steps on one batch of samples, each on the whole batch."""
    policy.eval()  # still no dropout: ρ must be exactly 1 at the first step
    stats = []
    for _ in range(args.num_iterations):
        with autocast(args.device, args.dtype):
            logits, _ = answer_logits(policy, roll.sequences, roll.attention_mask, roll.prompt_len)
        logprobs = token_logprobs(logits, roll.targets, args.temperature)
        loss, s = grpo_loss(logprobs, roll.logprobs, roll.ref_logprobs, advantages, roll.mask, args.clip_eps,
                            args.kl_coef, args.loss_norm)
        scaler.scale(loss).backward()
        optimizer_step(optimizer, scaler, list(policy.parameters()), args.grad_clip)
        stats.append(dict(s, loss=loss.item()))
    return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, helps={"batch_size": "prompts per step, each sampled --group-size times"},
                    data="data/prompts.jsonl", max_steps=150, batch_size=8, lr=5e-5,
                    warmup_steps=0, eval_interval=0, log_interval=5)
    a = p.add_argument
    a("--reward", default="gold", choices=["gold", "model"],
      help="gold: the gold grading rule against each prompt's accepted answers (1 pass, 0 fail); "
           "model: the reward model of reward.py (default: %(default)s)")
    a("--reward-model", default=None, help="with --reward model, the checkpoint that scores answers "
      "(default: <out-dir>/reward.pt)")
    a("--eval-data", default="data/eval.jsonl", help="gold evaluation prompts (default: %(default)s)")
    a("--name", default="grpo", help="output file stem under --out-dir, e.g. grpo_kl0 (default: %(default)s)")
    a("--group-size", type=int, default=8, help="G, answers sampled per prompt (default: %(default)s)")
    a("--kl-coef", type=float, default=0.2, help="β of the k3 KL to the SFT model in the loss; 0 = no leash "
      "(default: %(default)s)")
    a("--clip-eps", type=float, default=0.2, help="ε of the clipped ratio (default: %(default)s)")
    a("--num-iterations", type=int, default=1, help="μ, optimizer steps on each batch of samples; with 1 the "
      "ratio is exactly 1 and the clip never binds (default: %(default)s)")
    a("--scale-rewards", default="group", choices=["group", "none"], help="group: divide advantages by the "
      "group's std (GRPO); none: do not (Dr. GRPO) (default: %(default)s)")
    a("--loss-norm", default="sequence", choices=["sequence", "token"], help="sequence: mean over each answer's "
      "tokens, then over answers (GRPO); token: mean over all answer tokens (DAPO) (default: %(default)s)")
    a("--max-new-tokens", type=int, default=40, help="answer length cap in tokens (default: %(default)s)")
    a("--temperature", type=float, default=1.0, help="sampling temperature of rollouts, also used for every "
      "log-prob (default: %(default)s)")
    a("--missing-eos-penalty", type=float, default=0.1, help="subtracted from the reward of an answer that hit "
      "the cap without <|eos|> (default: %(default)s)")
    a("--grad-clip", type=float, default=1.0, help="max gradient norm (default: %(default)s)")
    p.epilog = "--init defaults to <out-dir>/sft.pt, the SFT model that is both the start and the reference."
    args = p.parse_args(argv)
    args.init = args.init or os.path.join(args.out_dir, "sft.pt")
    args.reward_model = args.reward_model or os.path.join(args.out_dir, "reward.pt")
    if args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature} — GRPO needs a sampling temperature > 0")
    require_positive(args, "max_new_tokens", "batch_size", "num_iterations")
    if args.group_size < 2:
        raise UserError(f"--group-size must be at least 2, got {args.group_size} — the advantages compare "
                        "answers to the same prompt")
    return args


# ----------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What the loop works with: the policy, the frozen reference, the reward model if any, the prompts."""
    args: argparse.Namespace
    policy: torch.nn.Module
    reference: torch.nn.Module
    reward_model: object  # a RewardModel with --reward model, else None
    tokenizer: object
    prompts: list  # data/prompts.jsonl records: "prompt", and "answers" for the gold reward
    eval_records: list
    log: MetricsLog


def setup(args):
    """π_θ and π_ref from the SFT checkpoint, the prompts (with their accepted answers for the gold
    reward), and the frozen reward model for --reward model."""
    device = args.device
    policy, tokenizer, _ = load_policy(args.init, device)
    reference, _, _ = load_model(args.init, device)  # a second, frozen copy: π_ref
    reference.requires_grad_(False)
    prompts = read_jsonl(args.data, required=("prompt",))
    if not prompts:
        raise UserError(f"no prompts in {args.data} — pass a JSONL file of {{\"prompt\", \"answers\"}} records")
    reward_model = None
    if args.reward == "gold":
        missing = next((i for i, r in enumerate(prompts) if not r.get("answers")), None)
        if missing is not None:
            raise UserError(f"prompt {missing + 1} has no \"answers\" ({args.data}) — the gold reward needs every "
                            "prompt's accepted answers (python data/make_data.py writes them), or pass --reward model")
    else:
        reward_model, rm_tokenizer, _ = load_model(args.reward_model, device, model_class=RewardModel)
        reward_model.requires_grad_(False)
        if rm_tokenizer.to_dict() != tokenizer.to_dict():
            raise UserError(f"{args.reward_model} and {args.init} use different tokenizers — "
                            "train the reward model from the same SFT checkpoint")
    if policy.cfg.block_size <= args.max_new_tokens + 8:
        raise UserError(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in "
                        f"block_size {policy.cfg.block_size} — lower it")
    eval_records = read_jsonl(args.eval_data, required=("prompt", "kind", "answers"))
    if args.compile:
        policy = torch.compile(policy)
    reward = "the gold rule" if reward_model is None else args.reward_model
    print(f"{args.init} → policy + frozen reference ({policy.num_params() / 1e6:.2f}M params); reward: {reward}; "
          f"{len(prompts)} prompts, {args.batch_size} × {args.group_size} answers per step; β={args.kl_coef}")
    log = MetricsLog(os.path.join(args.out_dir, args.name) + ".jsonl")
    return Run(args, policy, reference, reward_model, tokenizer, prompts, eval_records, log)


def compute_rewards(run, group, roll):
    """One reward per sampled answer; group holds the prompt record of each answer (each prompt G times)."""
    args = run.args
    if run.reward_model is None:
        return gold_rewards(roll.answers, [r["answers"] for r in group], roll.finished, args.missing_eos_penalty)
    return model_rewards(run.reward_model, run.tokenizer, [r["prompt"] for r in group], roll.answers,
                         roll.finished, args.missing_eos_penalty)


# ----------------------------------------------------------------------------- training

def train(run):
    """The loop: sample G answers for each of B prompts, score them, turn each group's rewards into
    advantages, then μ policy-gradient steps with the clipped ratio and the KL to π_ref in the loss."""
    args, policy = run.args, run.policy
    optimizer = configure_optimizer(policy, args.lr, weight_decay=0.0, fused=torch.device(args.device).type == "cuda")
    scaler = grad_scaler(args.device, args.dtype)
    stream = batches(run.prompts, args.batch_size, args.seed)
    bar = tqdm(range(1, args.max_steps + 1), desc=args.name)
    for step in bar:
        lr = set_lr(optimizer, step - 1, args.warmup_steps, args.max_steps, min_lr_ratio=1.0)  # constant once warm
        batch = next(stream)
        roll = collect_rollouts(policy, run.reference, run.tokenizer, [r["prompt"] for r in batch], args.group_size,
                                args.max_new_tokens, args.temperature, args.device, args.dtype)
        group = [r for r in batch for _ in range(args.group_size)]  # the prompt record of each answer
        rewards = compute_rewards(run, group, roll)
        advantages = group_advantages(rewards, args.group_size, scale=args.scale_rewards == "group")
        stats = grpo_update(policy, optimizer, scaler, roll, advantages, args)
        answer_kl = (per_token_kl(roll.logprobs, roll.ref_logprobs) * roll.mask).sum(-1)  # Σ_t k3 per answer
        record = dict(step=step, reward=rewards.mean().item(), reward_std=rewards.std().item(),
                      kl=answer_kl.mean().item(), clipfrac=stats["clipfrac"], ratio=stats["ratio"],
                      loss=stats["loss"], entropy=(roll.entropy.sum() / roll.mask.sum()).item(),
                      zero_std_fraction=zero_std_fraction(rewards, args.group_size),
                      response_length=roll.mask.sum(-1).mean().item(),
                      eos_rate=roll.finished.float().mean().item(), lr=lr)
        for kind in sorted({r.get("kind") for r in group} - {None}):  # which kinds of prompt it learns on
            record[f"reward_{kind}"] = rewards[[r.get("kind") == kind for r in group]].mean().item()
        if all(r.get("answers") for r in group):  # the gold pass rate of the samples, whatever the reward
            record["pass_rate"] = gold_rewards(roll.answers, [r["answers"] for r in group], roll.finished).mean().item()
        if args.eval_interval and step % args.eval_interval == 0:
            rates, _ = evaluate(policy, run.tokenizer, run.eval_records, args.device,
                                kinds=("fact", "heldout_fact", "unknown", "harmful"))
            record.update({f"gold_{k}": v for k, v in rates.items()})
        run.log.log(**record)
        bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.2f}")
        if args.log_interval and (step % args.log_interval == 0 or step == args.max_steps):
            tqdm.write(f"step {step:4d} | reward {record['reward']:+.3f} | kl {record['kl']:6.3f} | "
                       f"entropy {record['entropy']:.3f} | zero_std {record['zero_std_fraction']:.2f} | "
                       f"clipfrac {record['clipfrac']:.3f} | len {record['response_length']:.1f}")


# ----------------------------------------------------------------------------- the verdict

def report(run, started):
    """The human judge's verdict: gold pass rates of SFT (the reference), PPO and DPO when their
    checkpoints exist, and GRPO; the answers whose verdict changed; the checkpoint and the plot."""
    args, tok, device = run.args, run.tokenizer, run.args.device
    sft_rates, sft_records = evaluate(run.reference, tok, run.eval_records, device, kinds=CHAT_KINDS)
    rates, records = evaluate(run.policy, tok, run.eval_records, device, kinds=CHAT_KINDS)
    columns = {"sft": sft_rates}
    for stage in ("ppo", "dpo"):
        path = os.path.join(args.out_dir, f"{stage}.pt")
        if os.path.exists(path):
            chat = [r for r in run.eval_records if r["kind"] in CHAT_KINDS]
            columns[stage] = stored_or_evaluated(load_checkpoint(path, device), path, chat, device)
    columns[args.name] = rates
    print(format_pass_rates(columns))
    show_changes(sft_records, records, args.name)
    summary = dict(rl_summary(run.log.records, "reward", run.eval_records, rates, sft_rates,
                              end_keys=("zero_std_fraction",)),
                   reward=args.reward, kl_coef=args.kl_coef, eval=rates, sft_eval=sft_rates, steps=args.max_steps,
                   wall_s=round(time.time() - started, 1))
    out = os.path.join(args.out_dir, args.name)
    save_checkpoint(out + ".pt", run.policy, tok, stage="grpo", step=args.max_steps, eval=rates, sft_eval=sft_rates,
                    init=args.init, reward=args.reward, kl_coef=args.kl_coef, args=vars(args))
    run.log.summary(**summary)
    run.log.plot(out + ".png", ["reward", "pass_rate", "reward_unknown", "reward_harmful", "kl", "entropy",
                                "zero_std_fraction", "response_length", "clipfrac"],
                 title=f"{args.name}: GRPO, {args.reward} reward, β={args.kl_coef}")
    print(format_rl_summary(summary, "reward", sft_rates, rates, out + ".pt"))
    return summary


def main(argv=None):
    started = time.time()
    args = parse_args(argv)
    set_seed(args.seed)
    args.device = pick_device(args.device)
    run = setup(args)
    train(run)
    summary = report(run, started)
    return run, summary


if __name__ == "__main__":
    run_main(main)
