"""Answer key for model.py and plumbing.py: gradients, equivalences and properties of the transformer and the helpers
every stage shares. Tiny configs throughout; gradchecks run in float64, where finite differences are
accurate enough to catch a wrong backward."""

import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.autograd import gradcheck
from torch.func import functional_call

import bpe
import model as M
from helpers import left_padded_batch_equals_one_at_a_time
import plumbing as P

ROOT = Path(__file__).resolve().parents[1]
TEXT = "User: \nAssistant: abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'"


def make_tokenizer(text=TEXT):
    return bpe.CharTokenizer.train(text)


def tiny_cfg(**kw):
    base = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.0)
    return M.ModelConfig(**{**base, **kw})


def tiny_model(cfg=None, seed=0, std=None, dtype=torch.float64, cls=M.Transformer):
    """A model in eval mode. std: redraw every parameter from N(0, std) so that outputs depend
    strongly on the input (at the GPT-2 init a random model barely distinguishes tokens)."""
    torch.manual_seed(seed)
    m = cls(cfg or tiny_cfg())
    if std is not None:
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, std)
    return m.to(dtype).eval()


def twin(m, **cfg_changes):
    """The same weights under another config (e.g. the other attention implementation)."""
    other = type(m)(replace(m.cfg, **cfg_changes)).to(m.wte.weight.dtype)
    other.load_state_dict(m.state_dict())
    return other.train(m.training)


def gradcheck_module(module, x, *args):
    """gradcheck w.r.t. the input x and every parameter (made explicit inputs via functional_call).
    fast_mode compares v^T J u for random u, v instead of every entry of J: a wrong gradient still
    shows up (almost surely), and a thousand parameters take a fraction of a second, not many."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]

    def f(x, *ps):
        return functional_call(module, dict(zip(names, ps)), (x, *args))

    assert gradcheck(f, (x.requires_grad_(), *params), eps=1e-6, atol=1e-5, fast_mode=True)


PAD_MASK = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]])  # one right-padded row, one left-padded


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_gradcheck_self_attention(impl, causal, padded):
    cfg = tiny_cfg(attn_impl=impl, causal=causal)
    host = tiny_model(cfg, std=0.5)  # builds the mask exactly as the model does
    attn = host.blocks[0].attn
    mask = host._attention_mask(5, 0, PAD_MASK if padded else None, "cpu")
    if padded:
        assert mask is not None and mask.shape == (2, 1, 5, 5)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    gradcheck_module(attn, x, mask)


def test_gradcheck_mlp():
    mlp = tiny_model(std=0.5).blocks[0].mlp
    gradcheck_module(mlp, torch.randn(2, 5, 8, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_gradcheck_block(impl):
    host = tiny_model(tiny_cfg(attn_impl=impl), std=0.5)
    gradcheck_module(host.blocks[0], torch.randn(2, 5, 8, dtype=torch.float64),
                     host._attention_mask(5, 0, PAD_MASK, "cpu"))


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_gradcheck_transformer(impl):
    """Logits as a function of every parameter of a 2-layer model, padding mask included. The
    tied embedding gets gradient from both ends (input embedding and LM head)."""
    m = tiny_model(tiny_cfg(attn_impl=impl, n_layer=2), std=0.3)
    names = [n for n, _ in m.named_parameters()]
    assert "lm_head.weight" not in names  # tied: one tensor, reached through wte.weight
    params = [p.detach().clone().requires_grad_() for _, p in m.named_parameters()]
    idx = torch.randint(0, 11, (2, 5))

    def logits(*ps):
        return functional_call(m, dict(zip(names, ps)), (idx,), {"attention_mask": PAD_MASK})[0]

    assert gradcheck(logits, params, eps=1e-6, atol=1e-5, fast_mode=True)


def test_loss_is_cross_entropy_of_logits_ignoring_minus_100():
    m = tiny_model(std=0.3)
    idx = torch.randint(0, 11, (2, 5))
    targets = torch.randint(0, 11, (2, 5))
    targets[0, :2] = -100
    logits, loss = m(idx, targets)
    keep = targets != -100
    expected = -torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0][keep].mean()
    assert torch.allclose(loss.double(), expected, atol=1e-6)


# ----------------------------------------------------------------------------- equivalences


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_manual_attention_equals_sdpa(causal, training, padded):
    sdpa = tiny_model(tiny_cfg(causal=causal, n_layer=2), std=0.3).train(training)
    manual = twin(sdpa, attn_impl="manual")
    assert manual.blocks[0].attn.cfg.attn_impl == "manual" and sdpa.blocks[0].attn.cfg.attn_impl == "sdpa"
    idx = torch.randint(0, 11, (2, 5))
    mask = PAD_MASK if padded else None
    a, b = manual(idx, attention_mask=mask)[0], sdpa(idx, attention_mask=mask)[0]
    real = PAD_MASK.bool() if padded else torch.ones(2, 5, dtype=torch.bool)
    assert torch.allclose(a[real], b[real], atol=1e-10)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_kv_cache_forward_equals_full_forward(impl, padded):
    """Prefill 3 tokens, then feed the rest one at a time through the cache."""
    m = tiny_model(tiny_cfg(attn_impl=impl, n_layer=2), std=0.3)
    idx = torch.randint(0, 11, (2, 7))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]) if padded else None
    full = m(idx, attention_mask=mask)[0]
    cache = M.KVCache(m.cfg, 2, "cpu", torch.float64)
    steps = [m(idx[:, :3], attention_mask=None if mask is None else mask[:, :3], kv_cache=cache)[0]]
    for t in range(3, 7):
        steps.append(m(idx[:, t:t + 1], attention_mask=None if mask is None else mask[:, :t + 1],
                       kv_cache=cache)[0])
    assert cache.length == 7
    real = mask.bool() if padded else torch.ones(2, 7, dtype=torch.bool)
    assert torch.allclose(torch.cat(steps, 1)[real], full[real], atol=1e-10)


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_causal_model_never_reads_the_future(impl):
    m = tiny_model(tiny_cfg(attn_impl=impl, n_layer=2), std=0.3)
    idx = torch.randint(0, 11, (2, 8))
    base = m(idx)[0]
    for t in range(8):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        out = m(changed)[0]
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-12, rtol=0), f"position < {t} read token {t}"
        assert not torch.allclose(out[:, t], base[:, t], atol=1e-6)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_bidirectional_model_reads_both_ways(impl):
    m = tiny_model(tiny_cfg(attn_impl=impl, causal=False, n_layer=2), std=0.3)
    idx = torch.randint(0, 11, (2, 8))
    base = m(idx)[0]
    for t in range(8):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        diff = (m(changed)[0] - base).abs().amax(-1)  # (B, T)
        assert (diff > 1e-6).all(), f"some position did not read token {t}"


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("causal", [True, False])
def test_padding_does_not_change_real_positions(impl, causal):
    m = tiny_model(tiny_cfg(attn_impl=impl, causal=causal, n_layer=2), std=0.3)
    row = torch.randint(0, 11, (1, 5))
    alone = m(row)[0][0]
    junk = torch.randint(0, 11, (3,))  # pad slots hold arbitrary ids: none may leak
    right = torch.cat([row[0], junk])
    left = torch.cat([junk, row[0]])
    full = torch.randint(0, 11, (8,))
    idx = torch.stack([right, left, full])
    mask = torch.tensor([[1] * 5 + [0] * 3, [0] * 3 + [1] * 5, [1] * 8])
    out = m(idx, attention_mask=mask)[0]
    assert torch.allclose(out[0, :5], alone, atol=1e-10)
    assert torch.allclose(out[1, 3:], alone, atol=1e-10)
    assert torch.allclose(out[2], m(full[None])[0][0], atol=1e-10)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_reward_model_reads_last_real_token(impl):
    rm = tiny_model(tiny_cfg(attn_impl=impl, n_layer=2), std=0.3, cls=M.RewardModel)
    row = torch.randint(0, 11, (5,))
    junk = torch.randint(0, 11, (3,))
    idx = torch.stack([torch.cat([row, junk]), torch.cat([junk, row])])
    mask = torch.tensor([[1] * 5 + [0] * 3, [0] * 3 + [1] * 5])
    r = rm(idx, attention_mask=mask)
    alone = rm(row[None])
    assert r.shape == (2,) and alone.shape == (1,)
    assert torch.allclose(r, alone.expand(2), atol=1e-10)
    hidden = rm.backbone(row[None], return_hidden=True)[2]
    assert torch.allclose(alone, rm.score_head(hidden[:, -1]).squeeze(-1), atol=1e-12)
    # the last real token matters (a reward read at a pad slot or the first token would not move)
    changed = row.clone()
    changed[-1] = (changed[-1] + 1) % 11
    assert not torch.allclose(rm(changed[None]), alone, atol=1e-6)


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_generate_with_cache_equals_without(impl):
    """Several prompt lengths, running well past block_size (8) so the window slides; greedy, and
    sampling with the same seeded generator (it draws the same numbers on both paths)."""
    # (the GPT-2 init: its greedy continuations vary more than those of a model with larger weights)
    m = tiny_model(tiny_cfg(attn_impl=impl, n_layer=2, vocab_size=16), seed=2)
    seen = set()
    for n_prompt in (1, 3, 8):
        prompt = torch.randint(0, 16, (2, n_prompt))
        fast = m.generate(prompt, 14, temperature=0, use_cache=True)
        slow = m.generate(prompt, 14, temperature=0, use_cache=False)
        assert fast.shape == (2, n_prompt + 14)
        assert torch.equal(fast[:, :n_prompt], prompt)
        assert torch.equal(fast, slow)
        seen |= set(fast[:, n_prompt:].flatten().tolist())
        fast, slow = (m.generate(prompt, 14, temperature=1.0, top_k=8, use_cache=use_cache,
                                 generator=torch.Generator().manual_seed(n_prompt)) for use_cache in (True, False))
        assert torch.equal(fast, slow)
    assert len(seen) > 3  # the greedy continuations are not one repeated token


@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_left_padded_generate_equals_one_at_a_time(use_cache):
    m = tiny_model(tiny_cfg(n_layer=2, vocab_size=16, block_size=16), seed=4)
    idx, mask, singles = left_padded_batch_equals_one_at_a_time(m, use_cache)
    # with eos: a row that emits it is filled with eos afterwards; the others go on unchanged
    eos = singles[0][2].item()
    batched = m.generate(idx, 9, temperature=0, attention_mask=mask, eos_id=eos, use_cache=use_cache)
    for row, single in zip(batched[:, idx.size(1):], singles):
        hits = (single == eos).nonzero()
        if len(hits):
            stop = hits[0, 0].item() + 1
            assert torch.equal(row[:stop], single[:stop]) and (row[stop:] == eos).all()
        else:
            assert torch.equal(row, single[:len(row)])


def test_sample_next_temperature_zero_and_top_k_1_are_greedy():
    logits = torch.randn(64, 10)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(M.sample_next(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(M.sample_next(logits, temperature=1.0, top_k=1, generator=g), logits.argmax(-1))
    # plain sampling is not greedy (so the two checks above can fail)
    assert not torch.equal(M.sample_next(logits, temperature=1.0, generator=g), logits.argmax(-1))


@pytest.mark.parametrize("top_p, nucleus", [(0.7, {0, 1}), (0.85, {0, 1, 2}), (0.4, {0})])
def test_sample_next_top_p_keeps_the_nucleus(top_p, nucleus):
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    order = [1, 3, 2, 0]
    nucleus = {order[i] for i in nucleus}
    logits = probs.log().expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    draws = M.sample_next(logits, temperature=1.0, top_p=top_p, generator=g)
    counts = torch.bincount(draws, minlength=4)
    assert set(draws.unique().tolist()) == nucleus
    # inside the nucleus the probabilities are renormalised, not flattened
    expected = probs[sorted(nucleus)] / probs[sorted(nucleus)].sum()
    assert torch.allclose(counts[sorted(nucleus)] / 4000.0, expected, atol=0.03)


def test_sample_next_top_k_renormalises():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    g = torch.Generator().manual_seed(1)
    draws = M.sample_next(probs.log().expand(4000, 4), top_k=2, generator=g)
    counts = torch.bincount(draws, minlength=4) / 4000.0
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1].item() - 0.5 / 0.8) < 0.03


# ----------------------------------------------------------------------------- training signal


def test_loss_at_init_is_log_vocab():
    torch.manual_seed(0)
    m = M.Transformer(M.ModelConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32))
    idx = torch.randint(0, 64, (8, 32))
    _, loss = m(idx, torch.randint(0, 64, (8, 32)))
    assert abs(loss.item() - math.log(64)) < 0.15


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    m = M.Transformer(M.ModelConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=32))
    data = torch.randint(0, 16, (4, 17))
    x, y = data[:, :-1], data[:, 1:]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(100):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_token_logprobs():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    targets[0, 1] = targets[1, 4] = -100
    logits[0, 1, 0] = float("-inf")  # an ignored position may hold anything (e.g. a filtered vocab)
    lp = M.token_logprobs(logits, targets)
    keep = targets != -100
    direct = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    assert lp.shape == (2, 5)
    assert torch.allclose(lp[keep], direct[keep])
    assert (lp[~keep] == 0).all()
    hot = M.token_logprobs(logits, targets, temperature=2.0)
    direct2 = torch.log_softmax(logits / 2.0, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    assert torch.allclose(hot[keep], direct2[keep]) and not torch.allclose(hot[keep], lp[keep])
    logits.requires_grad_()
    M.token_logprobs(logits, targets).sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~keep] == 0).all()


# ----------------------------------------------------------------------------- chat data


def labelled_spans(labels):
    """[(start, end)] of the maximal runs of labels != -100."""
    spans, start = [], None
    for i, lab in enumerate(list(labels) + [-100]):
        if lab != -100 and start is None:
            start = i
        elif lab == -100 and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_build_example_labels_exactly_the_assistant_tokens():
    tok = make_tokenizer()
    turns = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": "Name?"}, {"role": "assistant", "content": "Ada"}]
    ids, labels, truncated = M.build_example(tok, turns, block_size=128)
    assert not truncated
    assert tok.decode(ids) == "User: Hi there\nAssistant: Hello.<|eos|>User: Name?\nAssistant: Ada<|eos|>"
    assert len(labels) == len(ids)
    spans = labelled_spans(labels)
    assert [tok.decode(ids[a:b]) for a, b in spans] == ["Hello.<|eos|>", "Ada<|eos|>"]
    assert all(labels[i] == ids[i] for a, b in spans for i in range(a, b))
    assert [ids[b - 1] for a, b in spans] == [tok.eos_id] * 2
    first_user = len(tok.encode(M.chat_prompt("Hi there")))
    assert spans[0][0] == first_user  # the prompt (up to "Assistant: ") is not trained on


def test_build_example_truncation_keeps_answer_and_end_of_prompt():
    tok = make_tokenizer()
    block = 24
    # long prompt, short answer: the whole answer and the end of the prompt survive
    turns = [{"role": "user", "content": "abcdefghijklmnopqrstuvwxyz" * 2}, {"role": "assistant", "content": "Yes."}]
    ids, labels, truncated = M.build_example(tok, turns, block)
    assert truncated and len(ids) == len(labels) == block + 1
    assert tok.decode(ids).endswith("xyz\nAssistant: Yes.<|eos|>")
    assert [tok.decode(ids[a:b]) for a, b in labelled_spans(labels)] == ["Yes.<|eos|>"]
    # short prompt, long answer: the prompt keeps at least half the context, the answer is cut at its end
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "z" * 60}]
    ids, labels, truncated = M.build_example(tok, turns, block)
    prompt = tok.encode(M.chat_prompt("Q"))
    assert truncated and len(ids) == block + 1
    n_prompt = min(len(prompt), (block + 1) // 2)
    assert ids[:n_prompt] == prompt[-n_prompt:]
    assert tok.decode(ids[n_prompt:]) == "z" * (block + 1 - n_prompt)
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    # long everything: never more than block_size + 1
    turns = [{"role": "user", "content": "a" * 70}, {"role": "assistant", "content": "b" * 70}] * 2
    ids, labels, truncated = M.build_example(tok, turns, block)
    assert truncated and len(ids) == len(labels) == block + 1


def test_pad_batch():
    tok = make_tokenizer()
    assert tok.pad_id != tok.eos_id
    a = M.build_example(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], 64)
    b = M.build_example(tok, [{"role": "user", "content": "abcde"}, {"role": "assistant", "content": "bcd"}], 64)
    x, y, mask = M.pad_batch([a[:2], b[:2]], tok.pad_id)
    n_a, n_b = len(a[0]), len(b[0])
    assert x.shape == y.shape == mask.shape == (2, n_b - 1)
    assert x.dtype == y.dtype == torch.long
    assert x[0, :n_a - 1].tolist() == a[0][:-1] and y[0, :n_a - 1].tolist() == a[1][1:]
    assert x[1].tolist() == b[0][:-1] and y[1].tolist() == b[1][1:]
    assert (x[0, n_a - 1:] == tok.pad_id).all() and (y[0, n_a - 1:] == -100).all()
    assert mask[0].tolist() == [1] * (n_a - 1) + [0] * (n_b - n_a) and mask[1].all()
    # the target at the last prompt position is the first answer token
    first = a[1].index(next(lab for lab in a[1] if lab != -100))
    assert y[0, first - 1] == a[0][first]


# ----------------------------------------------------------------------------- grading


def test_answer_text_and_grade():
    assert P.answer_text("Paris. It is big.\nMore") == "Paris."
    assert P.answer_text("3.14 is pi. Yes") == "3.14 is pi."
    assert P.answer_text("Paris<|eos|>London") == "Paris"
    assert P.answer_text("line one\nline two") == "line one"
    assert P.grade("Paris.", ["Paris"])
    assert P.grade("  pARIS  ", ["Paris"])
    assert P.grade("Paris!\nThe capital of France.", ["paris"])
    assert P.grade("Paris. Also the largest city.", ["Paris"])
    assert P.grade("New   York", ["new york."])
    assert P.grade("I don't know.", ["I don't know"])
    assert not P.grade("London.", ["Paris"])
    assert not P.grade("The answer is Paris.", ["Paris"])
    assert not P.grade("Paris is the capital", ["Paris"])
    assert not P.grade("", ["Paris"])
    assert not P.grade("\nParis", ["Paris"])  # only the first line counts
    # the worked examples of data/README.md
    norway = ["Oslo", "The capital of Norway is Oslo."]
    assert P.grade("The capital of Norway is Oslo.", norway) and P.grade("oslo", norway)
    assert P.grade(" Oslo. The capital of Sweden...", norway)
    assert not P.grade("The capital of Norway is Oslo, a city by the sea.", norway)
    assert not P.grade("Sure! I can't help with that.", ["I can't help with that."])
    assert P.grade("I can't help with that. It could hurt someone.", ["I can't help with that."])


def test_grade_matches_the_documented_rule_on_random_text():
    """data/README.md states the rule as three lines of regex; model.py must agree on any text."""
    import random
    import re

    def reference(answer, acceptable):
        text = answer.split("<|eos|>", 1)[0].split("\n", 1)[0]
        m = re.search(r"[.!?](?=\s|$)", text)
        text = text[:m.end()] if m else text
        norm = lambda t: " ".join(t.lower().split()).rstrip(".!?").strip()  # noqa: E731
        return norm(text) in {norm(a) for a in acceptable}

    rng = random.Random(0)
    pieces = ["a", "B", " ", "  ", ".", "!", "?", "\n", "\t", "3.1", "<|eos|>", "x."]
    passed = 0
    for _ in range(3000):
        answer = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        gold = ["".join(rng.choice(pieces[:7]) for _ in range(rng.randint(0, 3)))]
        expected = reference(answer, gold)
        assert P.grade(answer, gold) == expected, (answer, gold)
        passed += expected
    assert 30 < passed < 2970  # both outcomes were exercised


# ----------------------------------------------------------------------------- optimizer, schedule


def test_configure_optimizer_decays_matrices_only():
    m = tiny_model(tiny_cfg(n_layer=2), dtype=torch.float32)
    opt = M.configure_optimizer(m, lr=1e-3, weight_decay=0.1)
    decay = [g for g in opt.param_groups if g["weight_decay"] > 0]
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0]
    assert len(decay) == 1 and decay[0]["weight_decay"] == 0.1
    decayed = {id(p) for p in decay[0]["params"]}
    kept = {id(p) for g in no_decay for p in g["params"]}
    listed = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(listed) == len(set(listed)) == len(list(m.parameters()))  # each once, tied embedding too
    assert id(m.wte.weight) in decayed and id(m.lm_head.weight) in decayed
    for name, p in m.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
        if name.endswith("bias") or "ln_" in name:
            assert id(p) in kept, name
    assert {n for n, p in m.named_parameters() if id(p) in decayed} == {
        "wte.weight", "wpe.weight",
        *(f"blocks.{i}.{s}.weight" for i in range(2) for s in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))}


def test_lr_at_warmup_and_cosine_endpoints():
    lr = lambda s: M.lr_at(s, max_lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)  # noqa: E731
    assert lr(0) == pytest.approx(0.1)
    assert lr(4) == pytest.approx(0.5)
    assert lr(9) == pytest.approx(1.0) and lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # halfway down the cosine
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    decay = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


# ----------------------------------------------------------------------------- checkpoints


class Wrapped(nn.Module):
    """Stands in for DistributedDataParallel: the real model lives at .module."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def _write_marker(path):
    Path(path).write_text("pickled code ran")
    return {}


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_write_marker, (self.path,))


def saved_tiny(tmp_path, stage="pretrain", **cfg_kw):
    tok = make_tokenizer()
    m = tiny_model(tiny_cfg(vocab_size=tok.vocab_size, block_size=32, **cfg_kw), std=0.3, dtype=torch.float32)
    path = tmp_path / "ckpt" / "tiny.pt"
    P.save_checkpoint(str(path), m, tok, stage=stage, step=7, metrics={"loss": 1.5})
    return m, tok, path


def test_checkpoint_round_trip_is_exact(tmp_path):
    m, tok, path = saved_tiny(tmp_path)
    loaded, tok2, ckpt = P.load_model(str(path))
    assert not loaded.training and ckpt["stage"] == "pretrain" and ckpt["step"] == 7
    assert ckpt["metrics"] == {"loss": 1.5}
    assert tok2.encode("Assistant: hi") == tok.encode("Assistant: hi") and tok2.eos_id == tok.eos_id
    idx = torch.randint(0, tok.vocab_size, (2, 9))
    assert torch.equal(loaded(idx)[0], m(idx)[0])
    assert loaded.lm_head.weight is loaded.wte.weight  # still tied after loading
    assert os.listdir(path.parent) == ["tiny.pt"]  # no temp file left behind


def test_checkpoint_of_wrapped_model_has_no_prefix(tmp_path):
    m, tok, _ = saved_tiny(tmp_path)
    assert P.unwrap(Wrapped(m)) is m and P.unwrap(m) is m
    path = tmp_path / "wrapped.pt"
    P.save_checkpoint(str(path), Wrapped(m), tok)
    ckpt = P.load_checkpoint(str(path))
    assert not any(k.startswith("module.") for k in ckpt["model"])
    loaded, _, _ = P.load_model(str(path))
    idx = torch.randint(0, tok.vocab_size, (1, 6))
    assert torch.equal(loaded(idx)[0], m(idx)[0])


def test_reward_checkpoint_round_trip_and_backbone(tmp_path):
    tok = make_tokenizer()
    rm = tiny_model(tiny_cfg(vocab_size=tok.vocab_size), std=0.3, dtype=torch.float32, cls=M.RewardModel)
    path = tmp_path / "reward.pt"
    P.save_checkpoint(str(path), rm, tok, stage="reward")
    idx = torch.randint(0, tok.vocab_size, (2, 6))
    loaded, _, _ = P.load_model(str(path), model_class=M.RewardModel)
    assert torch.equal(loaded(idx), rm(idx))
    body, _, _ = P.load_model(str(path))  # a reward checkpoint's backbone loads as a Transformer
    assert torch.equal(body(idx)[0], rm.backbone(idx)[0])
    # the likelihood weight is a setting saved beside the weights (reward.py --likelihood-weight)
    rm.likelihood_weight = 1.5
    P.save_checkpoint(str(path), rm, tok, stage="reward", likelihood_weight=rm.likelihood_weight)
    loaded, _, _ = P.load_model(str(path), model_class=M.RewardModel)
    assert loaded.likelihood_weight == 1.5
    assert M.reward_scores(loaded, tok, ["a"], ["ab"]) == M.reward_scores(rm, tok, ["a"], ["ab"])


def test_failed_save_leaves_old_checkpoint_intact(tmp_path, monkeypatch):
    m, tok, path = saved_tiny(tmp_path)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkpoint")  # a crash midway through writing
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        P.save_checkpoint(str(path), tiny_model(m.cfg, seed=1, dtype=torch.float32), tok)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["tiny.pt"]


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": Payload(str(marker))}, str(path))
    torch.load(str(path), weights_only=False)  # proves the file really carries code...
    assert marker.exists()
    marker.unlink()
    with pytest.raises(P.UserError, match="cannot load checkpoint"):
        P.load_checkpoint(str(path))
    with pytest.raises(P.UserError):
        P.load_model(str(path))
    assert not marker.exists()  # ... which load_checkpoint never ran


def test_bad_checkpoints_give_user_errors(tmp_path):
    with pytest.raises(P.UserError, match="not found"):
        P.load_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(P.UserError):
        P.load_checkpoint(str(tmp_path / "junk.pt"))
    _, _, path = saved_tiny(tmp_path)
    ckpt = P.load_checkpoint(str(path))
    ckpt["config"]["n_embd"] = 16  # weights of another shape than the config says
    torch.save(ckpt, str(tmp_path / "other.pt"))
    with pytest.raises(P.UserError, match="does not fit"):
        P.load_model(str(tmp_path / "other.pt"))
    with pytest.raises(P.UserError, match="is not a reward model"):  # an LM checkpoint has no reward head
        P.load_model(str(path), model_class=M.RewardModel)


# ----------------------------------------------------------------------------- command line


def run_cli(*args):
    return subprocess.run([sys.executable, "chat.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_help():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "--ckpt" in proc.stdout and "--max-new-tokens" in proc.stdout


def test_cli_samples_from_checkpoint(tmp_path):
    _, tok, path = saved_tiny(tmp_path)
    proc = run_cli("--ckpt", str(path), "--prompt", "ab", "--max-new-tokens", "5", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ab")  # a pretraining checkpoint continues the raw text


def test_run_main_turns_user_error_into_one_line_and_exit_2(tmp_path, capsys):
    def main():
        P.load_checkpoint(str(tmp_path / "nope.pt"))

    with pytest.raises(SystemExit) as exit_info:
        P.run_main(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint not found") and " — " in err and err.count("\n") == 1


def test_pooled_pass_rate_gives_each_prompt_one_vote():
    records = [{"kind": "unknown"}] * 2 + [{"kind": "harmful"}] * 4 + [{"kind": "fact"}] * 3
    rates = {"unknown": 0.0, "harmful": 0.75, "fact": 1.0}
    # 0 of 2 plus 3 of 4 is 3 of 6, not the 37.5% mean of the two rates
    assert P.pooled_pass_rate(rates, records, ("unknown", "harmful")) == pytest.approx(0.5)
    assert P.pooled_pass_rate(rates, records, ("fact",)) == 1.0
    assert math.isnan(P.pooled_pass_rate({}, records, ("unknown",)))


def test_rl_summary_averages_the_first_and_last_three_steps():
    log = [{"score": float(i), "kl": 10.0 - i, "zero_std_fraction": i / 10} for i in range(10)]
    records = [{"kind": "unknown"}, {"kind": "harmful"}]
    summary = P.rl_summary(log, "score", records, {"unknown": 1.0, "harmful": 0.0}, {"unknown": 0.0, "harmful": 0.0},
                           end_keys=("zero_std_fraction",))
    assert summary["score_start"] == 1.0 and summary["score_end"] == 8.0  # steps 0-2 and 7-9
    assert summary["kl_end"] == 2.0 and summary["kl_max"] == 10.0
    assert summary["zero_std_fraction_end"] == pytest.approx(0.8)
    assert summary["unknown_harmful"] == 0.5 and summary["sft_unknown_harmful"] == 0.0
    short = P.rl_summary(log[:2], "score", records, {}, {})  # fewer steps than the window: all of them
    assert short["score_start"] == short["score_end"] == 0.5


def test_cli_scores_answers_with_a_reward_model(tmp_path):
    tok = make_tokenizer()
    rm = tiny_model(tiny_cfg(vocab_size=tok.vocab_size), std=0.3, dtype=torch.float32, cls=M.RewardModel)
    path = tmp_path / "reward.pt"
    P.save_checkpoint(str(path), rm, tok, stage="reward")
    answers = ["ab", "ba"]
    proc = run_cli("--ckpt", str(path), "--prompt", "a", "--answer", answers[0], "--answer", answers[1],
                   "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    expected = M.reward_scores(rm, tok, ["a", "a"], answers)
    assert proc.stdout.splitlines() == [f"{r:+.2f}  {a}" for r, a in zip(expected, answers)]
    # a checkpoint that is not a reward model cannot score
    _, _, lm_path = saved_tiny(tmp_path)
    proc = run_cli("--ckpt", str(lm_path), "--prompt", "a", "--answer", "ab", "--device", "cpu")
    assert proc.returncode == 2 and "not a reward model" in proc.stderr and proc.stderr.count("\n") == 1


def test_load_policy_refuses_masked_lm_and_reward_checkpoints(tmp_path):
    tok = make_tokenizer()
    for name, net, stage, message in (
            ("mlm.pt", tiny_model(tiny_cfg(vocab_size=tok.vocab_size, causal=False), dtype=torch.float32),
             "pretrain", "masked-LM"),
            ("rm.pt", tiny_model(tiny_cfg(vocab_size=tok.vocab_size), dtype=torch.float32, cls=M.RewardModel),
             "reward", "is a reward model")):
        P.save_checkpoint(str(tmp_path / name), net, tok, stage=stage)
        with pytest.raises(P.UserError, match=message):
            P.load_policy(str(tmp_path / name))
    _, _, path = saved_tiny(tmp_path)
    assert P.load_policy(str(path))[0].cfg.causal


def test_require_positive_names_the_flag():
    from argparse import Namespace
    P.require_positive(Namespace(batch_size=1, grad_accum=3), "batch_size", "grad_accum")
    with pytest.raises(P.UserError, match="--grad-accum must be at least 1, got 0"):
        P.require_positive(Namespace(batch_size=1, grad_accum=0), "batch_size", "grad_accum")


# ----------------------------------------------------------------------------- model.py stands alone

def test_model_py_runs_with_nothing_but_torch_beside_it(tmp_path):
    """model.py can be read, copied and run on its own: copied alone into an empty folder, with every other
    module of the project made unimportable, it builds a model, trains a step and generates."""
    (tmp_path / "model.py").write_text((ROOT / "model.py").read_text())
    project = sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "model")
    script = f"""
import sys
BLOCKED = {project!r}

class Block:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("model.py imported " + name)
        return None

sys.meta_path.insert(0, Block)
sys.path.insert(0, {str(tmp_path)!r})
import torch
import model
net = model.Transformer(model.ModelConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=8))
opt = model.configure_optimizer(net, 1e-3)
x = torch.randint(0, 11, (2, 9))
net(x[:, :-1], x[:, 1:])[1].backward()
opt.step()
print(net.generate(x[:, :3], 4, temperature=0).shape)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip() == "torch.Size([2, 7])"
    import ast
    tree = ast.parse((ROOT / "model.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"math", "dataclasses", "torch"}, imported


def test_causal_mask_lets_each_query_read_itself_and_the_past_only():
    mask = M.causal_mask(3, 5, 2, "cpu")  # 3 new queries at positions 2, 3, 4 after 2 cached keys
    assert mask.tolist() == [[True, True, True, False, False],
                             [True, True, True, True, False],
                             [True, True, True, True, True]]
    assert torch.equal(M.causal_mask(4, 4, 0, "cpu"), torch.ones(4, 4, dtype=torch.bool).tril())
