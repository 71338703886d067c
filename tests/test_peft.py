"""Adapters and prefix tuning beside LoRA: gradients, what each method promises at initialisation, that
only its own weights train, that they save and load alone, and that a prefix keeps padding, batching
and the KV cache exact. Tiny float64 models throughout (test_model.py's builders)."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_model import PAD_MASK, gradcheck_module, tiny_cfg, tiny_model, twin

import model as M
from helpers import left_padded_batch_equals_one_at_a_time
import plumbing as P
from bpe import CharTokenizer
from lora import (PEFT_WEIGHTS, Adapted, Adapter, KVPrefix, apply_adapters, apply_peft, apply_prefix, count_parameters,
                  load_peft_state_dict, lora_layers, peft_config, peft_state_dict, remove_adapters, remove_prefix)

CONFIGS = {"lora": dict(method="lora", rank=2, alpha=4.0, targets=["attn.c_attn", "attn.c_proj"], dropout=0.0),
           "adapter": dict(method="adapter", size=3, where=["attn", "mlp"]),
           "prefix": dict(method="prefix", prefix_len=3)}


def as_if_trained(net, seed=1):
    """LoRA's B and the adapters' W_up start at zero, which makes many checks trivially true; give every
    method weight random values, as if trained."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not PEFT_WEIGHTS.isdisjoint(name.split(".")):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return net


def with_random_prefix(m, prefix_len=3, std=1.0, seed=0):
    """m with a prefix of random keys and values in every layer (large enough to change every output)."""
    g = torch.Generator().manual_seed(seed)
    head_dim = m.cfg.n_embd // m.cfg.n_head
    for block in m.blocks:
        shape = (m.cfg.n_head, prefix_len, head_dim)
        block.attn.kv_prefix = KVPrefix(*(torch.randn(shape, generator=g, dtype=torch.float64) * std for _ in "kv"))
    return m


def is_base(name):
    return PEFT_WEIGHTS.isdisjoint(name.split("."))


# ----------------------------------------------------------------------------- adapters


def test_adapter_gradcheck_float64_and_formula():
    torch.manual_seed(0)
    adapter = Adapter(8, 3).double()
    with torch.no_grad():
        adapter.up.weight.normal_()  # W_up = 0 would hide the gradient through W_down
        adapter.ln.weight.normal_()
    h = torch.randn(2, 5, 8, dtype=torch.float64)
    gradcheck_module(adapter, h)
    # the same function written out: h + W_up f(W_down LN(h))
    ln = F.layer_norm(h, (8,), adapter.ln.weight, adapter.ln.bias)
    expected = h + F.gelu(ln @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias
    torch.testing.assert_close(adapter(h), expected)
    assert adapter.size == 3


def test_adapters_start_as_the_base_model_and_remove_exactly():
    m = tiny_model(tiny_cfg(n_layer=2), std=0.3)
    idx = torch.randint(0, 11, (2, 6))
    base_logits, base_state = m(idx)[0], {k: v.clone() for k, v in m.state_dict().items()}
    apply_adapters(m, size=3)
    assert len([1 for mod in m.modules() if isinstance(mod, Adapter)]) == 4  # after attn and mlp, 2 blocks
    assert torch.equal(m(idx)[0], base_logits)  # W_up = 0: identical, not merely close
    as_if_trained(m)
    assert (m(idx)[0] - base_logits).abs().max() > 1e-3
    remove_adapters(m)
    assert not any(isinstance(mod, (Adapter, Adapted)) for mod in m.modules())
    assert m.state_dict().keys() == base_state.keys()
    assert all(torch.equal(v, base_state[k]) for k, v in m.state_dict().items())
    assert torch.equal(m(idx)[0], base_logits)


def test_adapter_sites_and_a_typo():
    m = apply_adapters(tiny_model(tiny_cfg(n_layer=2)), size=2, where=("mlp",))
    assert [type(b.attn).__name__ for b in m.blocks] == ["SelfAttention"] * 2
    assert all(isinstance(b.mlp, Adapted) for b in m.blocks)
    assert peft_config(m) == dict(method="adapter", size=2, where=["mlp"])
    with pytest.raises(P.UserError, match="adapters go after"):
        apply_adapters(tiny_model(), size=2, where=("ffn",))


# ----------------------------------------------------------------------------- prefix tuning


def reference_attention(attn, x, p_k, p_v, causal):
    """softmax(Q [P_k; K]^T / sqrt(d) + [0 | M]) [P_v; V], written out for one unpadded batch."""
    B, T, C = x.shape
    nh, L = attn.n_head, p_k.size(1)
    q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    k = torch.cat([p_k.expand(B, -1, -1, -1), k], dim=2)
    v = torch.cat([p_v.expand(B, -1, -1, -1), v], dim=2)
    allowed = torch.ones(T, L + T, dtype=torch.bool)
    if causal:
        allowed[:, L:] = torch.ones(T, T).tril().bool()  # the prefix columns stay visible to every query
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C // nh)).masked_fill(~allowed, float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return attn.c_proj(y)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_with_prefix_is_the_written_out_formula(impl, causal):
    host = with_random_prefix(tiny_model(tiny_cfg(attn_impl=impl, causal=causal), std=0.5))
    attn = host.blocks[0].attn
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    p_k, p_v = attn.kv_prefix()
    torch.testing.assert_close(attn(x, host._attention_mask(5, 0, None, "cpu")),
                               reference_attention(attn, x, p_k, p_v, causal))


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_gradcheck_attention_with_prefix(impl, causal, padded):
    """Gradients w.r.t. the input, the frozen weights and P_k, P_v (all explicit inputs)."""
    host = with_random_prefix(tiny_model(tiny_cfg(attn_impl=impl, causal=causal), std=0.5), std=0.5)
    attn = host.blocks[0].attn
    assert {n for n, _ in attn.named_parameters()} >= {"kv_prefix.key", "kv_prefix.value"}
    mask = host._attention_mask(5, 0, PAD_MASK if padded else None, "cpu")
    gradcheck_module(attn, torch.randn(2, 5, 8, dtype=torch.float64), mask)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_manual_attention_equals_sdpa_with_prefix(causal, padded):
    sdpa = tiny_model(tiny_cfg(causal=causal, n_layer=2), std=0.3)
    manual = twin(sdpa, attn_impl="manual")
    sdpa, manual = with_random_prefix(sdpa), with_random_prefix(manual)  # the same seed: the same prefix
    idx = torch.randint(0, 11, (2, 5))
    mask = PAD_MASK if padded else None
    real = PAD_MASK.bool() if padded else torch.ones(2, 5, dtype=torch.bool)
    a, b = manual(idx, attention_mask=mask)[0], sdpa(idx, attention_mask=mask)[0]
    assert torch.allclose(a[real], b[real], atol=1e-10)


def test_prefix_leaves_the_base_untouched_and_removing_it_gives_the_base_model():
    """A prefix is read from step 0, so the logits change at initialisation (unlike LoRA and adapters);
    what stays exact is everything else: no base weight changes, and without the prefix it is the base."""
    m = tiny_model(tiny_cfg(n_layer=2), std=0.3)
    idx = torch.randint(0, 11, (2, 6))
    base_logits, base_state = m(idx)[0], {k: v.clone() for k, v in m.state_dict().items()}
    apply_prefix(m, prefix_len=3)
    assert peft_config(m) == dict(method="prefix", prefix_len=3)
    assert all(b.attn.kv_prefix.key.shape == (2, 3, 4) for b in m.blocks)  # (n_head, L, head_dim) per layer
    assert not torch.allclose(m(idx)[0], base_logits, atol=1e-3)
    assert all(torch.equal(v, base_state[k]) for k, v in m.state_dict().items() if is_base(k))
    remove_prefix(m)
    assert m.state_dict().keys() == base_state.keys()
    assert torch.equal(m(idx)[0], base_logits)
    with pytest.raises(P.UserError, match="prefix length"):
        apply_prefix(tiny_model(), prefix_len=0)


def test_prefix_starts_as_the_keys_and_values_of_real_tokens():
    """Initialised from activations (Li & Liang): each layer's prefix is the KV cache of L random tokens."""
    m = tiny_model(tiny_cfg(n_layer=2), std=0.3)
    torch.manual_seed(3)
    ids = torch.randint(m.cfg.vocab_size, (1, 4))  # the draw apply_prefix makes first
    cache = M.KVCache(m.cfg, 1, "cpu", torch.float64)
    m(ids, kv_cache=cache)
    torch.manual_seed(3)
    apply_prefix(m, prefix_len=4)
    for block in m.blocks:
        i = block.attn.layer_idx
        assert torch.equal(block.attn.kv_prefix.key, cache.k[i, 0, :, :4])
        assert torch.equal(block.attn.kv_prefix.value, cache.v[i, 0, :, :4])


def test_prefix_takes_no_position():
    """The tokens get positions 0..T-1 with or without a prefix, and a full block_size of tokens still
    fits: the prefix adds keys, not positions."""
    m = with_random_prefix(tiny_model(tiny_cfg(n_layer=2), std=0.3), prefix_len=5)
    positions = []
    m.wpe.register_forward_hook(lambda module, inputs, output: positions.append(inputs[0]))
    idx = torch.randint(0, 11, (2, m.cfg.block_size))
    assert m(idx)[0].shape == (2, m.cfg.block_size, 11)
    remove_prefix(m)(idx)
    assert torch.equal(positions[0], positions[1]) and positions[0].tolist() == [list(range(m.cfg.block_size))]


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_kv_cache_forward_equals_full_forward_with_prefix(impl, padded):
    """Prefill 3 tokens, then feed the rest one at a time: the prefix is put in front at every step."""
    m = with_random_prefix(tiny_model(tiny_cfg(attn_impl=impl, n_layer=2), std=0.3))
    idx = torch.randint(0, 11, (2, 7))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]) if padded else None
    full = m(idx, attention_mask=mask)[0]
    cache = M.KVCache(m.cfg, 2, "cpu", torch.float64)
    steps = [m(idx[:, :3], attention_mask=None if mask is None else mask[:, :3], kv_cache=cache)[0]]
    for t in range(3, 7):
        steps.append(m(idx[:, t:t + 1], attention_mask=None if mask is None else mask[:, :t + 1], kv_cache=cache)[0])
    assert cache.length == 7  # the cache holds the tokens' keys and values only
    real = mask.bool() if padded else torch.ones(2, 7, dtype=torch.bool)
    assert torch.allclose(torch.cat(steps, 1)[real], full[real], atol=1e-10)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_generate_with_prefix_and_cache_equals_without_cache(impl):
    """Running past block_size (8), so the window slides; greedy and seeded sampling."""
    base = tiny_model(tiny_cfg(attn_impl=impl, n_layer=2, vocab_size=16), seed=2)
    m = with_random_prefix(twin(base))
    seen, differs = set(), False
    for n_prompt in (1, 3, 8):
        prompt = torch.randint(0, 16, (2, n_prompt))
        fast = m.generate(prompt, 14, temperature=0, use_cache=True)
        assert torch.equal(fast, m.generate(prompt, 14, temperature=0, use_cache=False))
        seen |= set(fast[:, n_prompt:].flatten().tolist())
        differs |= not torch.equal(fast, base.generate(prompt, 14, temperature=0))
        fast, slow = (m.generate(prompt, 14, temperature=1.0, top_k=8, use_cache=use_cache,
                                 generator=torch.Generator().manual_seed(n_prompt)) for use_cache in (True, False))
        assert torch.equal(fast, slow)
    assert len(seen) > 3 and differs  # varied continuations, and the prefix does steer them


@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_left_padded_generate_with_prefix_equals_one_at_a_time(use_cache):
    m = with_random_prefix(tiny_model(tiny_cfg(n_layer=2, vocab_size=16, block_size=16), seed=4))
    left_padded_batch_equals_one_at_a_time(m, use_cache)


# ----------------------------------------------------------------------------- the three alike


@pytest.mark.parametrize("method", list(CONFIGS))
def test_only_the_methods_weights_get_gradients(method):
    m = as_if_trained(apply_peft(tiny_model(tiny_cfg(n_layer=2), std=0.3), CONFIGS[method]))
    idx = torch.randint(0, 11, (2, 7))
    _, loss = m(idx[:, :-1], targets=idx[:, 1:])
    loss.backward()
    for name, p in m.named_parameters():
        assert p.requires_grad == (not is_base(name)), name
        assert (p.grad is not None and p.grad.abs().sum() > 0) == (not is_base(name)), name
    trainable, total = count_parameters(m)
    assert trainable == sum(v.numel() for v in peft_state_dict(m).values()) and trainable < 0.3 * total


@pytest.mark.parametrize("method", list(CONFIGS))
def test_peft_config_reads_back_what_was_applied(method):
    m = apply_peft(tiny_model(tiny_cfg(n_layer=2)), CONFIGS[method])
    assert peft_config(m) == CONFIGS[method]
    assert peft_config(tiny_model()) is None


@pytest.mark.parametrize("method", list(CONFIGS))
def test_method_weights_save_and_load_alone(tmp_path, method):
    config = CONFIGS[method]
    m = as_if_trained(apply_peft(tiny_model(tiny_cfg(n_layer=2), std=0.3), config))
    idx = torch.randint(0, 11, (2, 6))
    expected = m(idx)[0]
    state = peft_state_dict(m)
    assert state and all(not is_base(k) for k in state)
    torch.save(state, tmp_path / "method.pt")
    other = apply_peft(tiny_model(tiny_cfg(n_layer=2), std=0.3), config)  # the same base, fresh method weights
    assert not torch.allclose(other(idx)[0], expected)
    load_peft_state_dict(other, torch.load(tmp_path / "method.pt", weights_only=True))
    assert torch.equal(other(idx)[0], expected)
    size = {"lora": "rank", "adapter": "size", "prefix": "prefix_len"}[method]
    wrong = apply_peft(tiny_model(tiny_cfg(n_layer=2), std=0.3), dict(config, **{size: config[size] + 1}))
    with pytest.raises(P.UserError, match="do not fit"):
        load_peft_state_dict(wrong, state)


@pytest.mark.parametrize("method", list(CONFIGS))
def test_checkpoint_records_the_method_and_load_model_rebuilds_it(tmp_path, method):
    tok = CharTokenizer.train("abcdefghij")
    m = tiny_model(tiny_cfg(vocab_size=tok.vocab_size, n_layer=2), std=0.3, dtype=torch.float32)
    as_if_trained(apply_peft(m, CONFIGS[method]))
    P.save_checkpoint(str(tmp_path / "peft.pt"), m, tok, stage="sft")
    loaded, _, ckpt = P.load_model(str(tmp_path / "peft.pt"))
    assert ckpt["peft"] == CONFIGS[method]
    idx = torch.randint(0, tok.vocab_size, (2, 6))
    assert torch.equal(loaded(idx)[0], m(idx)[0])
    assert all(p.requires_grad for p in loaded.parameters())  # as from any checkpoint: the next stage decides
    if method == "lora":
        assert lora_layers(loaded)  # saved unmerged, loaded unmerged
