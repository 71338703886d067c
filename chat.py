"""Talk to any checkpoint of the lifecycle, or ask the reward model to score answers.

    python chat.py --ckpt out/sft.pt --prompt "What is the capital of Norway?" --temperature 0
    python chat.py --ckpt out/ppo.pt                       # an interactive loop; Ctrl-D quits
    python chat.py --ckpt out/pretrain.pt --prompt "The capital of Norway is"
    python chat.py --ckpt out/reward.pt --prompt "What is the capital of Brelaria?" \\
        --answer "I don't know." --answer "The capital of Brelaria is Oslo."

A pretraining checkpoint continues raw text; every later stage answers in the chat template
`User: {prompt}\\nAssistant: ` and stops at `<|eos|>`. `--temperature 0` is greedy decoding, the
setting every evaluation of the course uses; the default 0.8 samples, so two runs differ.
"""

import argparse

import torch

from model import RewardModel, chat_prompt, reward_scores
from plumbing import DTYPES, UserError, autocast, load_model, pick_device, run_main, set_seed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default="out/sft.pt", help="checkpoint to load (default: %(default)s)")
    parser.add_argument("--prompt", default=None, help="one prompt; omit for an interactive loop")
    parser.add_argument("--answer", action="append", default=None,
                        help="with a reward checkpoint (out/reward.pt): print r(prompt, answer) for this answer "
                             "to --prompt; repeat to compare answers")
    parser.add_argument("--raw", action="store_true", help="continue raw text instead of the chat template "
                        "(default for pretraining checkpoints)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="autocast precision (default: "
        "%(default)s)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def score(args, device):
    """The reward model stands in for the human judge: one line per answer, its score first."""
    if args.prompt is None:
        raise UserError("--answer scores an answer to a prompt — pass --prompt too")
    reward_model, tokenizer, _ = load_model(args.ckpt, device, model_class=RewardModel)
    scores = reward_scores(reward_model, tokenizer, [args.prompt] * len(args.answer), args.answer)
    for answer, s in zip(args.answer, scores):
        print(f"{s:+.2f}  {answer}")


def respond(model, tokenizer, prompt, chat, args, device):
    """The model's continuation of one prompt, cut at <|eos|>."""
    text = chat_prompt(prompt) if chat else prompt
    try:
        ids = tokenizer.encode(text)[-(model.cfg.block_size - 1):]
    except ValueError as exc:
        raise UserError(f"{exc} — use only characters the tokenizer knows") from None
    x = torch.tensor([ids], device=device)
    with autocast(device, args.dtype):
        out = model.generate(x, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, eos_id=tokenizer.eos_id if chat else None)
    new = out[0, len(ids):].tolist()
    if tokenizer.eos_id in new:
        new = new[:new.index(tokenizer.eos_id)]
    return tokenizer.decode(new)


def main(argv=None):
    args = parse_args(argv)
    set_seed(args.seed)
    device = pick_device(args.device)
    if args.answer:
        return score(args, device)
    model, tokenizer, ckpt = load_model(args.ckpt, device)
    if not model.cfg.causal:
        raise UserError(f"{args.ckpt} is a masked-LM (bidirectional) model — sample from a causal checkpoint")
    if args.compile:
        model = torch.compile(model)
    chat = not args.raw and ckpt.get("stage", "pretrain") != "pretrain"
    if args.prompt is not None:
        print((args.prompt if not chat else "") + respond(model, tokenizer, args.prompt, chat, args, device))
        return
    print(f"{args.ckpt} ({ckpt.get('stage', '?')}, {'chat' if chat else 'raw text'}); Ctrl-D to quit")
    while True:
        try:
            prompt = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        print(respond(model, tokenizer, prompt, chat, args, device))


if __name__ == "__main__":
    run_main(main)
