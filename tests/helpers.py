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


def left_padded_batch_equals_one_at_a_time(m, use_cache, vocab=16):
    """Greedy generation for three prompts of different lengths, left-padded into one batch, equals each
    prompt generated alone. Returns (idx, mask, singles) for further checks."""
    prompts = [torch.randint(0, vocab, (n,)) for n in (2, 5, 7)]
    T = 7
    idx = torch.stack([torch.cat([torch.full((T - len(p),), 3), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(T - len(p), dtype=torch.long), torch.ones(len(p), dtype=torch.long)])
                        for p in prompts])
    batched = m.generate(idx, 9, temperature=0, attention_mask=mask, use_cache=use_cache)
    singles = [m.generate(p[None], 9, temperature=0, use_cache=use_cache)[0, len(p):] for p in prompts]
    assert len({tuple(s.tolist()) for s in singles}) == 3 and len(set(torch.cat(singles).tolist())) > 3
    for row, single in zip(batched[:, T:], singles):
        assert torch.equal(row, single)
    return idx, mask, singles
