"""Small builders that several test files share (pytest puts tests/ on the import path)."""
import json

import torch

import bpe
import model as M

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!'\n:"


def tokenizer():
    """A character tokenizer that covers every toy prompt and answer of the tests."""
    return bpe.CharTokenizer.train(ALPHABET)


def write_jsonl(path, records):
    """Write records one JSON object per line; returns the path as a string (argparse wants one)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def tiny_policy(tok, seed=0, scale=None, cls=M.Transformer):
    """A tiny model in eval mode (a policy, or with cls=M.RewardModel a reward model). scale: redraw the
    weight matrices from N(0, scale), for sharper next-token distributions, so temperature visibly matters."""
    torch.manual_seed(seed)
    net = cls(M.ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32))
    if scale is not None:
        with torch.no_grad():
            for p in net.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, scale)
    return net.eval()


def ragged(lengths, N):
    """(B, N) mask of left-aligned answers of the given lengths."""
    return (torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]).double()
