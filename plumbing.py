"""Plumbing: what every stage needs and no lesson is about. A learner can skip this file.

Flags, one-line errors, devices and precision, seeds and batches, checkpoint files, data files, the
metrics log with its plots, and evaluation with the gold grading rule of data/README.md. The
concepts (the network, its optimizer, schedule and cost, the chat template) are in model.py, and
each stage's own ideas are in its file.

Two rules live here that every stage keeps. A checkpoint is written to a temporary file and
renamed, so a crash never leaves half of one, and read with `weights_only=True`, so a file carrying
pickled code is refused, not run. A mistake the user can fix (a missing file, a bad line, a flag
out of range) is a `UserError`: `run_main` prints it as one line, `error: <what> (<file>:<line>) —
<how to fix>`, and exits with status 2; tracebacks are for bugs.
"""

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import sys
import tempfile
from dataclasses import asdict

import numpy as np
import torch

from bpe import load_tokenizer
from model import ModelConfig, RewardModel, Transformer, chat_prompt, left_pad


# ----------------------------------------------------------------------------- errors and flags

class UserError(Exception):
    """A problem the user can fix: reported as one line, `error: <what> — <how to fix>`."""


def run_main(main):
    """Run a stage's main(): a UserError becomes one line on stderr and exit status 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def add_common_args(parser, helps=None, **defaults):
    """The flags every stage shares, spelled the same everywhere, with this stage's defaults.
    helps rewords a flag's help for a stage ({"batch_size": "prompts per micro-batch ..."})."""
    helps = helps or {}
    d = dict(data=None, init=None, out_dir="out", max_steps=1000, batch_size=32, lr=1e-3,
             warmup_steps=50, eval_interval=100, log_interval=10, grad_accum=1, patience=0, seed=1337)
    d.update(defaults)
    a = parser.add_argument
    a("--data", default=d["data"], help="training data (default: %(default)s)")
    a("--init", default=d["init"], help="checkpoint to start from (default: %(default)s)")
    a("--out-dir", default=d["out_dir"], help="where checkpoints, plots and metrics go (default: %(default)s)")
    a("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps (default: %(default)s)")
    a("--dtype", default="float32", choices=list(DTYPES),
      help="autocast precision; float16 adds a grad scaler on CUDA (default: %(default)s)")
    a("--compile", action="store_true", help="torch.compile the model (default: off)")
    a("--seed", type=int, default=d["seed"], help="random seed (default: %(default)s)")
    a("--max-steps", type=int, default=d["max_steps"], help="optimizer steps (default: %(default)s)")
    a("--batch-size", type=int, default=d["batch_size"],
      help=helps.get("batch_size", "sequences per micro-batch") + " (default: %(default)s)")
    a("--lr", type=float, default=d["lr"], help="peak learning rate (default: %(default)s)")
    a("--warmup-steps", type=int, default=d["warmup_steps"], help="linear warmup steps (default: %(default)s)")
    a("--eval-interval", type=int, default=d["eval_interval"], help="steps between validations (default: %(default)s)")
    a("--log-interval", type=int, default=d["log_interval"], help="steps between log lines (default: %(default)s)")
    a("--grad-accum", type=int, default=d["grad_accum"], help="micro-batches per optimizer step (default: %(default)s)")
    a("--patience", type=int, default=d["patience"],
      help="stop after this many validations without improvement; 0 = never (default: %(default)s)")
    return parser


def require_positive(args, *names):
    """Size flags that must be at least 1 (argparse takes any integer): a one-line error otherwise."""
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value} — pass a positive size")


# ----------------------------------------------------------------------------- devices, precision, seeds

def pick_device(name="auto"):
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast(device, dtype):
    """Mixed precision where the device supports it: matmuls in dtype, weights stay float32."""
    device_type = torch.device(device).type
    if dtype == "float32" or not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=DTYPES[dtype])


def grad_scaler(device, dtype):
    """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
    enabled = dtype == "float16" and torch.device(device).type == "cuda"
    return torch.amp.GradScaler("cuda", enabled=enabled)


def peak_flops(device):
    """Dense bf16 peak of known accelerators, for MFU. None where unknown (e.g. CPUs)."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
                       ("A10", 125e12), ("4090", 165e12), ("3090", 71e12)):
        if key in name:
            return flops
    return None


def set_seed(seed):
    random.seed(seed)
    torch.manual_seed(seed)


def unwrap(model):
    """The plain module under torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def batches(items, batch_size, seed):
    """Endless full batches of items, reshuffled every epoch by a generator of its own (so nothing
    else that draws random numbers changes which batches come). A ragged tail is left to the next
    shuffle; fewer items than batch_size give one batch of all of them."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(items)))
        rng.shuffle(order)
        for i in range(0, max(1, len(order) - batch_size + 1), batch_size):
            yield [items[j] for j in order[i:i + batch_size]]


class EarlyStopping:
    """The one early-stopping rule: after every validation remember the weights with the lowest
    validation loss; `stop` once `patience` validations in a row brought no improvement (0 = never);
    `restore` puts the best weights back at the end."""

    def __init__(self, model, patience):
        self.model, self.patience = model, patience
        self.best_loss, self.best_step, self.bad_evals, self.best_state = float("inf"), 0, 0, None

    def update(self, val_loss, step):
        """Record one validation; returns True if it is the best so far."""
        improved = val_loss < self.best_loss
        if improved:
            self.best_loss, self.best_step, self.bad_evals = val_loss, step, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad_evals += 1
        return improved

    @property
    def stop(self):
        return bool(self.patience) and self.bad_evals >= self.patience

    def restore(self):
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path, model, tokenizer, **extra):
    """Atomically write {config, model, tokenizer, **extra}: a crash leaves the old file intact.
    A network that carries adapters or a prefix (lora.py) also gets {"peft": the method and its sizes},
    which load_model needs to rebuild those modules: they cannot be merged into the weights like LoRA."""
    from lora import peft_config  # lora.py imports this file: importing it at the top would be a cycle

    net = unwrap(model)
    payload = {"config": asdict(net.cfg), "model": net.state_dict(), "tokenizer": tokenizer.to_dict(), **extra}
    peft = peft_config(net)
    if peft is not None:
        payload["peft"] = peft
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, device="cpu"):
    """Read a checkpoint with weights_only=True: tensors and plain containers only, so a file
    that carries a pickled object (which could run code) is refused, not executed."""
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found ({path}) — run the stage that writes it first, or pass its path")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying pickles, others for corrupt files
        raise UserError(f"cannot load checkpoint ({path}): {str(exc).splitlines()[0]} — "
                        "only checkpoints written by this project are accepted") from None


def load_model(path, device="cpu", model_class=Transformer):
    """(model, tokenizer, checkpoint dict) rebuilt from a checkpoint, in eval mode."""
    ckpt = load_checkpoint(path, device)
    kwargs = {"likelihood_weight": ckpt.get("likelihood_weight", 0.0)} if model_class is RewardModel else {}
    model = model_class(ModelConfig(**ckpt["config"]), **kwargs)
    if ckpt.get("peft"):  # adapters or a prefix (lora.py): put their modules in before their weights go there
        from lora import apply_peft  # lora.py imports this file: importing it at the top would be a cycle

        apply_peft(model, ckpt["peft"])
        model.requires_grad_(True)  # as from any checkpoint: what trains is the next stage's choice
    state = ckpt["model"]
    if model_class is Transformer and "backbone.wte.weight" in state:  # a reward model's body
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if model_class is RewardModel and "score_head.weight" not in state:
        raise UserError(f"{path} is not a reward model (stage {ckpt.get('stage', '?')!r}) — "
                        "pass the reward.pt that reward.py wrote")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"checkpoint does not fit the model ({path}): {str(exc).splitlines()[0]} — "
                        "use a checkpoint written with the same model settings") from None
    return model.to(device).eval(), load_tokenizer(ckpt["tokenizer"]), ckpt


def load_policy(path, device="cpu"):
    """load_model for a stage that goes on training a language model: refuses a masked LM (it cannot
    generate left to right) and a reward model (its body was trained to score, not to write)."""
    model, tokenizer, ckpt = load_model(path, device)
    if not model.cfg.causal:
        raise UserError(f"{path} is a masked-LM (bidirectional) model — start from a causal checkpoint")
    if ckpt.get("stage") == "reward":
        raise UserError(f"{path} is a reward model — start from a language model such as out/sft.pt")
    return model, tokenizer, ckpt


# ----------------------------------------------------------------------------- data files

def read_jsonl(path, required=()):
    """Records of a JSONL file; a bad line is a UserError naming the file and line."""
    if not os.path.exists(path):
        raise UserError(f"data file not found ({path}) — pass an existing file with --data")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"invalid JSON: {exc.msg} ({path}:{lineno}) — fix or remove that line") from None
            missing = [k for k in required if k not in record]
            if missing:
                raise UserError(f"missing field {missing[0]!r} ({path}:{lineno}) — every line needs "
                                f"{', '.join(required)}")
            records.append(record)
    return records


def read_text(path):
    """The whole data file as a string; a missing, empty or non-UTF-8 file is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"data file not found ({path}) — pass a UTF-8 text file with --data")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(f"data file is not UTF-8 text: byte {raw[exc.start]:#04x} ({path}:{line}) — "
                        "convert it, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise UserError(f"data file is empty ({path}) — pass a file with text in it")
    return text


def encode_corpus(text, tokenizer, cache_dir, write_cache=True):
    """Token ids of the text as a numpy array, cached under cache_dir: encoding runs once per
    (text, tokenizer) pair, every later start-up just loads the array."""
    spec = json.dumps(tokenizer.to_dict(), sort_keys=True)
    key = hashlib.sha1(text.encode() + spec.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"tokens-{key}.npy")
    if os.path.exists(path):
        return np.load(path)
    try:
        ids = tokenizer.encode(text)
    except (ValueError, KeyError) as exc:
        raise UserError(f"the tokenizer cannot encode this text: {exc} — use text it was built for (its "
                        "training corpus), or build a tokenizer on this text") from None
    ids = np.array(ids, dtype=np.int32)
    if write_cache:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, ids)
        os.replace(tmp, path)  # atomic: a second run never reads half an array
    return ids


def random_windows(data, batch_size, length, generator=None):
    """batch_size random contiguous windows of `length` tokens from a 1-D token stream, as a
    (batch_size, length) long tensor on the CPU."""
    starts = torch.randint(len(data) - length + 1, (batch_size,), generator=generator)
    return data[starts[:, None] + torch.arange(length)].long()  # one gather, no Python loop per row


def preference_pairs(records, path="preferences"):
    """data/prefs.jsonl records -> [(prompt, chosen, rejected, chosen_kind, rejected_kind, group_id)].

    A pair record {"prompt", "chosen", "rejected", ...} gives one pair. A ranking {"input",
    "choices": [{"text", "rank", ...}]} (rank 1 best) of K answers gives every ordered pair, K(K-1)/2
    of them (ties give none): each says "this answer beats that one". group_id is the record's
    index, so pairs cut from one ranking can be kept on the same side of a train/held-out split.
    Shared by reward.py and dpo.py, which learn from the same comparisons."""
    pairs = []
    for group_id, r in enumerate(records):
        if "choices" in r and "input" in r:
            ranked = sorted(r["choices"], key=lambda c: c["rank"])
            pairs += [(r["input"], a["text"], b["text"], a.get("kind"), b.get("kind"), group_id)
                      for i, a in enumerate(ranked) for b in ranked[i + 1:] if a["rank"] < b["rank"]]
        elif all(k in r for k in ("prompt", "chosen", "rejected")):
            pairs.append((r["prompt"], r["chosen"], r["rejected"], r.get("chosen_kind"),
                          r.get("rejected_kind"), group_id))
        else:
            raise UserError(f"record {group_id + 1} is neither a pair nor a ranking ({path}) — give it "
                            '"prompt", "chosen", "rejected" or "input", "choices": [{"text", "rank"}]')
    return pairs


def encode_prompts(tokenizer, prompts, max_len, device):
    """Chat-template prompts, left-padded so every answer starts in the same column."""
    try:
        rows = [tokenizer.encode(chat_prompt(p))[-max_len:] for p in prompts]
    except ValueError as exc:
        raise UserError(f"{exc} — prompts may use only characters the tokenizer knows") from None
    return left_pad(rows, tokenizer.pad_id, device)


# ----------------------------------------------------------------------------- metrics log and plots

class MetricsLog:
    """out/<stage>.jsonl: one JSON object per logged step, then a final {"summary": ...} line."""

    def __init__(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self.records = path, []
        open(path, "w").close()

    def log(self, **metrics):
        self.records.append(metrics)
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def summary(self, **summary):
        with open(self.path, "a") as f:
            f.write(json.dumps({"summary": summary}) + "\n")

    def plot(self, path, keys, x="step", title=""):
        """One panel per metric against x, saved as PNG. Each panel is labelled with its unit (UNITS); a
        noisy training curve is drawn faint, with its moving average over it."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        keys = [k for k in keys if any(k in r for r in self.records)]
        if not keys:
            return
        cols = min(4, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax in axes.flat[len(keys):]:
            ax.axis("off")
        for ax, key in zip(axes.flat, keys):
            pts = [(r[x], r[key]) for r in self.records if key in r and r[key] is not None and x in r]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            if len(pts) >= 40:  # one point per logged step: show the trend through the noise
                ax.plot(xs, ys, alpha=0.3, color="C0", linewidth=0.8)
                ax.plot(xs, moving_average(ys, max(3, len(ys) // 20)), color="C0", label="moving average")
                ax.legend(fontsize=7)
            else:
                ax.plot(xs, ys, marker=".", color="C0")
            ax.set_xlabel(UNITS.get(x, x))
            ax.set_ylabel(UNITS.get(key, key))
            ax.set_title(key)
            ax.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


# what each logged metric measures, for the axes of the plots
UNITS = {"step": "optimizer step", "tokens": "tokens seen", "loss": "cross-entropy (nats/token)",
         "val_loss": "validation loss", "replay_loss": "corpus loss (nats/token)", "lr": "learning rate",
         "accuracy": "share of pairs ordered right", "val_accuracy": "share of held-out pairs right",
         "val_margin": "mean r(chosen) − r(rejected)", "score": "reward-model score", "kl": "KL to SFT (nats/answer)",
         "entropy": "nats per token", "clipfrac": "share of tokens clipped", "approx_kl": "KL(old ‖ new), nats/token",
         "value_loss": "squared error", "explained_variance": "1 − Var(R − V)/Var(R)",
         "response_length": "tokens per answer", "reward": "mean reward of the samples",
         "pass_rate": "gold pass rate of the samples", "reward_unknown": "mean reward, unknown prompts",
         "reward_harmful": "mean reward, harmful prompts", "zero_std_fraction": "share of groups, all equal",
         "val_rewards/accuracy": "share of held-out pairs right", "val_rewards/margin": "β·(margin of log-ratios)",
         "val_rewards/chosen": "β·(log π − log π_ref)", "val_rewards/rejected": "β·(log π − log π_ref)"}


def moving_average(values, window):
    """The mean of each value and the window − 1 before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


# ----------------------------------------------------------------------------- evaluation: the gold rule

EVAL_KINDS = ("cloze", "fact", "heldout_fact", "unknown", "harmful", "task")
CHAT_KINDS = EVAL_KINDS[1:]  # asked in the chat template; cloze is raw text for a base model


def answer_text(text):
    """The part of a generation the gold rule grades: first line, then its first sentence."""
    text = text.split("<|eos|>")[0].split("\n")[0]
    for i, ch in enumerate(text):
        if ch in ".!?" and (i + 1 == len(text) or text[i + 1].isspace()):
            return text[:i + 1]
    return text


def normalize(text):
    return " ".join(text.lower().split()).strip().rstrip(".!?").strip()


def grade(generation, answers):
    """The gold grading rule of data/README.md: it plays the human judge for every stage."""
    return normalize(answer_text(generation)) in {normalize(a) for a in answers}


@torch.no_grad()
def generate_answers(model, tokenizer, prompts, device, max_new_tokens=64, batch_size=64,
                     chat=True, temperature=0.0, generator=None, return_finished=False):
    """Complete each prompt (in the chat template when chat=True); returns the decoded text after
    the prompt, cut at <|eos|> (and, with return_finished, whether each produced one). Batches are
    left-padded so all rows end where generation starts."""
    was_training = model.training
    model.eval()
    outputs, finished = [], []
    for start in range(0, len(prompts), batch_size):
        batch = [tokenizer.encode(chat_prompt(p) if chat else p) for p in prompts[start:start + batch_size]]
        budget = model.cfg.block_size - max_new_tokens
        idx, mask = left_pad([ids[-budget:] for ids in batch], tokenizer.pad_id, device)
        T = idx.size(1)
        out = model.generate(idx, max_new_tokens, temperature=temperature,
                             eos_id=tokenizer.eos_id, attention_mask=mask, generator=generator)
        for row in out[:, T:].tolist():
            finished.append(tokenizer.eos_id in row)
            if finished[-1]:
                row = row[:row.index(tokenizer.eos_id)]
            outputs.append(tokenizer.decode(row))
    model.train(was_training)
    return (outputs, finished) if return_finished else outputs


def evaluate(model, tokenizer, examples, device, kinds=None, max_new_tokens=64):
    """Greedy answers for data/eval.jsonl records; returns ({kind: pass rate}, [records]). Each record
    gains `output`, `finished` (it produced <|eos|>) and `passed` (the gold rule)."""
    examples = [e for e in examples if kinds is None or e["kind"] in kinds]
    records = []
    for chat in (True, False):
        group = [e for e in examples if (e["kind"] != "cloze") == chat]
        if not group:
            continue
        outs, finished = generate_answers(model, tokenizer, [e["prompt"] for e in group], device,
                                          max_new_tokens=max_new_tokens, chat=chat, return_finished=True)
        records += [dict(e, output=o, finished=f, passed=grade(o, e["answers"]))
                    for e, o, f in zip(group, outs, finished)]
    rates = {}
    for r in records:
        rates.setdefault(r["kind"], []).append(r["passed"])
    return {k: sum(v) / len(v) for k, v in rates.items()}, records


def stored_or_evaluated(ckpt, path, eval_records, device):
    """Pass rates of a checkpoint: the ones it stored under "eval" if any, else measured now."""
    if isinstance(ckpt.get("eval"), dict) and ckpt["eval"]:
        return ckpt["eval"]
    net, tokenizer, _ = load_model(path, device)
    return evaluate(net, tokenizer, eval_records, device)[0]


def show_changes(sft_records, records, name):
    """Side by side (greedy), per kind: prompts whose verdict the stage fixed, then those it broke, then
    unchanged ones (passing first); eval order within each."""
    print("side by side (greedy), prompts whose verdict changed first:")
    by_prompt = {r["prompt"]: r for r in sft_records}
    for kind in ("unknown", "harmful", "fact"):
        rows = sorted((r for r in records if r["kind"] == kind),
                      key=lambda r: (r["passed"] == by_prompt[r["prompt"]]["passed"], not r["passed"]))
        for r in rows[:2]:
            s = by_prompt[r["prompt"]]
            print(f"  [{kind}] {r['prompt']}\n      sft: {s['output']!r} {'✓' if s['passed'] else '✗'}\n"
                  f"      {name}: {r['output']!r} {'✓' if r['passed'] else '✗'}")


def answer_format(records):
    """Share of chat answers in the assistant's format, right or wrong: one sentence, then <|eos|>
    (a base model instead runs on into the next forum post)."""
    chat = [r for r in records if r["kind"] != "cloze"]
    ok = [r["finished"] and answer_text(r["output"]) == r["output"] and r["output"].rstrip().endswith((".", "!", "?"))
          for r in chat]
    return sum(ok) / max(len(ok), 1)


def pooled_pass_rate(rates, records, kinds):
    """Pass rate over every prompt of the given kinds together (each prompt one vote), from the
    per-kind rates and the eval records that say how many prompts each kind has."""
    counts = {k: sum(r["kind"] == k for r in records) for k in kinds if k in rates}
    total = sum(counts.values())
    return sum(rates[k] * n for k, n in counts.items()) / total if total else float("nan")


def rl_summary(records, score_key, eval_records, rates, sft_rates, end_keys=(), k=3):
    """The numbers an RL stage's summary reports: its score at the start and the end of training (the mean of
    the first and the last k logged steps: single batches are noisy), the KL at the end and its largest
    value, the end value of any other logged metric in end_keys, and the pooled unknown + harmful pass rate
    of the policy and of SFT."""
    mean_of = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    k = min(k, len(records))
    both = ("unknown", "harmful")
    return {f"{score_key}_start": mean_of(records[:k], score_key), f"{score_key}_end": mean_of(records[-k:], score_key),
            "kl_end": mean_of(records[-k:], "kl"), "kl_max": max(r["kl"] for r in records),
            **{f"{key}_end": mean_of(records[-k:], key) for key in end_keys},
            "unknown_harmful": pooled_pass_rate(rates, eval_records, both),
            "sft_unknown_harmful": pooled_pass_rate(sft_rates, eval_records, both)}


def format_rl_summary(summary, score_key, sft_rates, rates, path):
    """rl_summary's numbers as the one summary line PPO and GRPO print."""
    return (f"summary: {score_key} {summary[score_key + '_start']:+.3f} → {summary[score_key + '_end']:+.3f}, "
            f"kl {summary['kl_end']:.2f} (max {summary['kl_max']:.2f}), unknown+harmful "
            f"{100 * summary['sft_unknown_harmful']:.1f}% → {100 * summary['unknown_harmful']:.1f}%, fact "
            f"{100 * sft_rates.get('fact', 0):.1f}% → {100 * rates.get('fact', 0):.1f}%, "
            f"{summary['wall_s']:.0f}s → {path}")


def format_pass_rates(columns):
    """{model name: {kind: rate}} -> the one table layout every stage prints."""
    names = list(columns)
    lines = [f"{'gold pass rate':<15}" + "".join(f"{n:>12}" for n in names)]
    for kind in EVAL_KINDS:
        if any(kind in columns[n] for n in names):
            cells = [f"{100 * columns[n][kind]:>11.1f}%" if kind in columns[n] else f"{'-':>12}" for n in names]
            lines.append(f"{kind:<15}" + "".join(cells))
    return "\n".join(lines)
