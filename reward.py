"""The reward model: people's rankings become one number.

SFT taught the model to answer in the chat format, but not which of its possible answers people
prefer: a correct answer, a confident invention, a rambling one, help with something harmful or a
polite refusal all look like fluent text. Asking people to score every answer PPO will sample is far
too slow, so stage three trains a *reward model* that stands in for the human labelers: it reads a
prompt and an answer and returns a scalar r(x, y), higher for answers people prefer.

The network is the SFT transformer with a scalar head on top (by default its LM head stays too,
for the likelihood term below). As the readings describe, the input and each candidate answer are
concatenated, here in the shared chat format `User: {x}\\nAssistant: {y}<|eos|>`, and the head's
reward is read at the last real token:

    r(x, y) = w · h_last(x ⊕ y) + b

In a causal model the final position is the only one that has seen the whole prompt and the whole
answer. In a right-padded batch the final *column* is padding, which is why `model.last_token`
looks up the last position whose attention mask is 1 (reading column -1 would score pad tokens).

Labelers rank answers instead of scoring them: relative judgements agree across people far better
than absolute scores do. The Bradley-Terry model turns a ranking into a likelihood,

    P(y_chosen ≻ y_rejected | x) = σ(r(x, y_chosen) − r(x, y_rejected))
    L_BT = −log σ(r(x, y_chosen) − r(x, y_rejected) − m)          (m: optional margin, default 0)

Only differences of rewards enter, so the loss cannot fix the reward's zero point. The log matters:
maximising the raw difference r_chosen − r_rejected has no optimum (rewards grow forever), while
−log σ stops pushing once a pair is clearly ordered. A labeler who ranks K answers to one prompt
gives C(K, 2) = K(K−1)/2 ordered pairs. They share a prompt and are strongly correlated, so, as in
InstructGPT, all pairs of one prompt are trained together and averaged once:

    L_rank(x) = −1/C(K,2) · Σ_{y_w ranked above y_l} log σ(r(x, y_w) − r(x, y_l))

and every prompt weighs the same in a batch whether it came with 2 answers or 9. The readings
list two alternatives, each selectable here: a *hinge* (margin ranking) loss
max(0, m − (r_w − r_l)) that stops once the gap reaches m, and *regression* (MSE) (r(x, y) − s)²
for data where labelers gave each answer a numeric score s.

The body starts from the SFT weights, which already hold what the model knows, and every weight
learns with the new head. `--freeze-layers N` keeps the embeddings and the lower N blocks fixed
(generic features; skipping their backward pass makes a step cheaper); on the default models that
costs a few points of held-out accuracy, because telling a correct answer from a confident
invention needs the knowledge stored all the way down.

What the readings' reward model is: the scalar head above and nothing else (`--likelihood-weight 0`).
This course adds one term to it. On a small model the last token alone struggles to reach what the
network knows: to tell a correct answer from a confident invention, the head has to recall the fact
at the final position. The language model itself checks a fact by predicting it, and the SFT
model's average log-likelihood of an answer is high for a fact it knows and low for an invention.
`--likelihood-weight α` keeps the LM head (it is tied to the embeddings, so no new weights) and adds
that average to the reward, computed by the same network and trained with it:

    r(x, y) = w · h_last(x ⊕ y) + b + α · (1/|y|) Σ_t log p(y_t | x, y_<t)

docs/05-reward.md measures what α buys in held-out accuracy, and what PPO makes of it. The term has
a price: it rewards probable text, so a reward model that leans on it harder is easier to game.

After training the reward is *normalised*: the head's bias is shifted so that answers sampled from
the SFT model score 0 on average (the shift is stored as `reward_offset` in the checkpoint). A
centred reward tells PPO "better or worse than what you already do", which keeps its first updates
small; the Bradley-Terry loss is blind to the shift, so nothing learned is lost.

Run it:   python reward.py                  (out/sft.pt + data/prefs.jsonl -> out/reward.pt)
          python reward.py --loss hinge     (or --loss mse, --freeze-layers 1, --help for all)
          python reward.py --likelihood-weight 0 --init out/sft.pt --out-dir out/rm_lw0   (head alone)
Look for: the held-out pairwise accuracy (how often the model agrees with the labelers on pairs it
never saw), the mean margin, and the table of the mean reward per kind of answer: correct and
honest answers and refusals of harmful requests should sit above hallucinated, rambling, rude and
harmful-compliance answers. Then the hardest comparisons: style is learned in a few dozen steps
(rambling, rudeness, compliance with harm), while "correct > hallucinated" needs the model to know
the fact; the line after them gives the same comparisons on the training prompts, where a kind
that is far better than held out was memorised rather than learned. A reward model is only as
knowledgeable as the network it is built on, and what it cannot tell apart, PPO cannot be taught.
Curves are in out/reward.png, metrics in out/reward.jsonl.
"""

import argparse
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import RewardModel, chat_ids, configure_optimizer, optimizer_step, pack_answers, reward_scores, set_lr
from plumbing import (EarlyStopping, MetricsLog, UserError, add_common_args, autocast, batches, generate_answers,
                      grad_scaler, load_policy, pick_device, preference_pairs, read_jsonl, require_positive, run_main,
                      save_checkpoint, set_seed)


# ----------------------------------------------------------------------------- the losses

def bradley_terry_loss(chosen_rewards, rejected_rewards, margin=0.0):
    """−log σ(r_chosen − r_rejected − margin), averaged over pairs. logsigmoid is the stable form:
    σ of a large negative difference underflows to 0 and log(0) is −inf."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards - margin).mean()


def hinge_loss(chosen_rewards, rejected_rewards, margin=1.0):
    """Margin ranking loss max(0, m − (r_chosen − r_rejected)): zero once the gap reaches m."""
    return F.relu(margin - (chosen_rewards - rejected_rewards)).mean()


def mse_loss(rewards, scores):
    """Regression on labelers' numeric scores: mean (r − s)²."""
    return F.mse_loss(rewards, scores)


# ----------------------------------------------------------------------------- preference data

@dataclass
class Comparison:
    """One labeler's judgement of answers to one prompt: the answers and which beat which."""
    prompt: str
    answers: list = field(default_factory=list)
    kinds: list = field(default_factory=list)  # "correct", "honest", "refusal", "hallucinated", ...
    scores: list = field(default_factory=list)  # a labeler's numeric score per answer, None if absent
    pairs: list = field(default_factory=list)  # (better, worse) indices into answers
    split: str = "train"
    line: int = 0  # line in the data file, for error messages
    ids: list = field(default_factory=list)  # tokens of prompt + each answer, filled by encode()
    answer_lengths: list = field(default_factory=list)  # tokens of each answer and its <|eos|> (ids end with them)

    def index(self, text, kind):
        if text not in self.answers:
            self.answers.append(text)
            self.kinds.append(kind)
        return self.answers.index(text)


def check_record(record, path, line):
    """A preference line must be a pair or a ranking (data/README.md); else one error naming it."""
    def fail(what, fix):
        raise UserError(f"{what} ({path}:{line}) — {fix}")

    def text(obj, key):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            fail(f"field {key!r} must be a non-empty string", "fix that line")

    if not isinstance(record, dict):
        fail("a preference line must be a JSON object", "see data/README.md")
    if not isinstance(record.get("split", "train"), str):
        fail("field 'split' must be a string", 'use "train" or "val"')
    if "choices" in record:
        text(record, "input")
        choices = record["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, dict) for c in choices):
            fail("'choices' must be a list of at least 2 objects", 'give each a "text" and a "rank"')
        for c in choices:
            text(c, "text")
            rank, score = c.get("rank"), c.get("score", 0.0)
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
                fail("every choice needs an integer 'rank' >= 1", "1 is the best answer")
            if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
                fail("'score' must be a finite number", "fix or drop it")
    elif any(k in record for k in ("prompt", "chosen", "rejected")):
        for key in ("prompt", "chosen", "rejected"):
            text(record, key)
        if record["chosen"] == record["rejected"]:
            fail("chosen and rejected are the same answer", "a comparison needs two different answers")
    else:
        fail('line is neither a pair {"prompt", "chosen", "rejected"} nor a ranking {"input", "choices"}',
             "see data/README.md")


def read_preferences(path):
    """data/prefs.jsonl -> [Comparison], one per line: a pair record gives one ordered pair, a
    ranking of K answers all K(K-1)/2 of them (plumbing.preference_pairs expands both, for DPO too)."""
    records = read_jsonl(path)
    with open(path, encoding="utf-8") as f:  # read_jsonl skips blank lines: map records to file lines
        lines = [n for n, text in enumerate(f, 1) if text.strip()]
    for record, line in zip(records, lines):
        check_record(record, path, line)
    comparisons = [Comparison(r.get("prompt", r.get("input")), split=r.get("split", "train"), line=line)
                   for r, line in zip(records, lines)]
    for prompt, chosen, rejected, chosen_kind, rejected_kind, group in preference_pairs(records, path):
        c = comparisons[group]
        c.pairs.append((c.index(chosen, chosen_kind), c.index(rejected, rejected_kind)))
    for c, r in zip(comparisons, records):
        for choice in r.get("choices", []):  # rankings whose ranks all tie give no pair, only scores
            c.index(choice["text"], choice.get("kind"))
        score = {choice["text"]: choice.get("score") for choice in r.get("choices", [])}
        c.scores = [None if score.get(a) is None else float(score[a]) for a in c.answers]
    return comparisons


def encode(tokenizer, comparisons, block_size, path="prefs.jsonl"):
    """Tokenise every answer of every comparison once. Returns how many answers were truncated
    (their reward is read before their <|eos|>)."""
    truncated = 0
    for c in comparisons:
        c.ids, c.answer_lengths = [], []
        for answer in c.answers:
            try:
                ids, n_answer, cut = chat_ids(tokenizer, c.prompt, answer, block_size)
            except ValueError as exc:
                raise UserError(f"{exc} ({path}:{c.line}) — use only characters the tokenizer knows") from None
            c.ids.append(ids)
            c.answer_lengths.append(n_answer)
            truncated += cut
    return truncated


# ----------------------------------------------------------------------------- scoring

def comparison_loss(rewards, comparisons, loss, margin):
    """Mean over prompts of each prompt's own mean loss: one prompt, one vote (InstructGPT's
    1/C(K,2)). rewards[i] holds the rewards of comparisons[i].answers."""
    per_prompt = []
    for r, c in zip(rewards, comparisons):
        if loss == "mse":
            known = [i for i, s in enumerate(c.scores) if s is not None]
            target = torch.tensor([c.scores[i] for i in known], device=r.device)
            per_prompt.append(mse_loss(r[known].float(), target))
        else:
            better, worse = torch.tensor(c.pairs, device=r.device).T
            pair_loss = bradley_terry_loss if loss == "bt" else hinge_loss
            per_prompt.append(pair_loss(r[better].float(), r[worse].float(), margin))
    return torch.stack(per_prompt).mean()


def forward_comparisons(model, comparisons, pad_id, device):
    """Every answer of every comparison through the model in one batch; one reward tensor per comparison.
    model is called directly (not .score) so that a torch.compile'd model runs its compiled forward."""
    rewards = model(*pack_answers([ids for c in comparisons for ids in c.ids], pad_id,
                                  [n for c in comparisons for n in c.answer_lengths], device))
    return list(rewards.split([len(c.ids) for c in comparisons]))


def pair_stats(rewards, comparisons):
    """accuracy (share of pairs ordered as the labelers did), margin, chosen/rejected means."""
    if not any(c.pairs for c in comparisons):
        return {}
    chosen = torch.cat([r[[w for w, _ in c.pairs]] for r, c in zip(rewards, comparisons) if c.pairs])
    rejected = torch.cat([r[[l for _, l in c.pairs]] for r, c in zip(rewards, comparisons) if c.pairs])
    diff = (chosen - rejected).float()
    return {"accuracy": (diff > 0).float().mean().item(), "margin": diff.mean().item(),
            "chosen_reward": chosen.float().mean().item(), "rejected_reward": rejected.float().mean().item()}


@torch.no_grad()
def evaluate_rewards(model, comparisons, pad_id, device, dtype, loss, margin, batch_size=64):
    """Held-out pairwise accuracy, margin, loss and the mean reward of each kind of answer."""
    was_training = model.training
    model.eval()
    rewards = []
    for start in range(0, len(comparisons), batch_size):
        with autocast(device, dtype):
            rewards += forward_comparisons(model, comparisons[start:start + batch_size], pad_id, device)
    model.train(was_training)
    rewards = [r.float() for r in rewards]
    stats = pair_stats(rewards, comparisons)
    stats["loss"] = comparison_loss(rewards, comparisons, loss, margin).item()
    by_kind = {}
    for r, c in zip(rewards, comparisons):
        for value, kind in zip(r.tolist(), c.kinds):
            by_kind.setdefault(kind or "unlabelled", []).append(value)
    stats["kind_rewards"] = {k: sum(v) / len(v) for k, v in by_kind.items()}
    stats["kind_counts"] = {k: len(v) for k, v in by_kind.items()}
    by_pair = {}  # "correct > hallucinated" needs knowledge, "refusal > harmful" only style
    for r, c in zip(rewards, comparisons):
        for w, l in c.pairs:
            by_pair.setdefault(f"{c.kinds[w] or '?'} > {c.kinds[l] or '?'}", []).append(float(r[w] > r[l]))
    stats["pair_accuracy"] = {k: sum(v) / len(v) for k, v in by_pair.items()}
    return stats


def format_kind_table(kind_rewards, kind_counts):
    """The reward model's taste: mean reward per kind of answer, best first."""
    lines = [f"{'kind of answer':<22}{'n':>6}{'mean reward':>14}"]
    for kind in sorted(kind_rewards, key=kind_rewards.get, reverse=True):
        lines.append(f"{kind:<22}{kind_counts[kind]:>6}{kind_rewards[kind]:>+14.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- normalisation

@torch.no_grad()
def center_rewards(model, tokenizer, prompts, answers):
    """Shift the score head's bias so the given answers score 0 on average; returns the shift.
    Bradley-Terry only sees differences, so the ordering of every pair is unchanged."""
    was_training = model.training
    model.eval()
    rewards = reward_scores(model, tokenizer, prompts, answers)
    offset = -sum(rewards) / len(rewards)
    model.score_head.bias += offset
    model.train(was_training)
    return offset


def sample_prompts(path, n, seed, tokenizer):
    """n prompts for the normalisation samples: PPO's prompts (data/prompts.jsonl), cycled if short."""
    if n <= 0:
        return []
    if not os.path.exists(path):
        raise UserError(f"prompts file not found ({path}) — pass --prompts FILE, "
                        "or --norm-samples 0 to skip centring")
    prompts = [r["prompt"] for r in read_jsonl(path, required=("prompt",))]
    for prompt in prompts:
        try:
            tokenizer.encode(prompt)
        except ValueError as exc:
            raise UserError(f"{exc} in {prompt!r} ({path}) — use only characters the tokenizer knows") from None
    if not prompts:
        raise UserError(f"no prompts in {path} — add {{\"prompt\": ...}} lines or pass --norm-samples 0")
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
    return [prompts[order[i % len(prompts)]] for i in range(n)]


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a reward model on preference pairs and rankings.")
    # a batch here counts prompts, each bringing all of its ranked answers (2 to 4 sequences)
    add_common_args(parser, helps={"batch_size": "prompts per micro-batch, each with all of its answers"},
                    data="data/prefs.jsonl", max_steps=400, batch_size=16, lr=6e-4, warmup_steps=15,
                    eval_interval=50, log_interval=5)
    a = parser.add_argument
    a("--loss", default="bt", choices=["bt", "hinge", "mse"], help="bt: Bradley-Terry −log σ(r_w − r_l); hinge: "
      "margin ranking; mse: regression on each answer's 'score' (default: %(default)s)")
    a("--margin", type=float, default=None, help="margin m of the pair loss (default: 0 for bt, 1 for hinge)")
    a("--freeze-layers", type=int, default=0, help="freeze the embeddings and this many lower blocks; only the "
      "blocks above and the score head learn; 0 = train every weight (default: %(default)s)")
    a("--prompts", default="data/prompts.jsonl", help="prompts whose SFT samples define reward 0 (default: "
        "%(default)s)")
    a("--norm-samples", type=int, default=96, help="SFT samples used to centre the reward; 0 = do not centre "
      "(default: %(default)s)")
    a("--likelihood-weight", type=float, default=3.0, help="α: add α × the answer's mean log-likelihood under the "
      "model's own LM head to the reward; 0 = the scalar head alone (default: %(default)s)")
    args = parser.parse_args(argv)
    require_positive(args, "batch_size", "grad_accum", "eval_interval", "log_interval")
    args.init = args.init or os.path.join(args.out_dir, "sft.pt")
    if args.likelihood_weight < 0:
        raise UserError(f"--likelihood-weight {args.likelihood_weight} is negative — use 0 (off) or a positive α")
    if args.margin is None:
        args.margin = 1.0 if args.loss == "hinge" else 0.0
    return args


# ----------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What the loop works with. raw_model is the RewardModel; model is what the forward pass goes
    through (torch.compile'd, or raw_model itself)."""
    args: argparse.Namespace
    device: str
    raw_model: RewardModel
    model: torch.nn.Module
    policy: torch.nn.Module      # the SFT model: it samples the answers that define reward 0
    tokenizer: object
    train: list                  # Comparisons
    val: list
    prompts: list                # prompts of the centring samples
    log: MetricsLog


def build_reward_model(args, device):
    """The SFT model's body under a new score head (its LM head kept for the likelihood term)."""
    policy, tokenizer, sft = load_policy(args.init, device)
    raw_model = RewardModel(policy.cfg, args.likelihood_weight)
    raw_model.backbone.load_state_dict(policy.state_dict())
    raw_model.to(device)
    if args.freeze_layers:
        if not 0 <= args.freeze_layers <= policy.cfg.n_layer:
            raise UserError(f"--freeze-layers {args.freeze_layers} is out of range — use 0..{policy.cfg.n_layer}")
        body = raw_model.backbone
        frozen = [body.wte, body.wpe, *body.blocks[:args.freeze_layers]]
        for p in (p for m in frozen for p in m.parameters()):
            p.requires_grad_(False)
    return raw_model, policy, tokenizer


def load_comparisons(args, tokenizer, block_size):
    """(train, held-out) comparisons, tokenised once; those the chosen loss cannot use are dropped."""
    comparisons = read_preferences(args.data)
    truncated = encode(tokenizer, comparisons, block_size, args.data)
    if args.loss == "mse":
        comparisons = [c for c in comparisons if any(s is not None for s in c.scores)]
        if not comparisons:
            raise UserError(f"--loss mse needs answers with a numeric 'score' ({args.data}) — "
                            "use --loss bt for pairs and rankings")
    else:
        comparisons = [c for c in comparisons if c.pairs]
    train = [c for c in comparisons if c.split == "train"]
    val = [c for c in comparisons if c.split != "train"]  # held out ("val"), as in dpo.py
    if not train or not val:
        raise UserError(f"need both 'train' and 'val' comparisons in {args.data} (found {len(train)} and "
                        f"{len(val)}) — mark held-out lines with \"split\": \"val\"")
    print(f"{len(train)} training prompts ({sum(len(c.pairs) for c in train)} pairs), {len(val)} held-out prompts "
          f"({sum(len(c.pairs) for c in val)} pairs); {truncated} answers truncated to {block_size} tokens")
    return train, val


def setup(args, device):
    raw_model, policy, tokenizer = build_reward_model(args, device)
    cfg = raw_model.cfg
    prompts = sample_prompts(args.prompts, args.norm_samples, args.seed, tokenizer)  # read now: fail before training
    train, val = load_comparisons(args, tokenizer, cfg.block_size)
    n_train = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
    frozen = f"embeddings and {args.freeze_layers} lower blocks frozen" if args.freeze_layers else "nothing frozen"
    print(f"reward model: {cfg.n_layer} layers x {cfg.n_embd}, {frozen}, {n_train:,} trainable parameters; "
          f"loss {args.loss} (margin {args.margin}), {device}")
    if args.likelihood_weight:
        print(f"reward = last-token head + {args.likelihood_weight:g} x the answer's mean log-likelihood "
              "(LM head kept)")
    model = torch.compile(raw_model) if args.compile else raw_model
    log = MetricsLog(os.path.join(args.out_dir, "reward.jsonl"))
    return Run(args, device, raw_model, model, policy, tokenizer, train, val, prompts, log)


# ----------------------------------------------------------------------------- training

def train(run):
    """The loop: Bradley-Terry (or hinge, or MSE) on batches of prompts, warmup + cosine, held-out
    accuracy every eval_interval steps, early stopping; the best weights are restored at the end.
    Returns the held-out statistics of those weights."""
    args, device, pad_id = run.args, run.device, run.tokenizer.pad_id
    optimizer = configure_optimizer(run.raw_model, args.lr, fused=torch.device(device).type == "cuda")
    scaler = grad_scaler(device, args.dtype)
    validate = lambda step: held_out(run, step)  # noqa: E731
    final = validate(0)
    print(f"before training: held-out accuracy {100 * final.get('accuracy', float('nan')):.1f}% "
          f"(val_loss {final['loss']:.3f}; chance is 50%)")
    stream = batches(run.train, args.batch_size, args.seed)
    early = EarlyStopping(run.raw_model, args.patience)
    early.update(final["loss"], 0)
    step, bar = 0, tqdm(range(1, args.max_steps + 1), desc="reward", dynamic_ncols=True)
    for step in bar:
        lr = set_lr(optimizer, step - 1, args.warmup_steps, args.max_steps)
        for _ in range(args.grad_accum):
            batch = next(stream)
            with autocast(device, args.dtype):
                rewards = forward_comparisons(run.model, batch, pad_id, device)
            loss = comparison_loss(rewards, batch, args.loss, args.margin)
            scaler.scale(loss / args.grad_accum).backward()
        optimizer_step(optimizer, scaler, run.raw_model.parameters())

        if step % args.log_interval == 0 or step == args.max_steps:
            stats = pair_stats([r.detach() for r in rewards], batch)
            run.log.log(step=step, loss=loss.item(), lr=lr, **stats)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{stats.get('accuracy', float('nan')):.2f}")
        if step % args.eval_interval == 0 or step == args.max_steps:
            s = validate(step)
            tqdm.write(f"step {step}: val_loss {s['loss']:.4f} val_accuracy "
                       f"{100 * s.get('accuracy', float('nan')):.1f}% val_margin {s.get('margin', float('nan')):.2f}")
            if early.update(s["loss"], step):
                final = s
            if early.stop:
                tqdm.write(f"early stop: no better val_loss in {args.patience} validations")
                break
    bar.close()
    early.restore()  # the weights of the best validation, whose statistics `final` holds
    final.update(steps=step, best_step=early.best_step)
    return final


def held_out(run, step):
    """Held-out statistics, logged."""
    s = evaluate_rewards(run.model, run.val, run.tokenizer.pad_id, run.device, run.args.dtype, run.args.loss,
                         run.args.margin)
    run.log.log(step=step, val_loss=s["loss"], val_accuracy=s.get("accuracy"), val_margin=s.get("margin"))
    return s


# ----------------------------------------------------------------------------- after training

def centre(run):
    """The SFT model's own answers define reward 0 for PPO. Every reward moves by the same offset, so
    accuracy and margins stand; the per-kind means move with it. Returns the offset."""
    if not run.prompts:
        return 0.0
    answers = generate_answers(run.policy, run.tokenizer, run.prompts, run.device,
                               max_new_tokens=min(64, run.raw_model.cfg.block_size // 2), temperature=1.0,
                               generator=torch.Generator(run.device).manual_seed(run.args.seed))
    offset = center_rewards(run.raw_model, run.tokenizer, run.prompts, answers)
    print(f"centred on {len(run.prompts)} SFT samples: bias shifted by {offset:+.3f}")
    return offset


def report(run, final, offset, started):
    """The reward model's taste per kind, the hardest comparisons held out and seen, the checkpoint."""
    args = run.args
    kind_rewards = {kind: r + offset for kind, r in final["kind_rewards"].items()}
    kind_counts = dict(final["kind_counts"])
    if run.prompts:
        kind_rewards["sft sample"], kind_counts["sft sample"] = 0.0, len(run.prompts)
    print("mean reward per kind of held-out answer (SFT samples define 0):")
    print(format_kind_table(kind_rewards, kind_counts))
    # the same comparisons on the training prompts: a kind far better there than held out was
    # memorised (which training answer won), not learned as a rule the model can apply elsewhere
    seen = evaluate_rewards(run.raw_model, run.train, run.tokenizer.pad_id, run.device, args.dtype, args.loss,
                            args.margin)
    hardest = sorted(final.get("pair_accuracy", {}).items(), key=lambda kv: kv[1])[:5]
    if hardest:
        print("hardest held-out comparisons: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in hardest))
        print(f"the same on training prompts: accuracy {100 * seen.get('accuracy', float('nan')):.1f}%, "
              + ", ".join(f"{k} {100 * seen['pair_accuracy'].get(k, float('nan')):.0f}%" for k, _ in hardest))
    metrics = {k: final[k] for k in ("accuracy", "margin", "loss") if k in final}
    out = args.out_dir
    save_checkpoint(os.path.join(out, "reward.pt"), run.raw_model, run.tokenizer, stage="reward", step=final["steps"],
                    loss=args.loss, margin=args.margin, reward_offset=offset, likelihood_weight=args.likelihood_weight,
                    metrics=metrics, kind_rewards=kind_rewards, pair_accuracy=final.get("pair_accuracy", {}),
                    best_step=final["best_step"], init=args.init, args=vars(args))
    run.log.plot(os.path.join(out, "reward.png"), ["loss", "accuracy", "val_accuracy", "val_margin"],
                 title="reward model: pairwise loss and agreement with labelers")
    elapsed = time.time() - started
    run.log.summary(val_accuracy=final.get("accuracy"), val_margin=final.get("margin"), val_loss=final["loss"],
                    train_accuracy=seen.get("accuracy"), train_pair_accuracy=seen.get("pair_accuracy"),
                    reward_offset=offset, kind_rewards=kind_rewards, pair_accuracy=final.get("pair_accuracy"),
                    wall_s=round(elapsed, 1), steps=final["steps"], best_step=final["best_step"])
    acc = f"{100 * final['accuracy']:.1f}%" if "accuracy" in final else "n/a"
    print(f"summary: held-out accuracy {acc} | margin {final.get('margin', float('nan')):.2f} | "
          f"val_loss {final['loss']:.3f} | {int(elapsed // 60)}m{int(elapsed % 60):02d}s")


def main(argv=None):
    started = time.time()
    args = parse_args(argv)
    set_seed(args.seed)
    device = pick_device(args.device)
    if device == "cpu":  # the course machine shares 2 cores; more threads only fight over them
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    run = setup(args, device)
    final = train(run)
    report(run, final, centre(run), started)
    return final


if __name__ == "__main__":
    run_main(main)
