"""The lifecycle, measured: one table comparing every stage's checkpoint on the same prompts.

For each checkpoint it reports
  - the gold pass rate per kind of data/eval.jsonl (greedy answers, the grading rule of data/README.md);
  - the reward model's mean score for its greedy answers to the chat prompts of data/eval.jsonl;
  - its KL to the SFT model, KL(pi || pi_sft) = E_{y ~ pi}[ sum_t log pi(y_t|.) - log pi_sft(y_t|.) ],
    estimated on one sampled answer (temperature 1) per chat prompt;
  - the wall time its stage reported in out/<stage>.jsonl.

Run it after the stages (python docs/results.py); it prints a markdown table and writes it to
docs/results.md. A row whose checkpoint is missing is skipped, so it works part way through too.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import (EVAL_KINDS, RewardModel, build_example, evaluate, generate_answers, load_model,  # noqa: E402
                   pad_batch, read_jsonl, run_main, token_logprobs)

ROWS = [  # (row name, checkpoint, metrics file with the stage's wall time, command that makes it)
    ("base", "pretrain.pt", "pretrain.jsonl", "python pretrain.py"),
    ("SFT", "sft.pt", "sft.jsonl", "python sft.py"),
    ("SFT + LoRA r=8", "lora8/sft.pt", "lora8/sft.jsonl", "python sft.py --lora-rank 8 --out-dir out/lora8"),
    ("SFT from scratch", "scratch/sft.pt", "scratch/sft.jsonl", "python sft.py --init scratch --out-dir out/scratch"),
    ("PPO", "ppo.pt", "ppo.jsonl", "python ppo.py"),
    ("PPO, β=0", "kl0/ppo.pt", "kl0/ppo.jsonl", "python ppo.py --kl-coef 0 --out-dir out/kl0"),
    ("DPO", "dpo.pt", "dpo.jsonl", "python dpo.py"),
]


def wall_time(path):
    """Seconds the stage took, from the summary line of its metrics file (None if absent)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = f.read().splitlines()
    summary = json.loads(lines[-1]).get("summary", {}) if lines else {}
    for key in ("wall_s", "wall_time_s", "wall_seconds", "seconds"):
        if key in summary:
            return float(summary[key])
    return None


@torch.no_grad()
def sequence_logps(model, tokenizer, prompts, answers, device):
    """sum over answer tokens of log P(answer | prompt), one number per (prompt, answer)."""
    examples = [build_example(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                              model.cfg.block_size)[:2] for p, a in zip(prompts, answers)]
    out = []
    for i in range(0, len(examples), 64):
        x, y, mask = pad_batch(examples[i:i + 64], tokenizer.pad_id, device)
        logits, _ = model(x, attention_mask=mask)
        out += token_logprobs(logits, y).sum(-1).tolist()
    return out


@torch.no_grad()
def reward_scores(reward_model, tokenizer, prompts, answers, device):
    examples = [build_example(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                              reward_model.backbone.cfg.block_size)[:2] for p, a in zip(prompts, answers)]
    scores = []
    for i in range(0, len(examples), 64):
        batch = [ids for ids, _ in examples[i:i + 64]]
        T = max(map(len, batch))  # the whole sequence, <|eos|> included: that is where r is read
        x = torch.tensor([ids + [tokenizer.pad_id] * (T - len(ids)) for ids in batch], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids in batch], device=device)
        scores += reward_model(x, mask).tolist()
    return scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default="out", help="where the stages wrote their files (default: %(default)s)")
    parser.add_argument("--eval-data", default="data/eval.jsonl", help="(default: %(default)s)")
    parser.add_argument("--write", default="docs/results.md", help="markdown file to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the KL samples (default: %(default)s)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = "cpu"
    records = read_jsonl(args.eval_data, required=("prompt", "kind", "answers"))
    chat_prompts = [r["prompt"] for r in records if r["kind"] != "cloze"]
    path = lambda name: os.path.join(args.out_dir, name)  # noqa: E731
    sft, tokenizer, _ = load_model(path("sft.pt"), device)
    reward_model = None
    if os.path.exists(path("reward.pt")):  # without it the RM-score column stays empty
        reward_model, _, _ = load_model(path("reward.pt"), device, model_class=RewardModel)
    kinds = [k for k in EVAL_KINDS]
    header = "| stage | " + " | ".join(kinds) + " | RM score | KL to SFT | wall time | command |"
    lines = [header, "|" + "---|" * (len(kinds) + 5)]
    for name, ckpt, metrics, command in ROWS:
        if not os.path.exists(path(ckpt)):
            print(f"skip {name}: {path(ckpt)} not found", file=sys.stderr)
            continue
        model, tok, _ = load_model(path(ckpt), device)
        rates, _ = evaluate(model, tok, records, device)
        greedy = generate_answers(model, tok, chat_prompts, device)
        score = (sum(reward_scores(reward_model, tok, chat_prompts, greedy, device)) / len(chat_prompts)
                 if reward_model is not None else None)
        sampled = generate_answers(model, tok, chat_prompts, device, temperature=1.0)
        kl = [a - b for a, b in zip(sequence_logps(model, tok, chat_prompts, sampled, device),
                                     sequence_logps(sft, tok, chat_prompts, sampled, device))]
        wall = wall_time(path(metrics))
        cells = [f"{100 * rates[k]:.0f}%" if k in rates else "-" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + (f" | {score:+.2f}" if score is not None else " | -")
                     + f" | {sum(kl) / len(kl):.2f} | "
                     + (f"{wall / 60:.1f} min" if wall else "-") + f" | `{command}` |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    with open(args.write, "w") as f:
        f.write("# The lifecycle, measured\n\nProduced by `python docs/results.py` after the commands in the last "
                "column (CPU, greedy decoding; KL from one sampled answer per prompt).\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    run_main(main)
