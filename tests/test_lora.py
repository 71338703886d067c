"""LoRA: the layer's gradients, and the equivalences the method promises (init = base, merged = unmerged)."""

import pytest
import torch
import torch.nn as nn

import model as M
import plumbing as P
from lora import (LoRALinear, apply_lora, count_parameters, load_peft_state_dict, lora_layers, merge_lora,
                  peft_state_dict)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return M.Transformer(M.ModelConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


def randomize_adapters(net, seed=1):
    """B = 0 at init makes many checks trivially true; give the adapters values as if trained."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(net):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def test_lora_linear_gradcheck_float64():
    torch.manual_seed(0)
    base = nn.Linear(5, 4).double()
    layer = LoRALinear(base, rank=2, alpha=3.0)
    with torch.no_grad():
        layer.lora_B.normal_()  # non-zero B, so the gradient through A is exercised too
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    A, B = layer.lora_A, layer.lora_B
    assert torch.autograd.gradcheck(lambda x, A, B: LoRALinear.forward(layer, x), (x, A, B))
    # the same function written out: W x + b + (alpha / r) B A x
    expected = x @ base.weight.t() + base.bias + 1.5 * x @ (B @ A).t()
    torch.testing.assert_close(layer(x), expected)


def test_lora_linear_starts_as_base_and_freezes_it():
    base = nn.Linear(6, 7)
    layer = LoRALinear(base, rank=3, alpha=6.0)
    x = torch.randn(2, 6)
    assert torch.equal(layer(x), base(x))
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert layer.lora_A.abs().sum() > 0  # A random (B zero): otherwise no gradient ever reaches B
    assert layer.scaling == 2.0


def test_apply_lora_at_init_equals_base_model():
    net = tiny_model()
    x = torch.randint(0, 23, (3, 10))
    before = net(x)[0]
    apply_lora(net, rank=4, alpha=8)
    assert len(lora_layers(net)) == 4  # attn.c_attn and attn.c_proj in 2 blocks
    assert torch.equal(net(x)[0], before)


def test_merged_equals_unmerged():
    net = tiny_model()
    x = torch.randint(0, 23, (3, 10))
    base = net(x)[0]
    apply_lora(net, rank=4, alpha=8, targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc"))
    randomize_adapters(net)
    adapted = net(x)[0]
    assert (adapted - base).abs().max() > 1e-3  # the adapters do change the function
    merge_lora(net)
    assert not lora_layers(net)
    assert all(type(m) is nn.Linear for n, m in net.named_modules() if n.endswith(("c_attn", "c_fc")))
    torch.testing.assert_close(net(x)[0], adapted, atol=1e-5, rtol=1e-5)
    # a merged model is a plain Transformer: its state dict loads into a fresh one
    fresh = tiny_model(seed=5)
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(fresh(x)[0], adapted, atol=1e-5, rtol=1e-5)


def test_only_adapter_parameters_get_gradients():
    net = tiny_model()
    apply_lora(net, rank=2, alpha=4)
    randomize_adapters(net)
    x = torch.randint(0, 23, (2, 12))
    _, loss = net(x[:, :-1], targets=x[:, 1:])
    loss.backward()
    for name, p in net.named_parameters():
        is_adapter = name.endswith(("lora_A", "lora_B"))
        assert p.requires_grad == is_adapter, name
        assert (p.grad is not None and p.grad.abs().sum() > 0) == is_adapter, name
    trainable, total = count_parameters(net)
    assert trainable == sum(l.lora_A.numel() + l.lora_B.numel() for _, l in lora_layers(net))
    assert trainable < 0.2 * total


def test_lora_state_dict_round_trip(tmp_path):
    net = tiny_model()
    apply_lora(net, rank=3, alpha=6)
    randomize_adapters(net)
    x = torch.randint(0, 23, (2, 9))
    expected = net(x)[0]
    state = peft_state_dict(net)
    assert state and all(k.endswith(("lora_A", "lora_B")) for k in state)
    torch.save(state, tmp_path / "adapter.pt")

    other = apply_lora(tiny_model(), rank=3, alpha=6)  # same base weights, fresh adapters
    assert not torch.allclose(other(x)[0], expected)
    load_peft_state_dict(other, torch.load(tmp_path / "adapter.pt", weights_only=True))
    torch.testing.assert_close(other(x)[0], expected)

    wrong_rank = apply_lora(tiny_model(), rank=2, alpha=6)
    with pytest.raises(P.UserError, match="rank"):
        load_peft_state_dict(wrong_rank, state)
    wrong_targets = apply_lora(tiny_model(), rank=3, alpha=6, targets=("attn.c_attn",))
    with pytest.raises(P.UserError):
        load_peft_state_dict(wrong_targets, state)


def test_unknown_target_is_a_user_error():
    with pytest.raises(P.UserError, match="matches no linear layer"):
        apply_lora(tiny_model(), rank=2, alpha=4, targets=("attn.q_proj",))
