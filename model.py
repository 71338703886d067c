"""The transformer: one network for every stage of the lifecycle.

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

The second half of the file holds what the stages share about the network and nothing else: the
reward model's scalar head (reward.py trains it, ppo.py scores with it), the chat template, the
gold grading rule of data/README.md, and rebuilding a network from a checkpoint. The training
loop's parts (optimizer, schedule, precision, checkpoint files, flags, logs) are in common.py.

Run it:  python model.py --ckpt out/sft.pt --prompt "What is the capital of France?"
(no --prompt: an interactive loop). Base checkpoints continue raw text; later stages answer in
the chat format.
"""

import argparse
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bpe import load_tokenizer
from common import DTYPES, UserError, autocast, load_checkpoint, pick_device, run_main, set_seed


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


class SelfAttention(nn.Module):
    def __init__(self, cfg, layer_idx=0):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.layer_idx, self.cfg = cfg.n_head, layer_idx, cfg
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, mask=None, kv_cache=None):
        """x: (B, T, C). mask: bool (B|1, 1, T, T_keys), True = may attend; None = plain causal."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): each head attends in its own subspace
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
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
            itself = torch.arange(T_keys, device=device)[None, :] == torch.arange(past, past + T, device=device)[:, None]
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


# ----------------------------------------------------------------------------- reward model

class RewardModel(nn.Module):
    """A transformer whose LM head is replaced by one scalar read at the last real token:
    r(x, y) = w · h_last(prompt + answer) + b. reward.py trains it; ppo.py scores samples with it.

    With likelihood_weight α > 0 the LM head stays in use and the reward adds the answer's average
    log-likelihood under the same network, r += α · (1/|y|) Σ_t log p(y_t | x, y_<t): a small causal
    model that knows a fact predicts it, even where its last token cannot tell a right answer from a
    wrong one (reward.py's docstring measures both sides of that trade)."""

    def __init__(self, cfg: ModelConfig, likelihood_weight=0.0):
        super().__init__()
        self.backbone = Transformer(cfg)
        self.score_head = nn.Linear(cfg.n_embd, 1)
        nn.init.normal_(self.score_head.weight, std=0.02)  # start close to "no preference"
        nn.init.zeros_(self.score_head.bias)
        self.likelihood_weight = float(likelihood_weight)  # a setting, saved with the checkpoint

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
        T = max(map(len, sequences))
        device = self.score_head.weight.device
        idx = torch.tensor([ids + [pad_id] * (T - len(ids)) for ids in sequences], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids in sequences], device=device)
        answer_mask = torch.tensor([[0] * (len(ids) - n) + [1] * n + [0] * (T - len(ids))
                                    for ids, n in zip(sequences, answer_lengths)], device=device)
        return self(idx, attention_mask=mask, answer_mask=answer_mask)


def last_token(hidden, attention_mask=None):
    """hidden (B, T, C) at the last position whose attention_mask is 1, for each row."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.size(1), device=hidden.device)
    last = (attention_mask.long() * positions).argmax(dim=-1)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


# ----------------------------------------------------------------------------- the chat format

def chat_prompt(prompt):
    """The text a model sees before it answers (CONVENTIONS.md): generation starts after it."""
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


def chat_ids(tokenizer, prompt, answer, block_size):
    """(ids, n_answer, truncated): `User: {prompt}\\nAssistant: {answer}<|eos|>` in at most block_size
    tokens, the whole concatenation a reward model reads (no next-token shift, hence block_size - 1);
    its last n_answer tokens are the answer and its <|eos|>."""
    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    ids, labels, truncated = build_example(tokenizer, turns, block_size - 1)
    return ids, sum(1 for t in labels if t != -100), truncated


@torch.no_grad()
def reward_scores(reward_model, tokenizer, prompts, answers, batch_size=64):
    """r(x, y) as floats for each prompt x and answer y given as text, in the chat format."""
    block_size = reward_model.backbone.cfg.block_size
    encoded = [chat_ids(tokenizer, p, a, block_size) for p, a in zip(prompts, answers)]
    sequences, lengths = [e[0] for e in encoded], [e[1] for e in encoded]
    return [r for s in range(0, len(sequences), batch_size)
            for r in reward_model.score(sequences[s:s + batch_size], tokenizer.pad_id,
                                        lengths[s:s + batch_size]).float().tolist()]


def sequence_logps(model, examples, pad_id, device):
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) for each (ids, labels) of build_example: the sum runs
    over the answer tokens only, since token_logprobs gives 0 where the label is -100."""
    x, y, mask = pad_batch(examples, pad_id, device)
    logits, _ = model(x, attention_mask=mask)
    return token_logprobs(logits, y).sum(-1)


# ----------------------------------------------------------------------------- preference data

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


# ----------------------------------------------------------------------------- evaluation

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


@torch.no_grad()
def generate_answers(model, tokenizer, prompts, device, max_new_tokens=64, batch_size=64,
                     chat=True, temperature=0.0, generator=None):
    """Complete each prompt (in the chat template when chat=True); returns the decoded text after
    the prompt, cut at <|eos|>. Batches are left-padded so all rows end where generation starts."""
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = [tokenizer.encode(chat_prompt(p) if chat else p) for p in prompts[start:start + batch_size]]
        budget = model.cfg.block_size - max_new_tokens
        idx, mask = left_pad([ids[-budget:] for ids in batch], tokenizer.pad_id, device)
        T = idx.size(1)
        out = model.generate(idx, max_new_tokens, temperature=temperature,
                             eos_id=tokenizer.eos_id, attention_mask=mask, generator=generator)
        for row in out[:, T:].tolist():
            if tokenizer.eos_id in row:
                row = row[:row.index(tokenizer.eos_id)]
            outputs.append(tokenizer.decode(row))
    model.train(was_training)
    return outputs


def evaluate(model, tokenizer, examples, device, kinds=None, max_new_tokens=64):
    """Greedy answers for data/eval.jsonl records; returns ({kind: pass rate}, [records])."""
    examples = [e for e in examples if kinds is None or e["kind"] in kinds]
    records = []
    for chat in (True, False):
        group = [e for e in examples if (e["kind"] != "cloze") == chat]
        if not group:
            continue
        outs = generate_answers(model, tokenizer, [e["prompt"] for e in group], device,
                                max_new_tokens=max_new_tokens, chat=chat)
        records += [dict(e, output=o, passed=grade(o, e["answers"])) for e, o in zip(group, outs)]
    rates = {}
    for r in records:
        rates.setdefault(r["kind"], []).append(r["passed"])
    return {k: sum(v) / len(v) for k, v in rates.items()}, records


EVAL_KINDS = ("cloze", "fact", "heldout_fact", "unknown", "harmful", "task")


def pooled_pass_rate(rates, records, kinds):
    """Pass rate over every prompt of the given kinds together (each prompt one vote), from the
    per-kind rates and the eval records that say how many prompts each kind has."""
    counts = {k: sum(r["kind"] == k for r in records) for k in kinds if k in rates}
    total = sum(counts.values())
    return sum(rates[k] * n for k, n in counts.items()) / total if total else float("nan")


def format_pass_rates(columns):
    """{model name: {kind: rate}} -> the one table layout every stage prints."""
    names = list(columns)
    lines = [f"{'gold pass rate':<15}" + "".join(f"{n:>12}" for n in names)]
    for kind in EVAL_KINDS:
        if any(kind in columns[n] for n in names):
            cells = [f"{100 * columns[n][kind]:>11.1f}%" if kind in columns[n] else f"{'-':>12}" for n in names]
            lines.append(f"{kind:<15}" + "".join(cells))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- loading a checkpoint

def load_model(path, device="cpu", model_class=Transformer):
    """(model, tokenizer, checkpoint dict) rebuilt from a checkpoint, in eval mode."""
    ckpt = load_checkpoint(path, device)
    kwargs = {"likelihood_weight": ckpt.get("likelihood_weight", 0.0)} if model_class is RewardModel else {}
    model = model_class(ModelConfig(**ckpt["config"]), **kwargs)
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


# ----------------------------------------------------------------------------- talk to a checkpoint

def main():
    parser = argparse.ArgumentParser(description="Sample from any checkpoint of the lifecycle, or score "
                                     "answers with the reward model.")
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
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="autocast precision (default: %(default)s)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    set_seed(args.seed)
    device = pick_device(args.device)
    if args.answer:  # score answers: the reward model stands in for the human judge
        if args.prompt is None:
            raise UserError("--answer scores an answer to a prompt — pass --prompt too")
        reward_model, tokenizer, _ = load_model(args.ckpt, device, model_class=RewardModel)
        scores = reward_scores(reward_model, tokenizer, [args.prompt] * len(args.answer), args.answer)
        for answer, score in zip(args.answer, scores):
            print(f"{score:+.2f}  {answer}")
        return
    model, tokenizer, ckpt = load_model(args.ckpt, device)
    if args.compile:
        model = torch.compile(model)
    chat = not args.raw and ckpt.get("stage", "pretrain") != "pretrain"
    if not model.cfg.causal:
        raise UserError(f"{args.ckpt} is a masked-LM (bidirectional) model — sample from a causal checkpoint")

    def respond(prompt):
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

    if args.prompt is not None:
        print((args.prompt if not chat else "") + respond(args.prompt))
        return
    print(f"{args.ckpt} ({ckpt.get('stage', '?')}, {'chat' if chat else 'raw text'}); Ctrl-D to quit")
    while True:
        try:
            prompt = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        print(respond(prompt))


if __name__ == "__main__":
    run_main(main)
