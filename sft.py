"""Supervised fine-tuning (SFT): turn a base model into an assistant.

A base model continues text. Asked "What is the capital of Norway?" it writes what tends to follow
a question in its corpus: a forum reply, then the next post, or another question. SFT shows it a
few thousand demonstrations of the behaviour we want, (prompt, answer) pairs written out in one
chat template,

    User: {prompt}\\nAssistant: {response}<|eos|>            (a conversation repeats the pair)

and trains it with the same next-token cross-entropy as pretraining, with one change: only the
tokens the assistant says are predicted. With m_t = 1 on assistant tokens and 0 elsewhere,

    L_SFT = - sum_t m_t · log p(x_{t+1} | x_<=t) / sum_t m_t

The prompt (every user turn of a conversation) is context, not something to imitate: its tokens
get the label -100, which the loss ignores. The `<|eos|>` closing each assistant turn *is*
supervised — it is how the model learns to stop; masking it along with the padding (easy when
pad and eos are the same token) gives a model that never stops. Here `<|pad|>` is its own token.
The sum over t runs over the whole batch, so with --grad-accum the micro-batches' token losses
are added up and divided once by the supervised tokens of all of them (`supervised_loss`):
accumulating two batches of 16 gives exactly the gradient of one batch of 32.

Data formats. data/sft.jsonl holds both formats of the readings: an instruction with an optional
input, {"instruction", "input", "output"} (the user prompt is the instruction, a newline, then the
input), and multi-turn conversations, {"conversation": [{"role", "content"}, ...]}. Both become a
list of turns and go through model.build_example, the one implementation of the template, the
label mask and the truncation rule (the reward model and DPO use it too). `render_example` prints
a training example with the supervised tokens in [brackets].

Padding and truncation. A batch is right-padded to its longest example; padding is masked out of
attention and has label -100, so it changes neither the other tokens nor the loss. An example
longer than the context is cut by a stated rule: keep the final answer and the end of the prompt
(the question sits at the end of a prompt, what is cut is the oldest context); the count of
truncated examples is printed.

Fine-tuning habits. The pretrained weights already hold the knowledge; SFT should teach the format
without overwriting it (catastrophic forgetting), so it uses a smaller peak learning rate than
pretraining, linear warmup then cosine decay, validation loss every --eval-interval steps with
early stopping (--patience; the best weights are kept), and optionally freezes the bottom N
blocks (--freeze-layers). Full fine-tuning updates every weight. Parameter-efficient fine-tuning
(--peft, see lora.py) freezes them all and trains a few percent of new ones, in one of three places:

    --peft lora     W' = W + (alpha/r)·B·A on the attention projections (--lora-rank r alone means it too)
    --peft adapter  h <- h + W_up f(W_down LN(h)) after the attention and the MLP of every block
                    (--adapter-size m, the bottleneck)
    --peft prefix   attention over [P_k; K] and [P_v; V]: L trained keys and values in front of every
                    layer's own (--prefix-len L)

LoRA is merged into W before saving, so its checkpoint is a plain transformer. Adapters and a prefix
cannot be merged (an adapter is nonlinear, a prefix is extra keys): their checkpoint records the
method and its sizes, and plumbing.load_model, which every stage uses, rebuilds them before loading.

Replay: keep pretraining while fine-tuning. A few epochs over a few thousand answers pull the weights
towards those answers: a question about a fact SFT never showed ("What is the capital of Serbia?")
drifts onto a trained one that starts alike ("The capital of Slovakia is Bratislava."). So every step also
takes the pretraining loss on --replay-windows random windows of the corpus, with weight gamma:

    L = L_SFT + gamma · L_LM(corpus windows)

which keeps the base model's skills in use: copying the name from the question, recalling what the
corpus said about it. Mixing pretraining data into later stages is standard (InstructGPT adds the
same term to PPO, "PPO-ptx"). The validation loss stays the SFT loss alone. --replay-weight 0 turns
it off. Two cases leave it off unless asked for: --init scratch has no pretraining to keep, and the
parameter-efficient methods (--peft) keep it by construction: every pretrained weight stays frozen.

What pretraining buys (--init scratch): the same SFT from random weights learns the format — it
answers in one sentence and stops — but not the facts SFT never showed it (heldout_fact): those
only exist in the pretraining corpus.

Run it:
    python sft.py                          full fine-tuning of out/pretrain.pt -> out/sft.pt
    python sft.py --lora-rank 8 --name sft_lora8     LoRA -> out/sft_lora8.pt; prints the trainable fraction
    python sft.py --peft adapter --name sft_adapter  adapters -> out/sft_adapter.pt
    python sft.py --peft prefix --name sft_prefix    prefix tuning -> out/sft_prefix.pt
    python sft.py --init scratch --name sft_scratch  SFT from random weights -> out/sft_scratch.pt
    python sft.py --replay-weight 0 --name sft_noreplay  SFT alone, no replay: compare heldout_fact
(--name keeps a variant beside out/sft.pt, which is what reward.py, ppo.py and dpo.py read.)
What to look for: the bracketed example at start-up (what is trained on), training and
validation loss in out/sft.png, and the table at the end: gold pass rate per kind of the base
model and of the SFT model on data/eval.jsonl, the share of answers in the assistant's format (one
sentence, then stop), and a few answers side by side. `unknown` stays low and `harmful` is only
partly refused, on purpose: the SFT data holds few honest answers and refusals; reward modelling,
PPO, DPO and GRPO are the stages that fix them. Note what the validation loss cannot see: its
prompts ask about the same facts as training, so it keeps falling while `heldout_fact` (what only
pretraining taught) can already be sinking — forgetting is measured on held-out knowledge.
"""

import argparse
import os
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from lora import (ADAPTER_SITES, ADAPTER_SIZE, DEFAULT_TARGETS, LORA_RANK, PEFT_METHODS, PREFIX_LEN, apply_peft,
                  count_parameters, merge_lora, peft_state_dict)
from model import Transformer, configure_optimizer, optimizer_step, pad_batch, set_lr
from model import build_example as chat_example
from plumbing import (EarlyStopping, MetricsLog, UserError, add_common_args, answer_format, autocast, batches,
                      encode_corpus, evaluate, format_pass_rates, grad_scaler, load_policy, pick_device, random_windows,
                      read_jsonl, read_text, require_positive, run_main, save_checkpoint, set_seed)

SFT_KINDS = ("fact", "heldout_fact", "unknown", "harmful", "task")  # the prompts in chat format
FULL_LR, SCRATCH_LR = 3e-4, 1e-3  # peak learning rates when --lr is not given ...
# ... and for the parameter-efficient methods' new weights, each picked by SFT runs on the default model. A
# prefix takes the largest steps: its entries are keys and values, of the size of activations, not small weights.
LORA_LR, ADAPTER_LR, PREFIX_LR = 4e-3, 1e-2, 3e-2
PEFT_LR = {"lora": LORA_LR, "adapter": ADAPTER_LR, "prefix": PREFIX_LR}
METHOD_NAMES = {"lora": "LoRA rank {rank}, alpha {alpha:g}", "adapter": "adapters of size {size} after {sites}",
                "prefix": "a prefix of {prefix_len} keys and values per layer"}
REPLAY_WEIGHT = 1.0  # gamma of the replayed pretraining loss when --replay-weight is not given


# ----------------------------------------------------------------------------- data -> supervised tokens

def record_turns(record, where="sft data"):
    """One data/sft.jsonl record, either format, as turns [{"role", "content"}, ...]."""
    if "conversation" in record:
        turns = record["conversation"]
        roles = [t.get("role") if isinstance(t, dict) else None for t in turns]
        expected = ["user", "assistant"] * (len(turns) // 2)
        if not turns or roles != expected or not all(isinstance(t.get("content"), str) for t in turns):
            raise UserError(f"conversation must alternate user/assistant turns with string content and end "
                            f"with the assistant ({where}) — fix the record's roles")
        return [{"role": t["role"], "content": t["content"]} for t in turns]
    if "instruction" in record and "output" in record:
        prompt = record["instruction"] + ("\n" + record["input"] if record.get("input") else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    raise UserError(f"record has neither \"conversation\" nor \"instruction\" + \"output\" ({where}) — "
                    "give it one of the two formats of data/README.md")


def build_example(tokenizer, record, block_size, where="sft data"):
    """(ids, labels, truncated) for one SFT record: labels = ids on what the assistant says (its
    <|eos|> included), -100 on the prompt; at most block_size + 1 tokens (see model.build_example)."""
    return chat_example(tokenizer, record_turns(record, where), block_size)


def render_example(tokenizer, ids, labels):
    """The example as text with the supervised (trained-on) tokens in [brackets]."""
    out, inside = [], False
    for token, label in zip(ids, labels):
        supervised = label != -100
        if supervised != inside:
            out.append("[" if supervised else "]")
            inside = supervised
        out.append(tokenizer.decode([token]))
    return "".join(out) + ("]" if inside else "")


def load_examples(path, tokenizer, block_size):
    """{"train": [(ids, labels)], "val": [...]}, the raw records, and how many were truncated."""
    records = read_jsonl(path)
    splits, truncated = {"train": [], "val": []}, 0
    for i, record in enumerate(records, 1):
        where = f"{path}, record {i}"
        split = record.get("split", "train")
        if split not in splits:
            raise UserError(f"unknown split {split!r} ({where}) — use \"train\" or \"val\"")
        try:
            ids, labels, cut = build_example(tokenizer, record, block_size, where)
        except ValueError as exc:  # the tokenizer met a character it has no id for
            raise UserError(f"{exc} ({where}) — use only characters of the pretraining corpus") from None
        splits[split].append((ids, labels))
        truncated += cut
    if not splits["train"]:
        raise UserError(f"no training examples ({path}) — records need \"split\": \"train\"")
    return splits, records, truncated


# ----------------------------------------------------------------------------- the loss

def supervised_loss(model, batch, pad_id, device, dtype, n_supervised):
    """Σ_t m_t · (−log p(x_{t+1} | x_<=t)) over one micro-batch, divided by n_supervised, the supervised
    tokens of every micro-batch of the optimizer step: the step's gradient is then that of L_SFT over
    all of its examples at once, however they were split. Returns (loss, its mean per token here)."""
    x, y, mask = pad_batch(batch, pad_id, device)
    with autocast(device, dtype):
        _, mean_loss = model(x, targets=y, attention_mask=mask)
    return mean_loss * ((y != -100).sum() / n_supervised), mean_loss


def n_supervised_tokens(batch):
    """The tokens whose labels are not -100, as pad_batch shifts them (labels[1:])."""
    return sum(sum(t != -100 for t in labels[1:]) for _, labels in batch)


def freeze_bottom_layers(net, n):
    """Stop training the position embedding and the lowest n blocks: the generic features nearest
    the input change least in fine-tuning. The token embedding is also the output head (tied), so it
    keeps training."""
    if not 0 <= n <= net.cfg.n_layer:
        raise UserError(f"--freeze-layers {n} is out of range — the model has {net.cfg.n_layer} blocks")
    if n == 0:
        return
    net.wpe.weight.requires_grad_(False)
    for block in net.blocks[:n]:
        for p in block.parameters():
            p.requires_grad_(False)


@torch.no_grad()
def validation_loss(model, examples, batch_size, pad_id, device, dtype):
    """Mean loss per supervised token over all of `examples`."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y, mask = pad_batch(examples[i:i + batch_size], pad_id, device)
        with autocast(device, dtype):
            _, loss = model(x, targets=y, attention_mask=mask)
        n = (y != -100).sum().item()
        total, count = total + loss.item() * n, count + n
    model.train(was_training)
    return total / max(count, 1)


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Supervised fine-tuning: base model + demonstrations -> assistant.")
    add_common_args(parser, data="data/sft.jsonl", max_steps=600, batch_size=32, lr=None, warmup_steps=20,
                    eval_interval=50, log_interval=10, patience=3)
    a = parser.add_argument
    a("--eval-data", default="data/eval.jsonl", help="prompts with gold answers (default: %(default)s)")
    a("--eval-limit", type=int, default=None, help="evaluate only the first N prompts of each kind; 0 skips "
      "evaluation (default: all)")
    a("--name", default="sft", help="output file stem under --out-dir, e.g. sft_lora8 (default: %(default)s)")
    a("--freeze-layers", type=int, default=0, help="freeze the bottom N blocks (default: %(default)s)")
    a("--peft", choices=list(PEFT_METHODS), default=None, help="train only the new weights of a parameter-efficient "
      "method, every pretrained weight frozen: lora (W' = W + BA), adapter (bottleneck layers in every block), "
      "prefix (prefix tuning) (default: full fine-tuning, every weight)")
    a("--lora-rank", type=int, default=None, help=f"rank r of LoRA's B A; alone it means --peft lora, 0 = full "
      f"fine-tuning (default: {LORA_RANK} with --peft lora)")
    a("--lora-alpha", type=float, default=16.0, help="LoRA scale: ΔW = (alpha/r)·B·A (default: %(default)s)")
    a("--lora-targets", default=",".join(DEFAULT_TARGETS),
      help="comma-separated layers LoRA adapts (default: %(default)s)")
    a("--adapter-size", type=int, default=ADAPTER_SIZE, help="bottleneck width m of each adapter "
      "(default: %(default)s)")
    a("--adapter-where", default=",".join(ADAPTER_SITES), help="comma-separated sublayers of every block an "
      "adapter follows: attn, mlp (default: %(default)s)")
    a("--prefix-len", type=int, default=PREFIX_LEN, help="prefix keys and values per layer (default: %(default)s)")
    a("--replay-data", default="data/corpus.txt", help="pretraining text replayed during SFT (default: %(default)s)")
    a("--replay-weight", type=float, default=None, help="gamma: weight of the replayed next-token loss; 0 = no "
      f"replay (default: {REPLAY_WEIGHT:g}, 0 with --init scratch or --peft)")
    a("--replay-windows", type=int, default=16, help="corpus windows (of the full context) replayed per "
      "micro-batch (default: %(default)s)")
    parser.epilog = (f"--init defaults to <out-dir>/pretrain.pt; --init scratch keeps its architecture and tokenizer "
                     f"but starts from random weights. Without --lr the peak learning rate is {FULL_LR:g} for full "
                     f"fine-tuning (pretraining uses 5e-3), {LORA_LR:g} for LoRA, {ADAPTER_LR:g} for adapters, "
                     f"{PREFIX_LR:g} for a prefix and {SCRATCH_LR:g} from scratch.")
    args = parser.parse_args(argv)
    require_positive(args, "batch_size", "grad_accum", "eval_interval", "log_interval", "replay_windows",
                     "adapter_size", "prefix_len")
    if (args.lora_rank or 0) < 0 or args.freeze_layers < 0:
        raise UserError("--lora-rank and --freeze-layers must be 0 or more")
    if args.peft is None and args.lora_rank:  # --lora-rank r alone means --peft lora
        args.peft = "lora"
    if args.peft == "lora":
        args.lora_rank = LORA_RANK if args.lora_rank is None else args.lora_rank
        if args.lora_rank < 1:
            raise UserError("--peft lora needs --lora-rank 1 or more — drop --lora-rank for rank "
                            f"{LORA_RANK}, or drop --peft for full fine-tuning")
    elif args.lora_rank:
        raise UserError(f"--lora-rank is LoRA's size, not the {args.peft} method's — drop it, or pass --peft lora")
    args.peft_config = peft_settings(args)
    args.from_scratch = args.init == "scratch"
    args.source = os.path.join(args.out_dir, "pretrain.pt") if args.from_scratch or args.init is None else args.init
    if args.lr is None:
        # small steps keep what pretraining learnt; a method's few new weights start from nothing (zero,
        # or a prefix of random tokens) and random weights have nothing to keep, so both take bigger ones
        args.lr = SCRATCH_LR if args.from_scratch else PEFT_LR[args.peft] if args.peft else FULL_LR
    if args.replay_weight is None:  # nothing to keep from scratch; a method's frozen base keeps it already
        args.replay_weight = 0.0 if args.from_scratch or args.peft else REPLAY_WEIGHT
    if args.replay_weight < 0:
        raise UserError(f"--replay-weight must be 0 or more, got {args.replay_weight:g}")
    return args


# ----------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What the loop works with. raw_model is the plain network (adapters included); model is what the
    forward pass goes through (torch.compile'd, or raw_model itself)."""
    args: argparse.Namespace
    device: str
    raw_model: Transformer
    model: torch.nn.Module
    tokenizer: object
    train: list                 # (ids, labels) examples
    val: list
    replay: torch.Tensor        # the pretraining corpus as tokens, or None
    method: str                 # "full fine-tuning", "LoRA rank 8, alpha 16", ...
    log: MetricsLog


def setup(args, device):
    """The starting model (pretrained or random), the examples, what trains, and the replay corpus."""
    raw_model, tokenizer, ckpt = load_policy(args.source, device)
    if args.from_scratch:
        raw_model = Transformer(raw_model.cfg).to(device)
        print(f"--init scratch: random weights, architecture and tokenizer of {args.source}")
    else:
        print(f"init: {args.source} (stage {ckpt.get('stage', '?')}, {raw_model.num_params():,} parameters)")
    if tokenizer.pad_id == tokenizer.eos_id:
        raise UserError("the tokenizer's <|pad|> is its <|eos|> — masking padding would mask the stop token too; "
                        "retrain the tokenizer with distinct specials")
    block_size = raw_model.cfg.block_size
    splits, records, truncated = load_examples(args.data, tokenizer, block_size)
    print(f"data: {len(splits['train'])} train / {len(splits['val'])} val examples from {args.data}; truncated "
          f"{truncated} longer than {block_size + 1} tokens (kept the final answer and the end of the prompt)")
    for fmt in ("instruction", "conversation"):
        i = next((i for i, r in enumerate(records) if fmt in r), None)
        if i is not None:
            ids, labels, _ = build_example(tokenizer, records[i], block_size)
            print(f"\none {fmt} example, [supervised tokens] in brackets:\n{render_example(tokenizer, ids, labels)}")
    return raw_model, tokenizer, splits, truncated


def peft_settings(args):
    """The method and its sizes from the flags, as lora.apply_peft takes them; None for full fine-tuning."""
    sizes = {"lora": dict(rank=args.lora_rank, alpha=args.lora_alpha, targets=comma_list(args.lora_targets)),
             "adapter": dict(size=args.adapter_size, where=comma_list(args.adapter_where)),
             "prefix": dict(prefix_len=args.prefix_len)}
    return dict(method=args.peft, **sizes[args.peft]) if args.peft else None


def comma_list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def choose_trainable(raw_model, args):
    """A method's new weights only (lora.py), or every weight above the frozen bottom layers. Returns
    the method's name."""
    config, method = args.peft_config, "full fine-tuning"
    if config:
        apply_peft(raw_model, config)
        method = METHOD_NAMES[config["method"]].format(sites=" and ".join(config.get("where", ())), **config)
    freeze_bottom_layers(raw_model, args.freeze_layers)
    return method + (" from scratch" if args.from_scratch else "")


def replay_corpus(args, tokenizer, block_size):
    """The pretraining text as a token tensor for replay, or None when --replay-weight is 0."""
    if args.replay_weight <= 0:
        print("replay: off")
        return None
    ids = encode_corpus(read_text(args.replay_data), tokenizer, os.path.join(args.out_dir, "cache"))
    if len(ids) <= block_size + 1:
        raise UserError(f"replay text too short: {len(ids)} tokens, fewer than one window of {block_size + 1} "
                        f"({args.replay_data}) — pass the pretraining corpus, or --replay-weight 0")
    print(f"replay: {args.replay_windows} windows of {block_size + 1} tokens per batch from {args.replay_data} "
          f"({len(ids):,} tokens), weight {args.replay_weight:g}")
    return torch.from_numpy(ids)


# ----------------------------------------------------------------------------- training

def finetune(run):
    """The loop: AdamW on the trainable weights, warmup + cosine, validation loss every eval_interval
    steps, early stopping with the best weights restored. Returns a dict of results."""
    args, device, pad_id = run.args, run.device, run.tokenizer.pad_id
    optimizer = configure_optimizer(run.raw_model, args.lr, fused=torch.device(device).type == "cuda")
    scaler = grad_scaler(device, args.dtype)
    stream = batches(run.train, args.batch_size, args.seed)
    replay_draws = torch.Generator().manual_seed(args.seed)  # its own stream: the SFT batches stay the same
    trainable = [p for p in run.raw_model.parameters() if p.requires_grad]
    val_loss = lambda: validation_loss(run.model, run.val, args.batch_size, pad_id, device, args.dtype)  # noqa: E731
    early = EarlyStopping(run.raw_model, args.patience)
    if run.val:
        early.update(val_loss(), 0)
        print(f"validation loss before SFT: {early.best_loss:.4f}")
        run.log.log(step=0, val_loss=early.best_loss)
    run.model.train()
    step, bar = 0, tqdm(range(1, args.max_steps + 1), desc=args.name, dynamic_ncols=True)
    for step in bar:
        lr = set_lr(optimizer, step - 1, args.warmup_steps, args.max_steps)
        micro_batches = [next(stream) for _ in range(args.grad_accum)]
        n_supervised = sum(n_supervised_tokens(b) for b in micro_batches)
        loss_sum, replay_sum = 0.0, 0.0
        for batch in micro_batches:
            loss, mean_loss = supervised_loss(run.model, batch, pad_id, device, args.dtype, n_supervised)
            if run.replay is not None:
                window = random_windows(run.replay, args.replay_windows, run.raw_model.cfg.block_size + 1,
                                        replay_draws).to(device)
                with autocast(device, args.dtype):
                    _, replay_loss = run.model(window[:, :-1], targets=window[:, 1:])
                loss = loss + args.replay_weight * replay_loss / args.grad_accum
                replay_sum += replay_loss.item() / args.grad_accum
            scaler.scale(loss).backward()
            loss_sum += mean_loss.item() / args.grad_accum
        optimizer_step(optimizer, scaler, trainable)
        metrics = dict(step=step, loss=loss_sum, lr=lr)
        if run.replay is not None:
            metrics["replay_loss"] = replay_sum
        if run.val and (step % args.eval_interval == 0 or step == args.max_steps):
            metrics["val_loss"] = val_loss()
            early.update(metrics["val_loss"], step)
            bar.set_postfix(loss=f"{loss_sum:.3f}", val=f"{metrics['val_loss']:.3f}")
        if step % args.log_interval == 0 or "val_loss" in metrics:
            run.log.log(**metrics)
        if early.stop:
            tqdm.write(f"early stopping at step {step}: validation loss has not improved for "
                       f"{early.bad_evals} evaluations")
            break
    bar.close()
    if run.val:
        early.restore()
        print(f"best validation loss {early.best_loss:.4f} at step {early.best_step} (restored)")
    else:
        print("no validation split: no early stopping, the last weights are kept")
        early.best_step, early.best_loss = step, None
    run.raw_model.eval()
    return dict(steps=step, best_step=early.best_step, val_loss=early.best_loss, train_loss=loss_sum)


# ----------------------------------------------------------------------------- evaluation and main

def eval_subset(records, limit):
    """The chat-format eval prompts, the first `limit` of each kind (None: all)."""
    chosen = []
    for kind in SFT_KINDS:
        group = [r for r in records if r["kind"] == kind]
        chosen += group if limit is None else group[:limit]
    return chosen


def side_by_side(base_graded, sft_graded):
    print("\nside by side (greedy):")
    for kind in SFT_KINDS:
        for before, after in [(b, a) for b, a in zip(base_graded, sft_graded) if b["kind"] == kind][:1]:
            print(f"  [{kind}] User: {before['prompt']}")
            for name, r in (("base", before), ("sft", after)):
                print(f"      {name + ':':<5} {r['output'][:70]!r} {'PASS' if r['passed'] else 'fail'}")


def report(run, result, base, trainable, total, truncated, started):
    """Merge LoRA into W, evaluate against the starting model, save the checkpoint, plot, summarise.
    Adapters and a prefix stay in the network: save_checkpoint records them for load_model."""
    args = run.args
    extra = {}
    if args.peft == "lora":  # saved merged: a plain transformer every later stage loads as usual;
        extra["lora"] = dict(rank=args.lora_rank, alpha=args.lora_alpha, targets=args.peft_config["targets"],
                             state=peft_state_dict(run.raw_model))  # the adapter alone (about 100 KiB) rides along
        merge_lora(run.raw_model)
    rates, formats = {}, {}
    if base["records"]:
        print(f"\nevaluating the SFT model on {len(base['records'])} prompts ...")
        rates, graded = evaluate(run.raw_model, run.tokenizer, base["records"], run.device)
        formats = {"base": answer_format(base["graded"]), "sft": answer_format(graded)}
        print("\n" + format_pass_rates({"base": base["rates"], "sft": rates}))
        print(f"{'answer format':<15}" + "".join(f"{100 * v:>11.1f}%" for v in formats.values())
              + "   (one sentence, then <|eos|>; right or wrong)")
        side_by_side(base["graded"], graded)
    path = os.path.join(args.out_dir, f"{args.name}.pt")
    save_checkpoint(path, run.raw_model, run.tokenizer, stage="sft", step=result["best_step"],
                    val_loss=result["val_loss"], eval=rates, base_eval=base["rates"], format_rate=formats,
                    init=args.init or args.source, **extra)
    wall = time.time() - started
    run.log.plot(os.path.join(args.out_dir, f"{args.name}.png"), ["loss", "val_loss", "replay_loss", "lr"],
                 title=f"SFT ({run.method})")
    run.log.summary(stage="sft", init=args.init or args.source, method=run.method, peft=args.peft_config, lr=args.lr,
                    replay_weight=args.replay_weight, trainable_params=trainable, total_params=total,
                    trainable_fraction=trainable / total, truncated=truncated, **result, eval=rates,
                    base_eval=base["rates"], format_rate=formats, wall_s=round(wall, 1))
    shown = " ".join(f"{k}={100 * v:.0f}%" for k, v in rates.items())
    val_shown = "n/a" if result["val_loss"] is None else f"{result['val_loss']:.4f}"
    print(f"\nsummary: {run.method}, {result['steps']} steps in {wall:.0f}s, val_loss {val_shown}"
          f"{', gold pass ' + shown if shown else ''} -> {path}")


def main(argv=None):
    started = time.time()
    args = parse_args(argv)
    set_seed(args.seed)
    device = pick_device(args.device)
    raw_model, tokenizer, splits, truncated = setup(args, device)
    base = dict(records=[], rates={}, graded=[])  # the starting model's answers, to compare against
    if args.eval_limit != 0:
        base["records"] = eval_subset(read_jsonl(args.eval_data, required=("prompt", "kind", "answers")),
                                      args.eval_limit)
        print(f"\nevaluating the starting model on {len(base['records'])} prompts of {args.eval_data} ...")
        base["rates"], base["graded"] = evaluate(raw_model, tokenizer, base["records"], device)
    method = choose_trainable(raw_model, args)
    trainable, total = count_parameters(raw_model)
    print(f"\n{method}, lr {args.lr:g}: trainable parameters {trainable:,} of {total:,} "
          f"({100 * trainable / total:.2f}%)")
    replay = replay_corpus(args, tokenizer, raw_model.cfg.block_size)
    model = torch.compile(raw_model) if args.compile else raw_model
    log = MetricsLog(os.path.join(args.out_dir, f"{args.name}.jsonl"))
    run = Run(args, device, raw_model, model, tokenizer, splits["train"], splits["val"], replay, method, log)
    result = finetune(run)
    report(run, result, base, trainable, total, truncated, started)


if __name__ == "__main__":
    run_main(main)
