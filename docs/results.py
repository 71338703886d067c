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
from common import read_jsonl, run_main  # noqa: E402
from model import (EVAL_KINDS, RewardModel, build_example, evaluate, generate_answers, load_model,  # noqa: E402
                   reward_scores, sequence_logps)

ROWS = [  # (row name, checkpoint, metrics file with the stage's wall time, command that makes it)
    ("base", "pretrain.pt", "pretrain.jsonl", "python pretrain.py"),
    ("SFT", "sft.pt", "sft.jsonl", "python sft.py"),
    ("SFT + LoRA r=8", "sft_lora8.pt", "sft_lora8.jsonl", "python sft.py --lora-rank 8 --name sft_lora8"),
    ("SFT from scratch", "sft_scratch.pt", "sft_scratch.jsonl", "python sft.py --init scratch --name sft_scratch"),
    ("PPO", "ppo.pt", "ppo.jsonl", "python ppo.py"),
    ("PPO, β=0", "ppo_kl0.pt", "ppo_kl0.jsonl", "python ppo.py --kl-coef 0 --name ppo_kl0"),
    ("DPO", "dpo.pt", "dpo.jsonl", "python dpo.py"),
]


def wall_time(path):
    """Seconds the stage took, from the summary line of its metrics file (None if absent)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = f.read().splitlines()
    summary = json.loads(lines[-1]).get("summary", {}) if lines else {}
    return float(summary["wall_s"]) if "wall_s" in summary else None


@torch.no_grad()
def answer_logps(model, tokenizer, prompts, answers, device):
    """log P(answer | prompt) summed over the answer's tokens, one float per pair."""
    examples = [build_example(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                              model.cfg.block_size)[:2] for p, a in zip(prompts, answers)]
    return [v for i in range(0, len(examples), 64)
            for v in sequence_logps(model, examples[i:i + 64], tokenizer.pad_id, device).tolist()]


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
    kinds = list(EVAL_KINDS)
    header = "| stage | " + " | ".join(kinds) + " | RM score | KL to SFT | wall time | command |"
    lines = [header, "|" + "---|" * (len(kinds) + 5)]
    for name, ckpt, metrics, command in ROWS:
        if not os.path.exists(path(ckpt)):
            print(f"skip {name}: {path(ckpt)} not found", file=sys.stderr)
            continue
        model, tok, _ = load_model(path(ckpt), device)
        rates, graded = evaluate(model, tok, records, device)
        greedy = [r for r in graded if r["kind"] != "cloze"]
        score = (sum(reward_scores(reward_model, tok, [r["prompt"] for r in greedy], [r["output"] for r in greedy]))
                 / len(greedy) if reward_model is not None else None)
        sampled = generate_answers(model, tok, chat_prompts, device, temperature=1.0)
        kl = [a - b for a, b in zip(answer_logps(model, tok, chat_prompts, sampled, device),
                                     answer_logps(sft, tok, chat_prompts, sampled, device))]
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
