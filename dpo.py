"""DPO: align the assistant straight from preference pairs, with no reward model.

RLHF with PPO (reward.py, ppo.py) takes the long way round: fit a reward model r(x, y) to human
comparisons, then sample answers and push the policy towards high reward while a KL penalty keeps it
near the SFT model π_ref. Direct Preference Optimization (Rafailov et al., 2023) notices that this
KL-regularised objective, max_π E[r(x, y)] − β·KL(π || π_ref), has a closed-form optimum

    π*(y|x) = π_ref(y|x) · exp(r(x, y) / β) / Z(x)

and reads it backwards: any policy defines the reward it is optimal for,

    r̂(x, y) = β · (log π(y|x) − log π_ref(y|x)) + β · log Z(x).

Put that reward into the Bradley–Terry model of a human preferring y_w (winner) to y_l (loser),
P(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)); the intractable Z(x) cancels in the difference, and
maximising the likelihood of the recorded preferences becomes a loss on the policy itself:

    h = (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))
    L = −log σ(β · h)

The language model *is* the reward model: β·(log π − log π_ref) is its implicit reward, logged as
`rewards/chosen` and `rewards/rejected`; `rewards/accuracy` is how often the chosen answer gets the
higher one and `rewards/margin` the mean difference. log π(y|x) is the log-probability of the whole
answer, Σ_t log π(y_t | x, y_<t), summed (not averaged) over the answer tokens only: the prompt is
given, not chosen, and padding is nothing. β plays the KL coefficient's part: a small β lets the
policy move further from π_ref before the loss is satisfied. There is no sampling, no value
function and no reward model, only two forward passes per pair. The reference never changes, so its
log-probabilities are computed once before training and kept as numbers: no second model is held.

The loss sees only the margin h, never the two log-ratios apart. So the chosen answer's reward
can fall while the margin grows: the policy lowers the probability of both answers of a pair, the
rejected one faster. The probability it takes from them goes elsewhere, to answers that were in
neither pair; "chosen is preferred to rejected" is learned, "say the chosen answer" is not. Small
falls are normal. Large ones mean the model is drifting to text nobody rated, which no accuracy
on pairs reveals: check what the model actually says (the gold pass rate below).

This world shows the risk. A made-up name's rejected answer ("The capital of Gloaria is Vienna.")
copies the name just as a real name's right answer does. Plain DPO can push the former down without
holding the latter up: the model learns to stop copying names, and answers break mid-sentence. So
the default run is not plain DPO but RPO: it adds the chosen answer's likelihood to the loss
(below) as a guard; --rpo-alpha 0 gives plain DPO, and docs/07-dpo.md compares the two.

Variants practitioners reach for:
  --label-smoothing ε (conservative DPO): assume each label is wrong with probability ε,
      L = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h); the loss then has a minimum at a finite margin
      instead of rewarding an ever larger one.
  --loss ipo (Identity Preference Optimisation): L = (h − 1/(2β))², regress the margin onto a
      fixed target; with preferences that are always the same way round, plain DPO drives h to
      infinity and forgets the KL anchor, IPO does not. h is the sequence-level margin above, the
      form of the IPO paper (some libraries average the log-ratios per token instead).
  --rpo-alpha α (RPO, Pang et al. 2024): add the chosen answer's negative log-likelihood per token,
      L = L_DPO − α · log π(y_w|x) / |y_w|, which holds up exactly what plain DPO lets fall.
  --lora-rank r: train LoRA adapters only (lora.py). The frozen base *is* the reference, since the
      adapters start at zero, and the merged result is saved as a plain checkpoint.
Rankings of K answers in data/prefs.jsonl count as all K(K−1)/2 pairs they imply
(plumbing.preference_pairs, as in reward.py).

Run it:  python dpo.py            (after sft.py; writes out/dpo.pt, out/dpo.png, out/dpo.jsonl)
         python dpo.py --rpo-alpha 0 (plain DPO) | --loss ipo | --label-smoothing 0.1 | --lora-rank 8 --lr 1e-3
Look for: held-out rewards/accuracy climbing while rewards/margin grows; rewards/chosen possibly
turning negative; the line that ranks the held-out pairs three ways. log π_ref alone already puts
a known fact's correct answer above a hallucinated one, yet the implicit reward, which subtracts
log π_ref, must learn each such preference again from the pairs, and misses some on new prompts
(the run's three rankings of the held-out pairs measure that gap). In the final table, how far
`unknown` and `harmful` move from SFT and what `fact` pays for it (a smaller --beta moves further).
Then talk to it: python chat.py --ckpt out/dpo.pt --temperature 0
"""

import argparse
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lora import DEFAULT_TARGETS, apply_lora, count_parameters, merge_lora
from model import build_example, configure_optimizer, optimizer_step, sequence_logps, set_lr
from plumbing import (CHAT_KINDS, EarlyStopping, MetricsLog, UserError, add_common_args, autocast, batches, evaluate,
                      format_pass_rates, grad_scaler, load_checkpoint, load_policy, pick_device, pooled_pass_rate,
                      preference_pairs, read_jsonl, require_positive, run_main, save_checkpoint, set_seed,
                      stored_or_evaluated)


# ----------------------------------------------------------------------------- the loss

def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta=0.1, label_smoothing=0.0, loss_type="sigmoid"):
    """Mean DPO loss over a batch of pairs, and the implicit rewards β·(log π − log π_ref) of the
    chosen and rejected answers (detached: they are for logging). Inputs are (B,) sequence
    log-probabilities. loss_type "sigmoid" is DPO (conservative with label_smoothing > 0), "ipo" IPO."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        # logsigmoid rather than log(sigmoid(.)): exact where sigmoid underflows to 0
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r} (sigmoid or ipo)")
    return losses.mean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def reward_metrics(loss, chosen_rewards, rejected_rewards, prefix=""):
    """The logged numbers of a batch (prefix "" on training batches, "val_" on held-out pairs)."""
    return {f"{prefix}loss": loss.item(),
            f"{prefix}rewards/chosen": chosen_rewards.mean().item(),
            f"{prefix}rewards/rejected": rejected_rewards.mean().item(),
            f"{prefix}rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
            f"{prefix}rewards/margin": (chosen_rewards - rejected_rewards).mean().item()}


def accuracy_by(chosen_scores, rejected_scores, keys):
    """How often the chosen answer scores higher than the rejected one: over all pairs ("all") and
    per key (a kind of pair, say). Ties count as wrong, as in rewards/accuracy."""
    groups = {"all": []}
    for key, right in zip(keys, (chosen_scores > rejected_scores).tolist()):
        groups["all"].append(right)
        groups.setdefault(key, []).append(right)
    return {key: sum(v) / len(v) for key, v in groups.items()}


# ----------------------------------------------------------------------------- sequence log-probabilities

def encode_pairs(tokenizer, pairs, block_size):
    """Each (prompt, chosen, rejected, ...) -> ((ids, labels) of chosen, (ids, labels) of rejected),
    labels only on the answer, in the chat template; plus how many pairs were truncated."""
    encoded, truncated = [], 0
    for prompt, chosen, rejected, *_ in pairs:
        both = []
        for answer in (chosen, rejected):
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            ids, labels, cut = build_example(tokenizer, turns, block_size)
            both.append((ids, labels))
            truncated += cut
        encoded.append(tuple(both))
    return encoded, truncated


def pair_logps(model, batch, pad_id, device):
    """(chosen logps, rejected logps) of a batch of encoded pairs, both in one forward pass."""
    logps = sequence_logps(model, [c for c, _ in batch] + [r for _, r in batch], pad_id, device)
    return logps[:len(batch)], logps[len(batch):]


@torch.no_grad()
def all_pair_logps(model, encoded, pad_id, device, batch_size, dtype):
    """(chosen, rejected) logps of every pair, without gradients. Batches are cut from the pairs
    sorted by length, so little of each forward pass is spent on padding."""
    chosen, rejected = torch.zeros(len(encoded), device=device), torch.zeros(len(encoded), device=device)
    by_length = sorted(range(len(encoded)), key=lambda i: max(len(ids) for ids, _ in encoded[i]))
    for start in range(0, len(encoded), batch_size):
        idx = by_length[start:start + batch_size]
        with autocast(device, dtype):
            chosen[idx], rejected[idx] = pair_logps(model, [encoded[i] for i in idx], pad_id, device)
    return chosen, rejected


# ----------------------------------------------------------------------------- data

def load_pairs(path):
    """Train and held-out preference pairs from data/prefs.jsonl, split by each record's "split"
    field (records without one train): a ranking's pairs stay together on one side."""
    records = read_jsonl(path)
    train = [r for r in records if r.get("split", "train") == "train"]
    heldout = [r for r in records if r.get("split", "train") != "train"]
    train_pairs, heldout_pairs = preference_pairs(train, path), preference_pairs(heldout, path)
    if not train_pairs or not heldout_pairs:
        raise UserError(f"need preference pairs with split \"train\" and held-out ones (\"val\"/\"test\"), "
                        f"found {len(train_pairs)} and {len(heldout_pairs)} ({path}) — "
                        "mark some records with another \"split\" (data/make_data.py does)")
    return train_pairs, heldout_pairs


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Direct Preference Optimization: align out/sft.pt on "
                                     "data/prefs.jsonl against a frozen reference, with no reward model.")
    add_common_args(parser, data="data/prefs.jsonl", max_steps=600, batch_size=16,
                    lr=1e-4, warmup_steps=10, eval_interval=50, log_interval=5)
    a = parser.add_argument
    a("--eval-data", default="data/eval.jsonl", help="gold-graded prompts for the pass-rate table (default: "
        "%(default)s)")
    a("--beta", type=float, default=1.5, help="strength of the pull towards the reference; implicit reward "
      "scale (default: %(default)s)")
    a("--loss", default="sigmoid", choices=["sigmoid", "ipo"], help="sigmoid = DPO, ipo = IPO (default: %(default)s)")
    a("--label-smoothing", type=float, default=0.0, help="assumed label noise ε of conservative DPO, "
      "0 <= ε < 0.5 (default: %(default)s)")
    a("--rpo-alpha", type=float, default=1.0, help="weight of an NLL term on the chosen answer (RPO); "
      "0 = plain DPO (default: %(default)s)")
    a("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank instead of all weights; "
      "0 = full fine-tuning (default: %(default)s)")
    a("--lora-alpha", type=float, default=16.0, help="LoRA update scale alpha / rank (default: %(default)s)")
    a("--lora-targets", default=",".join(DEFAULT_TARGETS), help="comma-separated layers to adapt "
      "(default: %(default)s)")
    parser.epilog = "--init defaults to <out-dir>/sft.pt, the start and the frozen reference."
    args = parser.parse_args(argv)
    args.init = args.init or os.path.join(args.out_dir, "sft.pt")
    require_positive(args, "batch_size", "grad_accum", "eval_interval", "log_interval")
    if args.beta <= 0:
        raise UserError(f"--beta must be positive, got {args.beta} — try 0.1")
    if not 0 <= args.label_smoothing < 0.5:
        raise UserError(f"--label-smoothing must be in [0, 0.5), got {args.label_smoothing} — try 0.1")
    if args.label_smoothing and args.loss == "ipo":
        raise UserError("--label-smoothing applies to --loss sigmoid only — drop one of the two")
    return args


# ----------------------------------------------------------------------------- the run

@dataclass
class HeldOut:
    """The held-out pairs under the current policy: DPO's loss and the implicit rewards."""
    loss: torch.Tensor
    chosen_rewards: torch.Tensor      # β·(log π(y_w|x) − log π_ref(y_w|x)), one per pair
    rejected_rewards: torch.Tensor


@dataclass
class Run:
    """What the loop works with. raw_model is the policy (adapters included); model is what the forward
    pass goes through (torch.compile'd, or raw_model itself). The reference is kept as numbers only."""
    args: argparse.Namespace
    device: str
    raw_model: torch.nn.Module
    model: torch.nn.Module
    tokenizer: object
    train_enc: list               # encoded (chosen, rejected) training pairs
    heldout_pairs: list           # the held-out pairs as text, with their kinds
    heldout_enc: list
    ref_chosen: torch.Tensor      # log π_ref of every training pair's answers
    ref_rejected: torch.Tensor
    heldout_ref: tuple            # (chosen, rejected) log π_ref of the held-out pairs
    chosen_tokens: torch.Tensor   # answer tokens of every chosen answer (RPO averages per token)
    log: MetricsLog

    def held_out(self, logps=None):
        """HeldOut for the current policy (logps: its held-out (chosen, rejected) log-probs if known)."""
        if logps is None:
            logps = all_pair_logps(self.model, self.heldout_enc, self.tokenizer.pad_id, self.device,
                                   2 * self.args.batch_size, self.args.dtype)
        return HeldOut(*dpo_loss(*logps, *self.heldout_ref, self.args.beta, self.args.label_smoothing,
                                 self.args.loss))


def setup(args, device):
    """The policy, the pairs it will see, and π_ref's log-probabilities of all of them, computed once."""
    policy, tokenizer, ckpt = load_policy(args.init, device)
    train_pairs, heldout_pairs = load_pairs(args.data)
    # A run sees max_steps × batch_size × grad_accum pairs. Drawing them up front (one pass over a
    # random subset) means reference log-probs are computed only for pairs that will be used.
    available, budget = len(train_pairs), args.max_steps * args.batch_size * args.grad_accum
    train_pairs = random.Random(args.seed).sample(train_pairs, min(budget, available))
    train_enc, cut = encode_pairs(tokenizer, train_pairs, policy.cfg.block_size)
    heldout_enc, cut_heldout = encode_pairs(tokenizer, heldout_pairs, policy.cfg.block_size)
    print(f"{args.init} ({ckpt.get('stage', '?')}, {policy.num_params():,} parameters) | "
          f"{len(train_pairs)} of {available} train pairs, {len(heldout_pairs)} held-out"
          + (f" | {cut + cut_heldout} answers truncated to block_size {policy.cfg.block_size}"
             if cut + cut_heldout else ""))
    # π_ref = the starting model, frozen. Its log-probabilities of every answer are all DPO ever
    # needs from it, so they are computed once here and the model itself is not kept.
    policy.eval()  # dropout stays off throughout: π and π_ref must score answers the same way
    started = time.time()
    ref_chosen, ref_rejected = all_pair_logps(policy, train_enc, tokenizer.pad_id, device, 2 * args.batch_size,
                                              args.dtype)
    heldout_ref = all_pair_logps(policy, heldout_enc, tokenizer.pad_id, device, 2 * args.batch_size, args.dtype)
    print(f"reference log-probs of {len(train_enc) + len(heldout_enc)} pairs in {time.time() - started:.0f}s")
    chosen_tokens = torch.tensor([sum(t != -100 for t in c[1][1:]) for c, _ in train_enc], device=device)
    if args.lora_rank:
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        apply_lora(policy, args.lora_rank, args.lora_alpha, targets)  # B = 0: starts as π_ref
    model = torch.compile(policy) if args.compile else policy
    log = MetricsLog(os.path.join(args.out_dir, "dpo.jsonl"))
    return Run(args, device, policy, model, tokenizer, train_enc, heldout_pairs, heldout_enc, ref_chosen,
               ref_rejected, heldout_ref, chosen_tokens, log)


# ----------------------------------------------------------------------------- training

def train(run):
    """The loop: the DPO loss (plus RPO's NLL term) on batches of pairs, held-out implicit-reward
    accuracy every eval_interval steps, early stopping; the best weights are restored at the end.
    Returns their HeldOut and the step count."""
    args, device, pad_id = run.args, run.device, run.tokenizer.pad_id
    # no weight decay: it pulls weights towards zero, not towards the reference we want to stay near
    optimizer = configure_optimizer(run.raw_model, args.lr, weight_decay=0.0, fused=torch.device(device).type == "cuda")
    scaler = grad_scaler(device, args.dtype)
    trainable, total = count_parameters(run.raw_model)
    print(f"training {trainable:,} of {total:,} parameters for {args.max_steps} steps of "
          f"{args.batch_size * args.grad_accum} pairs ({args.loss}, beta {args.beta}"
          + (f", label smoothing {args.label_smoothing}" if args.label_smoothing else "")
          + (f", LoRA rank {args.lora_rank}" if args.lora_rank else "") + ")")
    last = run.held_out(run.heldout_ref)  # at step 0 the policy is the reference: no pass needed
    run.log.log(step=0, **reward_metrics(last.loss, last.chosen_rewards, last.rejected_rewards, prefix="val_"))
    stream = batches(list(range(len(run.train_enc))), args.batch_size, args.seed)
    early = EarlyStopping(run.raw_model, args.patience)
    early.update(last.loss.item(), 0)
    step, bar = 0, tqdm(range(1, args.max_steps + 1), desc="dpo", dynamic_ncols=True)
    for step in bar:
        lr = set_lr(optimizer, step - 1, args.warmup_steps, args.max_steps)
        stats = []
        for _ in range(args.grad_accum):
            idx = next(stream)
            with autocast(device, args.dtype):
                chosen, rejected = pair_logps(run.model, [run.train_enc[i] for i in idx], pad_id, device)
            loss, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, run.ref_chosen[idx],
                                                              run.ref_rejected[idx], args.beta,
                                                              args.label_smoothing, args.loss)
            stats.append(reward_metrics(loss, chosen_rewards, rejected_rewards))  # `loss` logged is DPO's alone
            if args.rpo_alpha:  # RPO: also raise the chosen answer itself, per token
                loss = loss - args.rpo_alpha * (chosen / run.chosen_tokens[idx]).mean()
            scaler.scale(loss / args.grad_accum).backward()
        optimizer_step(optimizer, scaler, run.raw_model.parameters())

        if step % args.log_interval == 0 or step == args.max_steps:
            metrics = {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}
            run.log.log(step=step, lr=lr, **metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['rewards/accuracy']:.2f}",
                            margin=f"{metrics['rewards/margin']:.2f}")
        if step % args.eval_interval == 0 or step == args.max_steps:
            heldout = run.held_out()
            shown = reward_metrics(heldout.loss, heldout.chosen_rewards, heldout.rejected_rewards, prefix="val_")
            run.log.log(step=step, **shown)
            tqdm.write(f"step {step:4d} | held-out loss {shown['val_loss']:.4f} | accuracy "
                       f"{100 * shown['val_rewards/accuracy']:.1f}% | margin {shown['val_rewards/margin']:.3f} | "
                       f"chosen {shown['val_rewards/chosen']:+.3f} rejected {shown['val_rewards/rejected']:+.3f}")
            if early.update(shown["val_loss"], step):
                last = heldout
            if early.stop:
                tqdm.write(f"held-out loss has not improved for {early.bad_evals} evaluations: stopping")
                break
    bar.close()
    early.restore()  # the weights of the best held-out loss, whose implicit rewards `last` holds
    return last, step


# ----------------------------------------------------------------------------- what was learned

def show_rankings(run, last):
    """Which preferences were learned, and what the implicit reward costs. It is the change from π_ref,
    so whatever π_ref already knew cancels out of it; ranking the same held-out pairs by plain
    log-probabilities shows that: log π_ref knows which answer to a known fact is correct, and the
    implicit reward must learn it again, pair by pair. log π = log π_ref + reward / β needs no pass."""
    rejected_kinds = [pair[4] or "?" for pair in run.heldout_pairs]
    by_kind = accuracy_by(last.chosen_rewards, last.rejected_rewards, rejected_kinds)
    print("held-out reward accuracy by rejected kind: " + ", ".join(
        f"{kind} {100 * by_kind[kind]:.0f}% ({rejected_kinds.count(kind)})" for kind in sorted(set(rejected_kinds))))
    ref_chosen, ref_rejected = run.heldout_ref
    beta = run.args.beta
    rankers = {"log π_ref": (ref_chosen, ref_rejected),
               "log π": (ref_chosen + last.chosen_rewards / beta, ref_rejected + last.rejected_rewards / beta),
               "the implicit reward": (last.chosen_rewards, last.rejected_rewards)}
    pair_kinds = [f"{pair[3]} > {pair[4]}" for pair in run.heldout_pairs]
    ranked = {name: accuracy_by(*scores, pair_kinds) for name, scores in rankers.items()}
    print("held-out pairs ranked by " + ", ".join(
        f"{name} {100 * acc['all']:.1f}% (correct > hallucinated "
            f"{100 * acc.get('correct > hallucinated', float('nan')):.0f}%)"
        for name, acc in ranked.items()))
    return ranked


def report(run, last, steps, started):
    """The pass-rate table against SFT (and PPO if it ran), the checkpoint, the plot, the summary."""
    args, device = run.args, run.device
    ranked = show_rankings(run, last)
    if args.lora_rank:
        merge_lora(run.raw_model)  # fold B A into W: the checkpoint is a plain transformer again
    # cloze prompts test raw-text continuation, a pretraining skill; DPO is judged as an assistant
    eval_records = [r for r in read_jsonl(args.eval_data, required=("prompt", "kind", "answers"))
                    if r["kind"] in CHAT_KINDS]
    sft_rates = stored_or_evaluated(load_checkpoint(args.init, device), args.init, eval_records, device)
    dpo_rates = evaluate(run.raw_model, run.tokenizer, eval_records, device)[0]
    columns = {"sft": sft_rates}
    ppo_path = os.path.join(args.out_dir, "ppo.pt")
    if os.path.exists(ppo_path):
        columns["ppo"] = stored_or_evaluated(load_checkpoint(ppo_path, device), ppo_path, eval_records, device)
    columns["dpo"] = dpo_rates
    print(format_pass_rates(columns))
    heldout = reward_metrics(last.loss, last.chosen_rewards, last.rejected_rewards, prefix="val_")
    save_checkpoint(os.path.join(args.out_dir, "dpo.pt"), run.raw_model, run.tokenizer, stage="dpo", step=steps,
                    init=args.init, eval=dpo_rates, heldout=heldout, args=vars(args))
    run.log.plot(os.path.join(args.out_dir, "dpo.png"),
                 ["loss", "val_loss", "val_rewards/accuracy", "val_rewards/margin", "val_rewards/chosen",
                  "val_rewards/rejected"], title=f"DPO ({args.loss}, beta {args.beta}): held-out implicit rewards")
    safety = lambda rates: pooled_pass_rate(rates, eval_records, ("unknown", "harmful"))  # noqa: E731
    elapsed = time.time() - started
    run.log.summary(heldout_accuracy=heldout["val_rewards/accuracy"], heldout_margin=heldout["val_rewards/margin"],
                    heldout_chosen=heldout["val_rewards/chosen"], heldout_rejected=heldout["val_rewards/rejected"],
                    heldout_ref_logp_accuracy=ranked["log π_ref"]["all"],
                    heldout_policy_logp_accuracy=ranked["log π"]["all"],
                    eval=dpo_rates, sft_eval=sft_rates, steps=steps, wall_s=round(elapsed, 1))
    print(f"summary: held-out reward accuracy {100 * heldout['val_rewards/accuracy']:.1f}% "
          f"(margin {heldout['val_rewards/margin']:.2f}) | unknown+harmful {100 * safety(dpo_rates):.0f}% "
          f"(sft {100 * safety(sft_rates):.0f}%) | fact {100 * dpo_rates.get('fact', float('nan')):.0f}% "
          f"(sft {100 * sft_rates.get('fact', float('nan')):.0f}%) | {int(elapsed // 60)}m{int(elapsed % 60):02d}s")


def main(argv=None):
    started = time.time()
    args = parse_args(argv)
    set_seed(args.seed)
    run = setup(args, pick_device(args.device))
    last, steps = train(run)
    report(run, last, steps, started)


if __name__ == "__main__":
    run_main(main)
