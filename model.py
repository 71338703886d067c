"""The transformer: one network for every stage of the lifecycle.

This file imports nothing but torch and the standard library: it can be read, copied and run on
its own. Every stage builds on it.

A language model assigns a probability to the next token given the ones before it. The
transformer computes that distribution for every position at once:

    h_0 = E[x_t] + P[t]                                  token + position embeddings
    h_l = h_{l-1} + Attn(LN(h_{l-1}))                    pre-norm residual block, part 1
    h_l = h_l     + MLP(LN(h_l))                         pre-norm residual block, part 2
    logits_t = LN(h_L)_t · E^T                           LM head tied to the token embedding

Self-attention lets each position read from the others. For one head with queries Q, keys K and
values V (each a linear map of the input),

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head) + M) V

where the mask M is 0 where reading is allowed and -inf where it is not. A *causal* model (GPT)
masks every key to the right of the query, so position t only sees x_<=t and can be trained on
next-token prediction, L = -sum_t log P(x_{t+1} | x_<=t). A *bidirectional* model (BERT) masks
nothing and is trained to fill in masked tokens (masked LM). `ModelConfig.causal` picks which.
Padding is masked the same way: no query ever reads a `<|pad|>` key.

Generation samples one token, appends it and repeats. Without a cache every step recomputes
keys and values for the whole prefix; with a key/value cache each layer keeps K and V of the
tokens seen so far, so a new token costs one position (`generate(..., use_cache=True)`).
Reinforcement learning (ppo.py, grpo.py) samples whole answers this way and then needs the
log-probability of every sampled token: `sample_answers` and `answer_logits`.

The chat template turns a conversation into tokens, `User: {prompt}\\nAssistant: {answer}<|eos|>`,
with labels on what the assistant says only (`build_example`). A reward model is this network with
its LM head replaced by one scalar read at the last real token (`RewardModel`).

Training the network, the parts every stage shares. AdamW's weight decay pulls weight matrices
towards 0 at each step (θ ← θ − lr·λ·θ beside the Adam update); biases and LayerNorm gains are left
alone (`configure_optimizer`). The learning rate warms up linearly, then follows a cosine down to a
tenth of its peak over S steps (`lr_at`):

    lr(s) = lr_max · (s + 1) / warmup                                          s < warmup
    lr(s) = lr_max · (0.1 + 0.9 · ½ (1 + cos(π · (s − warmup) / (S − warmup))))    after that

and the gradients' global norm is clipped before every step (`optimizer_step`). A training token
costs about 6·N FLOPs for N parameters (2 in the forward pass, 4 in the backward) plus
12·n_layer·n_embd·T for the attention scores over T positions (`flops_per_token`); model FLOPs
utilisation (MFU) is the FLOPs per second achieved divided by the accelerator's peak.

Prefix tuning (lora.py) needs one hook here, in `SelfAttention.prepend_prefix`: each layer may
carry L trainable key and value vectors P_k, P_v per head that no token produced, and every query
attends over them as well as over the sequence's own keys and values:

    Attention(Q, [P_k; K], [P_v; V]) = softmax(Q [P_k; K]^T / sqrt(d_head) + [0 | M]) [P_v; V]

The mask gains L columns that are always 0 (visible): the prefix is in no position's past or future
and is never padding. It takes no position (the position embedding counts tokens only) and no room
in the KV cache (the cache holds what tokens produced; the prefix is put in front again at every
step), so padding, batching and cached generation work with it unchanged.

Talk to any checkpoint with chat.py; plumbing.py loads and saves them.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- the network

@dataclass
class ModelConfig:
    vocab_size: int = 128
    block_size: int = 128  # longest sequence the position embedding covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm
    causal: bool = True  # True: GPT decoder (next token); False: BERT encoder (masked LM)
    attn_impl: str = "sdpa"  # "manual": every step written out; "sdpa": PyTorch's fused kernel


class SelfAttention(nn.Module):
    def __init__(self, cfg, layer_idx=0):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.layer_idx, self.cfg = cfg.n_head, layer_idx, cfg
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.kv_prefix = None  # prefix tuning (lora.py) puts a module here that returns (P_k, P_v)

    def forward(self, x, mask=None, kv_cache=None):
        """x: (B, T, C). mask: bool (B|1, 1, T, T_keys), True = may attend; None = plain causal."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): each head attends in its own subspace
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
        if self.kv_prefix is not None:
            k, v, mask = self.prepend_prefix(k, v, mask, T)
        dropout_p = self.cfg.dropout if self.training else 0.0
        if self.cfg.attn_impl == "manual":
            if mask is None and self.cfg.causal:
                mask = causal_mask(T, k.size(2), k.size(2) - T, x.device)
            scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, nh, T, T_keys)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.softmax(scores, dim=-1)
            y = self.attn_dropout(weights) @ v
        else:
            # with no explicit mask the fused kernel applies causality itself (and may use flash)
            is_causal = mask is None and self.cfg.causal
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                               is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def prepend_prefix(self, k, v, mask, T):
        """Prefix tuning: keys [P_k; K] and values [P_v; V], with L mask columns every query may read.
        k, v: (B, n_head, T_keys, head_dim), the keys and values of the tokens (cache included); the
        last T of them belong to the T queries. Returns k, v and mask with the L prefix columns first."""
        p_k, p_v = (p.to(k.dtype).expand(k.size(0), -1, -1, -1) for p in self.kv_prefix())
        if mask is None and self.cfg.causal:
            # is_causal would align query i with key i, a prefix column: spell the causal mask out
            mask = causal_mask(T, k.size(2), k.size(2) - T, k.device)
        if mask is not None:
            mask = torch.cat([mask.new_ones(*mask.shape[:-1], p_k.size(2)), mask], dim=-1)
        return torch.cat([p_k, k], dim=2), torch.cat([p_v, v], dim=2), mask


def causal_mask(T, T_keys, past, device):
    """(T, T_keys) bool: query i (at absolute position past + i) may read keys 0 .. past + i."""
    q_pos = torch.arange(past, past + T, device=device)[:, None]
    return torch.arange(T_keys, device=device)[None, :] <= q_pos


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg, layer_idx=0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = SelfAttention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, mask=None, kv_cache=None):
        x = x + self.attn(self.ln_1(x), mask, kv_cache)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: reading a token and writing it share a vector
        self.apply(self._init_weights)
        # Each block adds two projections to the residual stream; scaling them by 1/sqrt(2·n_layer)
        # keeps the stream's variance from growing with depth (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameters the compute scales with; the tied token embedding is counted once."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, attention_mask=None, kv_cache=None, return_hidden=False):
        """idx: (B, T) token ids. targets: (B, T) ids to predict at each position, -100 = no loss.
        attention_mask: (B, T_past + T), 1 for real tokens and 0 for padding.
        Returns (logits, loss), or (logits, loss, hidden) with return_hidden=True."""
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + T > self.cfg.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.cfg.block_size}")
        if attention_mask is not None:
            # positions count real tokens only, so a left-padded row sees the same positions as an
            # unpadded one and batched generation matches one-at-a-time generation
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
        else:
            pos = torch.arange(past, past + T, device=idx.device)[None, :]
        x = self.drop(self.wte(idx) + self.wpe(pos))
        mask = self._attention_mask(T, past, attention_mask, idx.device)
        for block in self.blocks:
            x = block(x, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        hidden = self.ln_f(x)
        logits = self.lm_head(hidden)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
        return (logits, loss, hidden) if return_hidden else (logits, loss)

    def _attention_mask(self, T, past, attention_mask, device):
        """None when plain causal (or full) attention is enough; else bool (B|1, 1, T, past+T)."""
        if attention_mask is None and (past == 0 or not self.cfg.causal):
            return None
        T_keys = past + T
        mask = (causal_mask(T, T_keys, past, device) if self.cfg.causal
                else torch.ones(T, T_keys, dtype=torch.bool, device=device))[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, -T_keys:].bool()
            # a padding query would see no key at all (softmax of all -inf is NaN); let every query
            # see itself. Outputs at padding positions are never used.
            itself = (torch.arange(T_keys, device=device)[None, :]
                      == torch.arange(past, past + T, device=device)[:, None])
            mask = mask | itself
        return mask

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_id=None,
                 use_cache=True, attention_mask=None, generator=None):
        """Sample max_new_tokens after idx (B, T); rows may be left-padded (attention_mask 0).
        temperature 0 is greedy. Rows that produced eos_id are filled with eos_id until all have
        finished. Returns (B, T + new) ids."""
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        cache = None
        for _ in range(max_new_tokens):
            if cache is not None and cache.length < self.cfg.block_size:
                # one new position: the cache holds keys and values of everything before it
                logits, _ = self(idx[:, -1:], attention_mask=attention_mask[:, -(cache.length + 1):],
                                 kv_cache=cache)
            else:
                # (re)start from the last block_size tokens, exactly like the cache-free path
                ctx, ctx_mask = idx[:, -self.cfg.block_size:], attention_mask[:, -self.cfg.block_size:]
                cache = KVCache(self.cfg, idx.size(0), idx.device, self.wte.weight.dtype) if use_cache else None
                logits, _ = self(ctx, attention_mask=ctx_mask, kv_cache=cache)
            next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            if eos_id is not None:
                next_id = torch.where(finished, torch.full_like(next_id, eos_id), next_id)
                finished |= next_id == eos_id
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, torch.ones_like(next_id)[:, None]], dim=1)
            if eos_id is not None and finished.all():
                break
        return idx


# ----------------------------------------------------------------------------- generation

class KVCache:
    """Keys and values of every layer for the tokens generated so far (preallocated)."""

    def __init__(self, cfg, batch_size, device, dtype):
        head_dim = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled; advanced by Transformer.forward after all layers

    def update(self, layer, k, v):
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token id per row from (B, V) logits. temperature 0 = argmax (greedy)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        # nucleus: keep the smallest set of tokens whose probability adds up to top_p
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # tokens entirely beyond the nucleus
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def token_logprobs(logits, targets, temperature=1.0):
    """log P(target_t | x_<=t) for each position; 0 where target is -100. (B, T) float32.
    Compute it at the sampling temperature, or the KL between sampler and scorer drifts."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    mask = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, picked, 0.0)  # not picked * mask: -inf * 0 would be NaN


def entropy_from_logits(logits, temperature=1.0):
    """H(π(·|s_t)) = −Σ_a π(a|s_t) log π(a|s_t) at each position, at the sampling temperature: how spread
    out the policy's next-token distribution is (RL watches it fall as the policy commits)."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def answer_mask(answers, eos_id):
    """1.0 on answer tokens up to and including the first <|eos|>, 0.0 after it."""
    is_eos = (answers == eos_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos
    return (eos_before == 0).float()


@dataclass
class SampledAnswers:
    """A batch of sampled answers laid out for scoring: left-padded prompt, then the answer."""
    sequences: torch.Tensor       # (B, P + N) prompt (left-padded) + answer (pad after its <|eos|>)
    attention_mask: torch.Tensor  # (B, P + N) 1 = real token
    prompt_len: int               # P
    targets: torch.Tensor         # (B, N) answer tokens, -100 where mask is 0
    mask: torch.Tensor            # (B, N) 1.0 on answer tokens (through the first <|eos|>)
    finished: torch.Tensor        # (B,) True where the answer produced <|eos|>


@torch.no_grad()
def sample_answers(policy, prompt_ids, prompt_mask, max_new_tokens, temperature, eos_id, pad_id, generator=None):
    """One answer per left-padded prompt row, sampled with the KV cache. What follows an answer's
    first <|eos|> (generate repeats it) becomes padding, so every later forward pass sees exactly
    the tokens that were sampled."""
    P = prompt_ids.size(1)
    out = policy.generate(prompt_ids, max_new_tokens, temperature=temperature, eos_id=eos_id,
                          attention_mask=prompt_mask, generator=generator)
    answers = out[:, P:]
    mask = answer_mask(answers, eos_id)
    answers = answers.masked_fill(mask == 0, pad_id)
    finished = (answers == eos_id).any(dim=-1)
    return SampledAnswers(torch.cat([prompt_ids, answers], dim=1), torch.cat([prompt_mask, mask.long()], dim=1),
                          P, answers.masked_fill(mask == 0, -100), mask, finished)


def answer_logits(net, sequences, attention_mask, prompt_len):
    """Logits and hidden states at the answer's states s_t. sequences = left-padded prompt (prompt_len
    columns) + right-padded answer; the token in column t is chosen from the output at column t-1,
    so the answer's outputs are columns prompt_len-1 .. T-2."""
    logits, _, hidden = net(sequences[:, :-1], attention_mask=attention_mask[:, :-1], return_hidden=True)
    return logits[:, prompt_len - 1:], hidden[:, prompt_len - 1:]


# ----------------------------------------------------------------------------- the chat format

def chat_prompt(prompt):
    """The text a model sees before it answers: generation starts after it."""
    return f"User: {prompt}\nAssistant: "


def build_example(tokenizer, turns, block_size):
    """Token ids and labels for a conversation [{"role": "user"|"assistant", "content"}, ...].

    Every turn becomes `User: {prompt}\\nAssistant: {response}<|eos|>`. Labels equal the ids on
    what the assistant says, its closing <|eos|> included (or the model never learns to stop),
    and -100 on everything else. Returns (ids, labels, truncated), at most block_size + 1 tokens
    (inputs are ids[:-1], targets labels[1:]).

    Truncation rule for a too-long example: keep the final answer and the end of the prompt.
    The prompt is cut from the left; it keeps at least half the context if the answer is long,
    and then the answer is cut from the right."""
    ids, labels = [], []
    for turn in turns:
        if turn["role"] == "user":
            piece = tokenizer.encode(chat_prompt(turn["content"]))
            ids += piece
            labels += [-100] * len(piece)
        else:
            piece = tokenizer.encode(turn["content"]) + [tokenizer.eos_id]
            ids += piece
            labels += piece
    limit = block_size + 1
    if len(ids) <= limit:
        return ids, labels, False
    last = turns[-1]
    n_answer = len(tokenizer.encode(last["content"])) + 1 if last["role"] == "assistant" else 0
    n_prompt = len(ids) - n_answer
    keep_prompt = max(limit - n_answer, min(n_prompt, limit // 2))
    start = n_prompt - keep_prompt
    return ids[start:start + limit], labels[start:start + limit], True


def pad_batch(examples, pad_id, device="cpu"):
    """[(ids, labels), ...] -> inputs, targets, attention_mask, right-padded to the longest.
    Inputs are ids[:-1], targets labels[1:] (the token each position must predict)."""
    T = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (ids, labels) in enumerate(examples):
        n = len(ids) - 1
        x[i, :n] = torch.tensor(ids[:-1])
        y[i, :n] = torch.tensor(labels[1:])
        mask[i, :n] = 1
    return x.to(device), y.to(device), mask.to(device)


def left_pad(rows, pad_id, device="cpu"):
    """Prompts of different lengths -> (ids, attention_mask), padded on the left so that every
    row's answer starts in the same column when a batch is generated together."""
    T = max(len(ids) for ids in rows)
    idx = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, ids in enumerate(rows):
        idx[i, T - len(ids):] = torch.tensor(ids)
        mask[i, T - len(ids):] = 1
    return idx.to(device), mask.to(device)


def sequence_logps(model, examples, pad_id, device):
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) for each (ids, labels) of build_example: the sum runs
    over the answer tokens only, since token_logprobs gives 0 where the label is -100."""
    x, y, mask = pad_batch(examples, pad_id, device)
    logits, _ = model(x, attention_mask=mask)
    return token_logprobs(logits, y).sum(-1)


def chat_ids(tokenizer, prompt, answer, block_size):
    """(ids, n_answer, truncated): `User: {prompt}\\nAssistant: {answer}<|eos|>` in at most block_size
    tokens, the whole concatenation a reward model reads (no next-token shift, hence block_size - 1);
    its last n_answer tokens are the answer and its <|eos|>."""
    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    ids, labels, truncated = build_example(tokenizer, turns, block_size - 1)
    return ids, sum(1 for t in labels if t != -100), truncated


# ----------------------------------------------------------------------------- reward model

class RewardModel(nn.Module):
    """A transformer whose LM head is replaced by one scalar read at the last real token:
    r(x, y) = w · h_last(prompt + answer) + b. reward.py trains it; ppo.py scores samples with it.

    With likelihood_weight α > 0 the LM head stays in use and the reward adds the answer's average
    log-likelihood under the same network, r += α · (1/|y|) Σ_t log p(y_t | x, y_<t): a small causal
    model that knows a fact predicts it, even where its last token cannot tell a right answer from a
    wrong one (reward.py's docstring explains the trade)."""

    def __init__(self, cfg: ModelConfig, likelihood_weight=0.0):
        super().__init__()
        self.backbone = Transformer(cfg)
        self.score_head = nn.Linear(cfg.n_embd, 1)
        nn.init.normal_(self.score_head.weight, std=0.02)  # start close to "no preference"
        nn.init.zeros_(self.score_head.bias)
        self.likelihood_weight = float(likelihood_weight)  # a setting, saved with the checkpoint

    @property
    def cfg(self):
        return self.backbone.cfg

    def forward(self, idx, attention_mask=None, answer_mask=None, return_hidden=False):
        """(B, T) ids -> (B,) rewards. Left or right padding: the last 1 of attention_mask counts.
        answer_mask (B, T) marks the answer's tokens (and its <|eos|>); needed when α > 0.
        return_hidden=True also returns the hidden states (B, T, C) and the log-likelihoods (B, T-1)
        the likelihood term averages (column t: token t+1 on the answer; zeros off it and when α = 0)."""
        logits, _, hidden = self.backbone(idx, attention_mask=attention_mask, return_hidden=True)
        rewards = self.score_head(last_token(hidden, attention_mask)).squeeze(-1)
        logps = None
        if self.likelihood_weight:
            if answer_mask is None:
                raise ValueError("a reward model with likelihood_weight > 0 needs answer_mask")
            targets = torch.where(answer_mask[:, 1:].bool(), idx[:, 1:], -100)  # position t predicts t+1
            logps = token_logprobs(logits[:, :-1], targets)
            mean_logp = logps.sum(-1) / answer_mask[:, 1:].sum(-1).clamp(min=1)
            rewards = rewards + self.likelihood_weight * mean_logp
        if not return_hidden:
            return rewards
        if logps is None:  # only the PPO path asks for them; scoring alone allocates nothing extra
            logps = torch.zeros(idx.shape[0], idx.shape[1] - 1, device=idx.device)
        return rewards, hidden, logps

    def score(self, sequences, pad_id, answer_lengths):
        """(N,) rewards of N token-id lists of different lengths, right-padded into one forward pass;
        the last answer_lengths[i] tokens of sequences[i] are its answer (chat_ids gives both)."""
        return self(*pack_answers(sequences, pad_id, answer_lengths, self.score_head.weight.device))


def pack_answers(sequences, pad_id, answer_lengths, device):
    """Token-id lists of prompt + answer -> (ids, attention_mask, answer_mask), right-padded: the
    inputs of RewardModel.forward. The last answer_lengths[i] tokens of sequences[i] are its answer."""
    T = max(map(len, sequences))
    idx = torch.tensor([ids + [pad_id] * (T - len(ids)) for ids in sequences], device=device)
    mask = torch.tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids in sequences], device=device)
    answer_mask = torch.tensor([[0] * (len(ids) - n) + [1] * n + [0] * (T - len(ids))
                                for ids, n in zip(sequences, answer_lengths)], device=device)
    return idx, mask, answer_mask


def last_token(hidden, attention_mask=None):
    """hidden (B, T, C) at the last position whose attention_mask is 1, for each row."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.size(1), device=hidden.device)
    last = (attention_mask.long() * positions).argmax(dim=-1)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


@torch.no_grad()
def reward_scores(reward_model, tokenizer, prompts, answers, batch_size=64):
    """r(x, y) as floats for each prompt x and answer y given as text, in the chat format."""
    block_size = reward_model.cfg.block_size
    encoded = [chat_ids(tokenizer, p, a, block_size) for p, a in zip(prompts, answers)]
    sequences, lengths = [e[0] for e in encoded], [e[1] for e in encoded]
    return [r for s in range(0, len(sequences), batch_size)
            for r in reward_model.score(sequences[s:s + batch_size], tokenizer.pad_id,
                                        lengths[s:s + batch_size]).float().tolist()]


# ----------------------------------------------------------------------------- training the network

def configure_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95), fused=False):
    """AdamW over the trainable parameters, with weight decay on every tensor of two or more dimensions
    (the weight matrices and both embeddings): biases and LayerNorm gains are not decayed (shrinking
    them towards 0 only hurts). The tied token embedding is decayed once (it appears once among the
    parameters), as in GPT-2. Every group remembers its peak learning rate (`peak_lr`), which set_lr
    scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, "peak_lr": lr},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "peak_lr": lr}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def lr_at(step, max_lr, warmup_steps, max_steps, min_lr_ratio=0.1):
    """The learning rate at step (0-based): linear warmup to max_lr, then a cosine down to
    min_lr_ratio · max_lr at max_steps (min_lr_ratio=1 keeps it at max_lr after the warmup)."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return max_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer, step, warmup_steps, max_steps, min_lr_ratio=0.1):
    """Every parameter group to lr_at(step) of its own peak (configure_optimizer's peak_lr); returns
    the first group's rate, for the log."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, group["peak_lr"], warmup_steps, max_steps, min_lr_ratio)
    return optimizer.param_groups[0]["lr"]


def optimizer_step(optimizer, scaler, params, grad_clip=1.0):
    """One update once the gradients are in: unscale them (a no-op unless float16 loss scaling is
    on), clip their global norm to grad_clip (0 = off), step, and clear them for the next batch."""
    scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def flops_per_token(cfg, n_params):
    """Training FLOPs per token: 6·N for the matmuls (2 forward, 4 backward per parameter) plus
    the attention scores and weighted sum, 12·n_layer·n_embd·block_size (PaLM appendix B)."""
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
