"""The chapters' pictures: one concept picture per chapter, drawn from the project's own code and data.

    python docs/figures.py                      # every concept picture into docs/img/, then the run comparisons
    python docs/figures.py --only sft           # one picture (names: see --help)
    python docs/figures.py --runs out/seed0     # compare runs of the results harness (docs/results.py --run)

Each picture is a function `figure_<name>(out_dir)` that writes one PNG and returns its path, so
tests/test_docs.py can draw every one into a temporary folder. The numbers in a picture come from
running the code the chapter explains (bpe.py, model.py, pretrain.py, sft.py, lora.py, reward.py,
ppo.py, dpo.py, grpo.py) on the files in data/, not from a hand-typed table, so a picture cannot
drift from the code: change the chat template or the masking and the picture changes with it. Where a
picture needs a trained model and none exists, its values are marked "illustrative" on the picture.

`figure_runs(run_dir, out_dir)` draws measured curves instead: PPO with the default β and with β = 0
on shared axes (and GRPO the same way), from the metrics logs `<stage>.jsonl` that the results harness
writes into out/seed<k>/. It prints a line and draws nothing for a log that is not there.
"""

import argparse
import functools
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no window: runs in CI and over ssh
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import bpe  # noqa: E402
from model import (  # noqa: E402
    ModelConfig,
    Transformer,
    causal_mask,
    chat_prompt,
    left_pad,
    sequence_logps,
)
from plumbing import preference_pairs, read_jsonl, read_text  # noqa: E402

# The stage files (pretrain.py ... grpo.py) are imported inside the function that draws their picture:
# they are edited one at a time, and a half-edited stage should break its own picture only.

IMG_DIR = os.path.join(ROOT, "docs", "img")
DPI = 100  # one image pixel per screen pixel at 100% zoom on a laptop: sizes below are in inches of 100 px

# one colour per meaning, the same in every picture
BLUE, LIGHT_BLUE, GREEN, RED, ORANGE, PURPLE, TEAL, GREY, LIGHT = (
    "#2b6cb0", "#bcd7f2", "#2f855a", "#c53030", "#dd6b20", "#6b46c1", "#2c7a7b", "#718096", "#edf2f7")
# cell fills: light enough for black text on top
GREEN_FILL, ORANGE_FILL, PURPLE_FILL, TEAL_FILL = "#9ae6b4", "#fbb479", "#c9b3f5", "#81e6d9"
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "axes.spines.top": False, "axes.spines.right": False, "figure.facecolor": "white"}


def data_path(*parts):
    return os.path.join(ROOT, "data", *parts)


@functools.lru_cache(maxsize=None)
def corpus_text():
    return read_text(data_path("corpus.txt"))


@functools.lru_cache(maxsize=None)
def char_tokenizer():
    """The default tokenizer of every stage: one id per character of the corpus (pretrain.pick_tokenizer)."""
    return bpe.CharTokenizer.train(corpus_text())


def show(text):
    """A token as the pictures print it: a space as ␣ and a newline as ↵, so that both can be seen."""
    return text.replace(" ", "␣").replace("\n", "↵")


def save(fig, out_dir, filename):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, filename)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path


def token_cells(ax, y, texts, faces, x0=0.0, text_colors=None, height=0.8, fontsize=11, edge="white"):
    """One row of tokens as coloured cells from x0 rightwards, one unit wide for one character and wider for
    longer tokens (cell_width). Returns the x where the row ends."""
    x = x0
    for i, (text, face) in enumerate(zip(texts, faces)):
        width = cell_width(text)
        ax.add_patch(Rectangle((x, y - height / 2), width, height, facecolor=face, edgecolor=edge, lw=1.5))
        color = text_colors[i] if text_colors else "black"
        ax.text(x + width / 2, y, text, ha="center", va="center", fontsize=fontsize, family="monospace", color=color)
        x += width
    return x


def cell_width(text):
    return max(1.0, 0.62 * len(text) + 0.3)


def legend_patches(ax, items, **kwargs):
    handles = [Rectangle((0, 0), 1, 1, facecolor=face, edgecolor="none") for face, _ in items]
    return ax.legend(handles, [label for _, label in items], frameon=False, **kwargs)


# ----------------------------------------------------------------------------- 01 the tokenizer

BPE_SLICE = 200_000  # characters of data/corpus.txt to train on: enough for common words, a fraction of a second
BPE_VOCAB = 512  # bpe.py's default --vocab-size
# a frequent corpus word, one whose pieces are not morphemes, and the chat template's word (after a newline
# it has no leading space), which this small vocabulary leaves in pieces
BPE_WORDS = (" capital", " backwards", "Assistant")


def bpe_build(tokenizer, word):
    """The merges that touch `word`, replayed in the order they were learned (what encode does):
    [(merge index or None, ids after it)], starting from the word's UTF-8 bytes."""
    ids = list(word.encode("utf-8"))
    steps = [(None, ids)]
    for k, (pair, new) in enumerate(tokenizer.merges.items()):
        if pair in zip(ids, ids[1:]):
            ids = bpe.merge(ids, pair, new)
            steps.append((k, ids))
    assert ids == tokenizer.encode(word), "replaying the merges must give what encode gives"
    return steps


def figure_tokenizer(out_dir=IMG_DIR):
    """BPE builds a word up: its segmentation after each merge that touches it."""
    tok = bpe.BPETokenizer.train(corpus_text()[:BPE_SLICE], BPE_VOCAB, pattern=bpe.GPT2_PATTERN)
    builds = [bpe_build(tok, w) for w in BPE_WORDS]
    rows = max(len(b) for b in builds)
    pieces = lambda ids: [show(tok.token_str(i)) for i in ids]  # noqa: E731
    widths = [max(sum(map(cell_width, pieces(ids))) for _, ids in steps) + 9 for steps in builds]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(builds), figsize=(15, 0.56 * rows + 1.8),
                                 gridspec_kw={"width_ratios": widths, "wspace": 0.02})
        for ax, word, steps, width in zip(axes, BPE_WORDS, builds, widths):
            for r, (k, ids) in enumerate(steps):
                new = None if k is None else 256 + k
                faces = [ORANGE_FILL if i == new else (LIGHT_BLUE if i >= 256 else LIGHT) for i in ids]
                token_cells(ax, -r, pieces(ids), faces)
                if k is None:
                    ax.text(-0.4, -r, "UTF-8 bytes", ha="right", va="center", fontsize=10)
                    continue
                left, right = pieces(list(tok.merges)[k])
                ax.text(-0.4, -r + 0.13, f"merge {k + 1}: {left} + {right}", ha="right", va="center", fontsize=10,
                        family="monospace")
                ax.text(-0.4, -r - 0.26, f"pair seen {tok.merge_counts[k]:,}×", ha="right", va="center",
                        fontsize=8.5, color=GREY)
            final = steps[-1][1]
            ax.set_title(f"“{show(word)}”: {len(steps[0][1])} bytes → {len(final)} token{'s' * (len(final) > 1)}",
                         loc="left", fontsize=11.5)
            ax.set_xlim(-9, width - 9)
            ax.set_ylim(-rows + 0.4, 0.6)
            ax.axis("off")
        legend_patches(axes[0], [(LIGHT, "a single byte"), (LIGHT_BLUE, "a token an earlier merge made"),
                                 (ORANGE_FILL, "the token this merge made")],
                       loc="upper left", bbox_to_anchor=(0.0, 0.02), ncol=3)
        fig.suptitle(f"Byte-level BPE (bpe.BPETokenizer.train, GPT-2 pre-tokenization) on the first {BPE_SLICE:,} "
                     f"characters of data/corpus.txt, {len(tok.merges)} merges.\nEach row replays, in the order "
                     "they were learned, the merges that touch the word: the last row is what encode() returns.",
                     x=0.01, y=0.99, ha="left", va="bottom", fontsize=12)
        fig.subplots_adjust(top=0.93)
        return save(fig, out_dir, "bpe_merges.png")


# ----------------------------------------------------------------------------- 02 the transformer

MASK_PROMPTS = ("What is 3 plus 6?", "Add 4 and 7.")  # two real prompts of different lengths (data/prompts.jsonl)
KV_NEW_TOKENS = 5


def figure_transformer(out_dir=IMG_DIR):
    """The attention mask of a batch of two chat prompts, left-padded (Transformer._attention_mask), and
    which positions' keys and values each generation step computes with and without the KV cache."""
    tok = char_tokenizer()
    rows = [tok.encode(chat_prompt(p)) for p in MASK_PROMPTS]
    idx, attn = left_pad(rows, tok.pad_id)
    T = idx.size(1)
    torch.manual_seed(0)
    net = Transformer(ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=8)).eval()
    mask = net._attention_mask(T, 0, attn, idx.device)[:, 0]  # (B, T, T): True = query row may read key column
    assert torch.equal(mask[0], causal_mask(T, T, 0, idx.device)), "an unpadded row is plain causal"
    calls = kv_cache_calls(net, idx[:1], KV_NEW_TOKENS)

    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(13, 11))
        grid = fig.add_gridspec(2, 2, height_ratios=[3.4, 1.1], hspace=0.25, wspace=0.2, top=0.9, bottom=0.08)
        for b, title in enumerate(["row 0, the longer prompt: no padding, plain causal",
                                   f"row 1, the shorter prompt: left-padded by {int((attn[1] == 0).sum())}"]):
            ax = fig.add_subplot(grid[0, b])
            labels = [show(tok.decode([i])) if m else "·" for i, m in zip(idx[b].tolist(), attn[b].tolist())]
            is_pad = attn[b] == 0
            # 0 = blocked, 1 = may read, 2 = a padding query reading itself (its output is never used)
            state = mask[b].int() + (mask[b] & is_pad[:, None]).int()
            ax.imshow(state.numpy(), cmap=matplotlib.colors.ListedColormap(["white", BLUE, ORANGE]), vmin=0, vmax=2)
            ax.set_xticks(range(T), labels, family="monospace", fontsize=9)
            ax.set_yticks(range(T), labels, family="monospace", fontsize=9)
            ax.tick_params(length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
            edges = np.arange(-0.5, T)  # cell borders as two line collections: cheaper to draw than minor ticks
            ax.vlines(edges, -0.5, T - 0.5, color=LIGHT, lw=0.6)
            ax.hlines(edges, -0.5, T - 0.5, color=LIGHT, lw=0.6)
            ax.xaxis.set_label_position("top")
            ax.set_xlabel("key position (… is read)")
            ax.set_ylabel("query position (reads …)")
            ax.set_title(title, pad=12)
        legend_patches(fig.axes[0], [(BLUE, "may attend: mask True"), (ORANGE, "a padding query sees only itself "
                                     "(else no key at all; its output is never used)"),
                                     ("white", "masked: −∞ before the softmax")],
                       loc="upper left", bbox_to_anchor=(-0.02, -0.01), ncol=3, handleheight=1.2)
        for handle in fig.axes[0].get_legend().legend_handles:
            handle.set_edgecolor(GREY)
        fig.text(0.01, 0.965, f"Attention masks of one batch of two chat prompts, B = 2, T = {T}, one token per "
                 "character (model.Transformer._attention_mask).\nTemplate `User: {prompt}\\nAssistant: `; "
                 "· = <|pad|>. A query row reads the key columns marked blue; every other score is −∞.",
                 fontsize=12, va="top")

        # the KV cache: which positions get their keys and values computed in each forward pass of generate()
        P = len(rows[0])
        width = P + KV_NEW_TOKENS - 1  # the last sampled token is not fed back in
        for c, (use_cache, title) in enumerate([(False, "generate(use_cache=False): every step recomputes the prefix"),
                                                 (True, "generate(use_cache=True): one new position per step")]):
            ax = fig.add_subplot(grid[1, c])
            grid_state = np.zeros((len(calls[use_cache]), width))
            for s, (n_in, past) in enumerate(calls[use_cache]):
                grid_state[s, :past] = 1  # read from the cache
                grid_state[s, past:past + n_in] = 2  # computed in this forward pass
            ax.imshow(grid_state, cmap=matplotlib.colors.ListedColormap(["white", LIGHT_BLUE, BLUE]),
                      vmin=0, vmax=2, aspect="auto")
            ax.vlines(np.arange(-0.5, width), -0.5, len(calls[use_cache]) - 0.5, color="white", lw=0.8)
            ax.hlines(np.arange(-0.5, len(calls[use_cache])), -0.5, width - 0.5, color="white", lw=0.8)
            computed = sum(n for n, _ in calls[use_cache])
            ax.set_title(f"{title}\nkeys and values of {computed} positions computed for {KV_NEW_TOKENS} new tokens",
                         fontsize=11)
            steps = [f"step {s + 1}" + (" (prompt)" if s == 0 else "") for s in range(len(calls[use_cache]))]
            ax.set_yticks(range(len(steps)), steps)
            ax.set_xticks([0, P - 1, width - 1], ["0", f"{P - 1}\nprompt ends", f"{width - 1}"])
            ax.set_xlabel("position")
            ax.tick_params(length=0)
            for side in ax.spines.values():
                side.set_visible(False)
        legend_patches(fig.axes[-1], [(BLUE, "keys and values computed in this step"),
                                      (LIGHT_BLUE, "read from the KV cache")],
                       loc="upper right", bbox_to_anchor=(1.0, -0.4), ncol=2)
        return save(fig, out_dir, "attention_mask.png")


def kv_cache_calls(net, idx, new_tokens):
    """{use_cache: [(positions fed, positions already cached), ...]}, one entry per forward pass of generate()."""
    calls = {}
    for use_cache in (False, True):
        seen = []

        def record(module, args, kwargs):
            cache = kwargs.get("kv_cache")
            seen.append((args[0].size(1), cache.length if cache is not None else 0))

        handle = net.register_forward_pre_hook(record, with_kwargs=True)
        try:
            net.generate(idx, new_tokens, temperature=0, use_cache=use_cache)
        finally:
            handle.remove()
        calls[use_cache] = seen
    return calls


# ----------------------------------------------------------------------------- 03 pretraining

WINDOW, LINE = 64, 32  # tokens in the window, tokens per picture line


def mlm_example(window, tok, max_seed=1000):
    """pretrain.mask_tokens on the window, with the first seed whose draw is typical (15% of the positions
    chosen, give or take one) and shows all three corruptions (each is 10% of 15%, often absent)."""
    import pretrain

    target = round(0.15 * len(window))
    for seed in range(max_seed):
        g = torch.Generator().manual_seed(seed)
        inputs, labels = pretrain.mask_tokens(window, tok.mask_id, tok.vocab_size, generator=g)
        kinds = mlm_kinds(inputs, labels, tok.mask_id)
        if all((kinds == k).any() for k in (1, 2, 3)) and abs(int((kinds > 0).sum()) - target) <= 1:
            break
    return inputs, labels, kinds, seed


def mlm_kinds(inputs, labels, mask_id):
    """0 = not chosen (label −100), 1 = chosen → <|mask|>, 2 = chosen → random token, 3 = chosen, kept.
    A random draw that hits the original token looks kept, as it does to the model."""
    chosen = labels != -100
    kinds = torch.zeros_like(labels)
    kinds[chosen & (inputs == mask_id)] = 1
    kinds[chosen & (inputs != mask_id) & (inputs != labels)] = 2
    kinds[chosen & (inputs == labels)] = 3
    return kinds


def figure_pretrain(out_dir=IMG_DIR):
    """Which positions carry a loss: every one under CLM, the chosen 15% under MLM (80/10/10)."""
    import pretrain

    tok = char_tokenizer()
    data = torch.tensor(tok.encode(corpus_text()[:BPE_SLICE]))
    x, y = pretrain.get_batch(data, 1, WINDOW, "clm", torch.Generator().manual_seed(0))
    x, y = x[0], y[0]
    inputs, labels, kinds, seed = mlm_example(x, tok)
    char = lambda i: show(tok.decode([int(i)]))  # noqa: E731
    shown = lambda i: "M" if int(i) == tok.mask_id else char(i)  # noqa: E731
    kind_fill = {0: LIGHT, 1: ORANGE_FILL, 2: PURPLE_FILL, 3: TEAL_FILL}
    clm = [("input x_t", [char(i) for i in x], [LIGHT] * WINDOW),
           ("target x_t+1", [char(i) for i in y], [GREEN_FILL] * WINDOW)]
    mlm = [("original", [char(i) for i in x], [LIGHT] * WINDOW),
           ("model input x~", [shown(i) for i in inputs], [kind_fill[int(k)] for k in kinds]),
           ("target", [char(i) if k else "" for i, k in zip(x, kinds)], [GREEN_FILL if k else "white" for k in kinds])]
    n = int((kinds > 0).sum())
    counts = ", ".join(f"{int((kinds == k).sum())} {name}" for k, name in [(1, "→ <|mask|>"), (2, "→ random"),
                                                                           (3, "kept")])
    sections = [
        (f"Causal LM (pretrain.get_batch, objective clm): all {WINDOW} positions carry a loss",
         "each position t predicts the next token x_t+1 (the target row is the input shifted by one)", clm),
        (f"Masked LM (pretrain.mask_tokens): {n} of {WINDOW} positions carry a loss",
         f"15% chosen; of those 80% → <|mask|>, 10% → a random token, 10% kept. Here: {counts}", mlm),
    ]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(13, 8.8))
        y0 = 0.0
        for title, detail, strips in sections:
            ax.text(-6.5, y0, title, fontsize=12, weight="bold", va="center")
            ax.text(-6.5, y0 - 0.5, detail, fontsize=10.5, va="center")
            y0 -= 1.4
            for start in range(0, WINDOW, LINE):
                for label, texts, faces in strips:
                    token_cells(ax, y0, texts[start:start + LINE], faces[start:start + LINE])
                    ax.text(-0.4, y0, label, ha="right", va="center", fontsize=10.5)
                    y0 -= 0.88
                y0 -= 0.3
            y0 -= 0.35
        ax.text(-6.5, y0 + 0.2, f"One window of data/corpus.txt, one token per character. The MLM draw uses seed "
                f"{seed}, the first with about 15% chosen and all three corruptions.\nM = <|mask|>; an empty "
                "target cell is label −100 (no loss).", fontsize=10, color=GREY, va="top")
        legend_patches(ax, [(GREEN_FILL, "loss at this position"), (ORANGE_FILL, "replaced by <|mask|>"),
                            (PURPLE_FILL, "replaced by a random token"), (TEAL_FILL, "chosen but kept")],
                       loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=4)
        ax.set_xlim(-6.6, LINE + 0.2)
        ax.set_ylim(y0 - 0.6, 0.5)
        ax.axis("off")
        return save(fig, out_dir, "clm_vs_mlm.png")


# ----------------------------------------------------------------------------- 04 SFT and PEFT

def sft_examples(n_conversation_turns=4):
    """The first single-turn record of data/sft.jsonl and its shortest conversation of that many turns."""
    records = read_jsonl(data_path("sft.jsonl"))
    single = next(r for r in records if "instruction" in r and not r.get("input"))
    conversations = [r for r in records if len(r.get("conversation", ())) == n_conversation_turns]
    conversation = min(conversations, key=lambda r: sum(len(t["content"]) for t in r["conversation"]))
    return [single, conversation]


def figure_sft(out_dir=IMG_DIR):
    """The label mask of sft.build_example: the assistant's tokens and <|eos|> are supervised, the rest −100."""
    import sft

    tok = char_tokenizer()
    block_size = ModelConfig().block_size
    examples = []
    for record in sft_examples():
        ids, labels, truncated = sft.build_example(tok, record, block_size)
        assert not truncated
        examples.append((record, ids, labels))
    with plt.rc_context(STYLE):
        lines = []  # one picture line per turn: break after each newline and each <|eos|>
        for e, (record, ids, labels) in enumerate(examples):
            lines.append(("title", e, record))
            current = []
            for i, label in zip(ids, labels):
                current.append((i, label))
                if i == tok.eos_id or tok.decode([i]) == "\n":
                    lines.append(("tokens", e, current))
                    current = []
            if current:
                lines.append(("tokens", e, current))
        fig, ax = plt.subplots(figsize=(13, 0.62 * len(lines) + 1.4))
        y = 0.0
        for kind, e, content in lines:
            if kind == "title":
                y -= 0.35 if e else 0
                turns = len(content.get("conversation", ())) or 2
                source = "single turn" if turns == 2 else f"{turns}-turn conversation"
                n_sup = sum(1 for label in examples[e][2] if label != -100)
                ax.text(0, y, f"data/sft.jsonl, {source}: {len(examples[e][1])} tokens, {n_sup} supervised",
                        fontsize=12, weight="bold", va="center")
                y -= 0.85
                continue
            texts = ["<|eos|>" if i == tok.eos_id else show(tok.decode([i])) for i, _ in content]
            faces = [GREEN if label != -100 else LIGHT for _, label in content]
            colors = ["white" if label != -100 else "black" for _, label in content]
            token_cells(ax, y, texts, faces, text_colors=colors)
            y -= 0.85
        _, ids, labels = examples[0]
        ax.text(0, y - 0.05, "sft.render_example, the same labels as text:  "
                + show(sft.render_example(tok, ids, labels)), fontsize=10, family="monospace", color=GREY,
                va="center")
        legend_patches(ax, [(GREEN, "label = token id: the model is trained to predict this token"),
                            (LIGHT, "label = −100: context only, no loss")],
                       loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=2)
        ax.set_title("SFT labels (sft.build_example → model.build_example): template "
                     "`User: {prompt}\\nAssistant: {answer}<|eos|>`, one token per character; "
                     "inputs are ids[:-1], targets labels[1:]", loc="left", fontsize=11)
        ax.set_xlim(-0.5, 50)
        ax.set_ylim(y - 0.5, 0.6)
        ax.axis("off")
        return save(fig, out_dir, "sft_labels.png")


def box(ax, xy, w, h, title, body="", code="", face=LIGHT, edge=GREY):
    """A rounded box centred at xy (w, h in data units): a bold title at the top, a body below it and, at the
    bottom in grey monospace, the code it stands for. Text offsets are in points, whatever the axes' scale."""
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.012",
                                facecolor=face, edgecolor=edge, lw=1.5))
    text = dict(xycoords="data", textcoords="offset points", ha="center")
    ax.annotate(title, (x, y + h / 2), xytext=(0, -7), va="top", fontsize=11.5, weight="bold", **text)
    if body:
        ax.annotate(body, (x, y + h / 2), xytext=(0, -27), va="top", fontsize=10.5, linespacing=1.4, **text)
    if code:
        ax.annotate(code, (x, y - h / 2), xytext=(0, 6), va="bottom", fontsize=9.5, family="monospace",
                    color=GREY, **text)


def finish_panel(ax, title, caption, caption_y=0.02):
    """A diagram panel's title, its caption under the drawing, and the frame every panel shares."""
    ax.text(0.5, caption_y, caption, ha="center", va="bottom", fontsize=10.5)
    ax.set_title(title, loc="left")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 0.9)
    ax.axis("off")


def arrow(ax, start, end, text="", rad=0.0, color="black", text_offset=(0, 0), fontsize=10, style=None):
    """An arrow from start to end, with its label on a white background at the middle (moved by text_offset)."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, color=color, lw=1.6,
                                 connectionstyle=style or f"arc3,rad={rad}", shrinkA=0, shrinkB=0))
    if text:
        mid = ((start[0] + end[0]) / 2 + text_offset[0], (start[1] + end[1]) / 2 + text_offset[1])
        ax.text(*mid, text, ha="center", va="center", fontsize=fontsize, color=color,
                bbox=dict(facecolor="white", edgecolor="none", pad=1.5))


def draw_lora(ax):
    """LoRA: the frozen W beside the trainable side path (alpha/r)·B(Ax), sizes from lora.LoRALinear on the
    default model's attention input layer (c_attn: n_embd → 3·n_embd)."""
    import lora
    import sft

    cfg = ModelConfig()
    alpha, rank = sft.parse_args([]).lora_alpha, lora.LORA_RANK
    layer = lora.LoRALinear(torch.nn.Linear(cfg.n_embd, 3 * cfg.n_embd), rank, alpha)
    d_in, d_out = layer.base.in_features, layer.base.out_features
    frozen = sum(p.numel() for p in layer.base.parameters())
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    starts_at_zero = bool((layer.delta_weight() == 0).all())

    y_top, y_side, y_mid = 0.74, 0.3, 0.52
    box(ax, (0.06, y_mid), 0.09, 0.2, "x", f"{d_in}\nnumbers", face="white")
    box(ax, (0.5, y_top), 0.34, 0.24, "W (frozen)",
        f"{d_out} × {d_in}, plus the bias b\n{frozen:,} numbers, no gradient", code="layer.base", face=LIGHT)
    box(ax, (0.29, y_side), 0.18, 0.24, "A (trainable)", f"{rank} × {d_in}\nrandom init", code="lora_A",
        face=LIGHT_BLUE, edge=BLUE)
    box(ax, (0.56, y_side), 0.18, 0.24, "B (trainable)", f"{d_out} × {rank}\ninit 0", code="lora_B",
        face=LIGHT_BLUE, edge=BLUE)
    box(ax, (0.77, y_side), 0.1, 0.16, "× α/r", f"{alpha:g}/{rank}", face="white", edge=BLUE)
    ax.add_patch(matplotlib.patches.Circle((0.88, y_mid), 0.025, facecolor="white", edgecolor="black", lw=1.5))
    ax.text(0.88, y_mid, "+", ha="center", va="center", fontsize=16)
    box(ax, (0.97, y_mid), 0.08, 0.2, "y", f"{d_out}\nnumbers", face="white")
    arrow(ax, (0.105, y_mid + 0.04), (0.33, y_top), rad=-0.2)
    arrow(ax, (0.67, y_top), (0.872, y_mid + 0.025), "W x + b", rad=-0.25, text_offset=(0.05, 0.05))
    arrow(ax, (0.105, y_mid - 0.04), (0.2, y_side), rad=0.2)
    arrow(ax, (0.38, y_side), (0.47, y_side), f"A x: {rank}\nnumbers", text_offset=(0, 0.1), color=BLUE)
    arrow(ax, (0.65, y_side), (0.72, y_side))
    arrow(ax, (0.82, y_side), (0.88, y_mid - 0.025), rad=0.3)
    arrow(ax, (0.905, y_mid), (0.93, y_mid))
    title = (f"LoRA (lora.LoRALinear): rank r = {rank}, α = {alpha:g} (sft.py's defaults), on c_attn, the "
             "query-key-value layer of the default model")
    caption = (f"y = W x + b + (α/r)·B (A x).   Trainable: {trainable:,} = {rank}·({d_in} + {d_out}) numbers, "
               f"{100 * trainable / frozen:.1f}% of the frozen layer's {frozen:,}.\n"
               f"B = 0 at the start, so ΔW = (α/r)·B A = 0{' (checked here)' if starts_at_zero else ''}: step 0 is the "
               "base model. After training, lora.merge_lora folds ΔW into W.")
    finish_panel(ax, title, caption, caption_y=0.04)


def draw_adapter(ax):
    """Adapters: the frozen sublayer's output h goes through A(h) = h + W_up f(W_down LN(h)) before the block's
    residual adds it; sizes and counts from lora.Adapter and lora.apply_adapters on the default model."""
    import lora
    import sft

    cfg = ModelConfig()
    defaults = sft.parse_args([])
    size, sites = defaults.adapter_size, [s.strip() for s in defaults.adapter_where.split(",")]
    d = cfg.n_embd
    adapter = lora.Adapter(d, size)
    per_adapter = sum(p.numel() for p in adapter.parameters())
    net = lora.apply_adapters(Transformer(cfg), size, sites)
    trainable, _ = lora.count_parameters(net)
    n_adapters = len(lora._modules(net, lora.Adapted))
    h = torch.randn(3, d)
    with torch.no_grad():
        starts_as_identity = torch.equal(adapter(h), h)

    y_side, y_mid = 0.38, 0.6
    box(ax, (0.08, y_mid), 0.15, 0.3, "sublayer (frozen)", f"Attn(LN₁(x))\nor MLP(LN₂(x))\nh: {d} numbers",
        code="Adapted.base", face=LIGHT)
    box(ax, (0.245, y_side), 0.13, 0.24, "LN (trainable)", f"gain and bias\n2 × {d}", code="adapter.ln",
        face=LIGHT_BLUE, edge=BLUE)
    box(ax, (0.425, y_side), 0.17, 0.24, "W_down (trainable)", f"{size} × {d}, plus bias\nrandom init",
        code="adapter.down", face=LIGHT_BLUE, edge=BLUE)
    box(ax, (0.585, y_side), 0.07, 0.18, "f", f"GELU\n{size}", face="white", edge=BLUE)
    box(ax, (0.745, y_side), 0.17, 0.24, "W_up (trainable)", f"{d} × {size}, plus bias\ninit 0", code="adapter.up",
        face=LIGHT_BLUE, edge=BLUE)
    ax.add_patch(matplotlib.patches.Circle((0.88, y_mid), 0.025, facecolor="white", edgecolor="black", lw=1.5))
    ax.text(0.88, y_mid, "+", ha="center", va="center", fontsize=16)
    box(ax, (0.97, y_mid), 0.08, 0.2, "A(h)", f"{d}\nnumbers", face="white")
    arrow(ax, (0.155, y_mid + 0.06), (0.872, y_mid + 0.025), "h, unchanged: the adapter's own residual",
          style="arc3,rad=-0.2", text_offset=(0, 0.13))
    arrow(ax, (0.155, y_mid - 0.06), (0.18, y_side), rad=0.2)
    arrow(ax, (0.31, y_side), (0.34, y_side))
    arrow(ax, (0.51, y_side), (0.55, y_side), color=BLUE)
    arrow(ax, (0.62, y_side), (0.66, y_side), color=BLUE)
    arrow(ax, (0.83, y_side), (0.88, y_mid - 0.025), rad=0.3)
    arrow(ax, (0.905, y_mid), (0.93, y_mid))
    title = (f"Adapters (lora.Adapter): bottleneck m = {size} (sft.py's --adapter-size), on the residual stream's "
             f"d = {d}, after each sublayer")
    caption = (f"A(h) = h + W_up f(W_down LN(h)).   Trainable per adapter: {per_adapter:,} = "
               f"2·{d}·{size} + {size} + 3·{d} numbers.\nOne after the {' and one after the '.join(sites)} "
               f"of every block: {n_adapters} adapters, {trainable:,} numbers in the default model.\n"
               f"W_up = 0 at the start, so A(h) = h"
               f"{' (checked here)' if starts_as_identity else ''}: step 0 is the base model. f makes it nonlinear: it "
               f"cannot be merged.\nThe readings write x + Down(ReLU(Up(LN(x)))), wide first; this is Houlsby et al.'s "
               f"order, down to m = {size} first.")
    finish_panel(ax, title, caption)


def draw_prefix(ax):
    """Prefix tuning: every layer's attention reads L trainable keys and values in front of the tokens' own;
    sizes and counts from lora.apply_prefix on the default model, the mask from SelfAttention.prepend_prefix."""
    import lora
    import sft

    cfg = ModelConfig()
    L = sft.parse_args([]).prefix_len
    head_dim = cfg.n_embd // cfg.n_head
    net = lora.apply_prefix(Transformer(cfg), L)
    per_layer = sum(p.numel() for p in net.blocks[0].attn.kv_prefix.parameters())
    trainable, _ = lora.count_parameters(net)
    # the mask prepend_prefix builds, on a model small enough to draw every cell: 3 prefix entries, 6 tokens
    small_L, small_T = 3, 6
    small = lora.apply_prefix(Transformer(ModelConfig(vocab_size=16, block_size=16, n_layer=1, n_head=1, n_embd=8)),
                              small_L)
    keys = torch.zeros(1, 1, small_T, 8)
    _, _, mask = small.blocks[0].attn.prepend_prefix(keys, keys, None, small_T)

    y_top, y_side, y_mid = 0.74, 0.38, 0.56
    box(ax, (0.065, y_side), 0.11, 0.22, "x", f"T tokens,\n{cfg.n_embd} numbers\neach", face="white")
    box(ax, (0.255, y_side), 0.19, 0.24, "K, V (frozen W)", f"from the tokens:\n{cfg.n_head} heads × T × {head_dim}",
        code="attn.c_attn", face=LIGHT)
    box(ax, (0.255, y_top), 0.19, 0.26, "P_k, P_v (trainable)", f"{cfg.n_head} heads × {L} × {head_dim} each;\n"
        f"start: K, V of {L}\nrandom tokens", code="attn.kv_prefix", face=LIGHT_BLUE, edge=BLUE)
    box(ax, (0.545, y_mid), 0.27, 0.3, "attention, every layer", "softmax(Q [P_k; K]ᵀ / √d + [0 | M])\n· [P_v; V]",
        code="SelfAttention.prepend_prefix", face=LIGHT)
    arrow(ax, (0.12, y_side), (0.16, y_side))
    arrow(ax, (0.35, y_side), (0.41, y_mid - 0.06), rad=0.2)
    arrow(ax, (0.35, y_top), (0.41, y_mid + 0.06), rad=-0.2, color=BLUE)

    # the mask: one row per query, the prefix columns first
    cell_w, cell_h, x0, y0 = 0.022, 0.05, 0.74, y_mid + 0.15
    for i in range(mask.size(0)):
        for j in range(mask.size(1)):
            face = (BLUE if j < small_L else GREEN) if mask[i, j] else "white"
            ax.add_patch(Rectangle((x0 + j * cell_w, y0 - (i + 1) * cell_h), cell_w, cell_h, facecolor=face,
                                   edgecolor=GREY, lw=0.8))
    ax.text(x0 + small_L * cell_w / 2, y0 + 0.015, "P", ha="center", va="bottom", fontsize=10, color=BLUE)
    ax.text(x0 + (small_L + small_T / 2) * cell_w, y0 + 0.015, "token keys", ha="center", va="bottom", fontsize=10)
    ax.text(x0 - 0.008, y0 - mask.size(0) * cell_h / 2, "queries", ha="right", va="center", fontsize=10,
            rotation=90)
    ax.text(x0 + mask.size(1) * cell_w + 0.012, y0 - mask.size(0) * cell_h / 2,
            f"its mask [0 | M],\ndrawn for L = {small_L},\nT = {small_T}", ha="left", va="center", fontsize=9.5,
            color=GREY)
    arrow(ax, (0.68, y_mid), (x0 - 0.035, y_mid), color=GREY)
    title = (f"Prefix tuning (lora.KVPrefix): L = {L} keys and values per layer and head (sft.py's --prefix-len), "
             "in front of the tokens' own")
    caption = (f"Trainable: {per_layer:,} = 2·{L}·{cfg.n_head}·{head_dim} numbers per layer, {trainable:,} for the "
               f"{cfg.n_layer} layers of the default model.\n"
               "Every query reads every prefix column (blue) whatever its position; the tokens keep their causal mask "
               "(green).\n"
               f"It starts as the keys and values of {L} random tokens, so step 0 reads {L} extra tokens. Keys are not "
               "a weight: no merge.\n"
               f"The readings' prefix: L trainable input embeddings before E[x] (prompt tuning: {L}·{cfg.n_embd} = "
               f"{L * cfg.n_embd:,} numbers, layer 0 only).")
    finish_panel(ax, title, caption)


PEFT_PANELS = [draw_lora, draw_adapter, draw_prefix]  # one function per method, each drawing one panel


def figure_peft(out_dir=IMG_DIR):
    """Parameter-efficient fine-tuning: one panel per method of PEFT_PANELS."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(PEFT_PANELS), 1, figsize=(12, 5.2 * len(PEFT_PANELS)), squeeze=False)
        for ax, draw in zip(axes[:, 0], PEFT_PANELS):
            draw(ax)
        fig.tight_layout()
        return save(fig, out_dir, "peft.png")


# ----------------------------------------------------------------------------- 05 the reward model

def ranking_example(k=4, max_chars=40):
    """The first ranking of k answers in data/prefs.jsonl whose answers are all short enough to print."""
    records = read_jsonl(data_path("prefs.jsonl"))
    return next(r for r in records if len(r.get("choices", ())) == k
                and max(len(c["text"]) for c in r["choices"]) <= max_chars)


def figure_reward(out_dir=IMG_DIR):
    """Bradley-Terry: P(chosen ≻ rejected) = σ(Δ), the loss −log σ(Δ), and a ranking of K answers as pairs."""
    import reward

    gaps = torch.linspace(-6, 6, 241)
    prob = torch.sigmoid(gaps)
    loss = torch.stack([reward.bradley_terry_loss(g[None], torch.zeros(1)) for g in gaps])
    record = ranking_example()
    pairs = preference_pairs([record])
    ranked = sorted(record["choices"], key=lambda c: c["rank"])
    K = len(ranked)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.5]})
        ax = axes[0]
        ax.plot(gaps, prob, color=BLUE, lw=2.5)
        ax.axhline(0.5, color=GREY, lw=0.8, ls=":")
        ax.axvline(0, color=GREY, lw=0.8, ls=":")
        ax.set_xlabel("reward gap Δ = r(x, y_chosen) − r(x, y_rejected)")
        ax.set_ylabel("P(chosen ≻ rejected) = σ(Δ)")
        ax.set_title("Bradley-Terry: only the gap matters")
        ax = axes[1]
        ax.plot(gaps, loss.detach(), color=RED, lw=2.5, label="loss −log σ(Δ)")
        ax.plot(gaps, torch.sigmoid(-gaps), color=RED, lw=1.5, ls="--", label="its slope, −dL/dΔ = σ(−Δ)")
        ax.plot([0], [math.log(2)], "o", color=RED)
        ax.annotate(f"Δ = 0: ln 2 = {math.log(2):.3f}", (0, math.log(2)), (0.8, 2.2), fontsize=10,
                    arrowprops=dict(arrowstyle="-", color=GREY))
        ax.set_xlabel("reward gap Δ")
        ax.set_ylabel("loss per pair (nats)")
        for panel in axes[:2]:
            panel.set_xticks(range(-6, 7, 2))
        ax.set_title("reward.bradley_terry_loss: stops pushing\nonce a pair is clearly ordered")
        ax.legend(frameon=False, loc="upper right")
        ax.set_ylim(0, 6.2)

        ax = axes[2]
        ax.axis("off")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"a ranking of K = {K} answers → K(K−1)/2 = {len(pairs)} pairs (plumbing.preference_pairs)",
                     loc="left", fontsize=11.5)
        ax.text(0, 0.95, f"data/prefs.jsonl:  {record['input']}", fontsize=10.5, va="top", weight="bold")
        for i, c in enumerate(ranked):
            ax.text(0, 0.8 - 0.13 * i, f"{c['rank']}. {c['text']}\n    ({c['kind']})", fontsize=10, va="top")
        name = {c["text"]: f"{c['rank']}" for c in ranked}
        for j, (_, chosen, rejected, ck, rk, _) in enumerate(pairs):
            ax.text(0.62, 0.8 - 0.12 * j, f"{name[chosen]} ≻ {name[rejected]}   {ck} over {rk}", fontsize=10.5,
                    va="top", family="monospace")
        ax.text(0, 0.0, "each pair w ≻ l adds −log σ(r_w − r_l); reward.comparison_loss averages them per prompt\n"
                "(one prompt, one vote: InstructGPT's 1/C(K, 2))", fontsize=10, color=GREY)
        fig.tight_layout()
        return save(fig, out_dir, "bradley_terry.png")


# ----------------------------------------------------------------------------- 06 PPO

def figure_ppo(out_dir=IMG_DIR):
    """The PPO loop of ppo.train as a diagram, and the clipped surrogate against the ratio ρ."""
    import ppo

    args = ppo.parse_args([])
    eps = args.clip_eps
    fn = lambda f: f.__name__ + "()"  # noqa: E731  (a renamed function breaks the picture instead of misnaming it)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(14, 7.4))
        grid = fig.add_gridspec(2, 2, width_ratios=[2.4, 1], hspace=0.45, wspace=0.12, top=0.9, bottom=0.09,
                                left=0.01, right=0.99)
        ax = fig.add_subplot(grid[:, 0])
        ax.set_xlim(-0.15, 1.58)
        ax.set_ylim(0, 1)
        ax.axis("off")
        W, H = 0.68, 0.25
        L, R, top, mid, bottom = 0.33, 1.2, 0.86, 0.5, 0.14
        box(ax, (L, top), W, H, "1. sample", f"the policy π_θ answers a batch of {args.batch_size}\n"
            "prompts x from data/prompts.jsonl", fn(ppo.collect_rollout), face=LIGHT_BLUE, edge=BLUE)
        box(ax, (R, top), W, H, "2. score", "the frozen reward model reads\n"
            "x + y + <|eos|>: one number, RM(x, y)\n"
            f"(− {args.missing_eos_penalty:g} if y hit the length cap)", fn(ppo.score_answers))
        box(ax, (R, mid), W, H, "3. per-token rewards",
            f"r_t = −β·(log π_θ − log π_ref)(a_t | s_t)\n+ RM(x, y) on the last token; β = {args.kl_coef:g}\n"
            "(the RM's likelihood part: token by token)",
            f"{fn(ppo.kl_penalty)}, {fn(ppo.per_token_rewards)}")
        box(ax, (L, mid), 0.44, 0.17, "reference π_ref", "the frozen SFT model", face="white")
        box(ax, (R, bottom), W, H, "4. advantages (GAE)",
            "δ_t = r_t + γ·V(s_t+1) − V(s_t)\nA_t = δ_t + γλ·A_t+1\n"
            f"V: the critic (a value head); γ = {args.gamma:g}, λ = {args.lam:g}", fn(ppo.compute_gae))
        box(ax, (L, bottom), W, H, "5. clipped update",
            f"maximise min(ρA, clip(ρ, 1−ε, 1+ε)·A)\nε = {eps:g}; {args.ppo_epochs} epochs over the batch\n"
            f"in minibatches of {args.minibatch_size}", fn(ppo.ppo_policy_loss), face=LIGHT_BLUE, edge=BLUE)
        arrow(ax, (L + W / 2, top), (R - W / 2, top), "answers y", text_offset=(0, 0.035))
        arrow(ax, (R, top - H / 2), (R, mid + H / 2), "RM(x, y)", text_offset=(0.08, 0))
        arrow(ax, (L + 0.22, mid), (R - W / 2, mid), "log π_ref(a_t | s_t)", text_offset=(0, 0.035))
        arrow(ax, (R, mid - H / 2), (R, bottom + H / 2), "r_t", text_offset=(0.04, 0))
        arrow(ax, (R - W / 2, bottom), (L + W / 2, bottom), "A_t,\nreturns R_t", text_offset=(0, 0.055))
        arrow(ax, (L - W / 2, bottom), (L - W / 2, top), "new π_θ:\nrepeat", color=BLUE, text_offset=(-0.07, 0),
              style="bar,fraction=-0.12")
        ax.set_title(f"PPO (ppo.train): every step samples, scores and updates; {args.max_steps} steps by default",
                     loc="left", fontsize=12)

        ratio = torch.linspace(0.0, 2.0, 401)
        for row, adv in enumerate((1.0, -1.0)):
            ax = fig.add_subplot(grid[row, 1])
            surrogate = [-ppo.ppo_policy_loss(torch.log(r)[None], torch.zeros(1), torch.tensor([adv]),
                                              torch.ones(1), eps)[0].item() for r in ratio]
            flat = (ratio > 1 + eps) if adv > 0 else (ratio < 1 - eps)
            ax.fill_between(ratio, -2.2, 2.2, where=flat.numpy(), color=LIGHT, label="clipped: no gradient")
            ax.plot(ratio, ratio * adv, color=GREY, ls="--", lw=1.5, label="ρ·A, unclipped")
            ax.plot(ratio, surrogate, color=BLUE, lw=2.5, label="min(ρA, clip(ρ)·A)")
            ax.axvline(1, color=GREY, lw=0.8, ls=":")
            ax.set_ylim(-2.1, 2.1)
            ax.set_xlim(0, 2)
            ax.set_ylabel(f"objective, A = {adv:+g}".replace("-", "−"))
            ax.set_title(("A > 0, a better token than expected:\nno gain from raising ρ past 1 + ε" if adv > 0 else
                          "A < 0, a worse token than expected:\nno gain from lowering ρ past 1 − ε"), fontsize=11)
            if row == 1:
                ax.legend(frameon=False, loc="upper right", fontsize=9.5)
                ax.set_xlabel("ρ = π_θ(a | s) / π_θ_old(a | s)")
        return save(fig, out_dir, "ppo_loop.png")


# ----------------------------------------------------------------------------- 07 DPO

ILLUSTRATIVE_LOGRATIOS = (1.5, -2.0)  # log π − log π_ref of chosen and rejected: made up, and labelled so


def dpo_pair():
    """A held-out pair of data/prefs.jsonl: a correct answer against a hallucinated one if there is one."""
    import dpo

    _, heldout = dpo.load_pairs(data_path("prefs.jsonl"))
    return next((p for p in heldout if (p[3], p[4]) == ("correct", "hallucinated")), heldout[0])


def dpo_logratios(ckpt_dir, pair):
    """log π − log π_ref of the pair's chosen and rejected answer, π = dpo.pt and π_ref = sft.pt of ckpt_dir."""
    import dpo
    from plumbing import load_model

    logps = {}
    for stage in ("sft", "dpo"):
        model, tok, _ = load_model(os.path.join(ckpt_dir, f"{stage}.pt"))
        (encoded,), _ = dpo.encode_pairs(tok, [pair], model.cfg.block_size)
        with torch.no_grad():
            logps[stage] = sequence_logps(model, list(encoded), tok.pad_id, "cpu")
    return (logps["dpo"] - logps["sft"]).tolist()


def figure_dpo(out_dir=IMG_DIR, ckpt_dir=None):
    """The implicit reward β(log π − log π_ref) of a chosen and a rejected answer, before and after DPO.
    From ckpt_dir/sft.pt and ckpt_dir/dpo.pt when both exist, else from illustrative log-ratios."""
    import dpo

    beta = dpo.parse_args([]).beta
    pair = dpo_pair()
    measured = bool(ckpt_dir) and all(os.path.exists(os.path.join(ckpt_dir, f"{s}.pt")) for s in ("sft", "dpo"))
    after = dpo_logratios(ckpt_dir, pair) if measured else list(ILLUSTRATIVE_LOGRATIOS)
    before = [0.0, 0.0]  # training starts at π = π_ref (dpo.py's --init is the reference): both log-ratios are 0
    stages = {}
    for name, (c, r) in (("before DPO: π = π_ref", before), ("after DPO", after)):
        loss, rc, rr = dpo.dpo_loss(torch.tensor([c]), torch.tensor([r]), torch.zeros(1), torch.zeros(1), beta=beta)
        stages[name] = (rc.item(), rr.item(), loss.item())
    signed = lambda v: f"{v:+.2f}".replace("-", "−") if v else "0"  # noqa: E731
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(10, 5.6))
        width = 0.36
        for k, (name, (rc, rr, loss)) in enumerate(stages.items()):
            bars = ax.bar([k - width / 2, k + width / 2], [rc, rr], width * 0.95, color=[GREEN, RED])
            for bar, value in zip(bars, (rc, rr)):
                ax.annotate(signed(value), (bar.get_x() + bar.get_width() / 2, value),
                            xytext=(0, 4 if value >= 0 else -4), textcoords="offset points", ha="center",
                            va="bottom" if value >= 0 else "top", fontsize=11)
            ax.text(k, -0.03, f"margin {signed(rc - rr)}, loss −log σ(margin) = {loss:.3f}",
                    transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=10.5, color=GREY)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(stages)), list(stages), fontsize=11.5)
        ax.tick_params(axis="x", length=0, pad=24)
        ax.set_ylabel("implicit reward β·(log π(y|x) − log π_ref(y|x))")
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, -0.3) - 0.3, max(high, 0.3) + 0.5)
        where = os.path.join("out", os.path.basename(os.path.normpath(ckpt_dir))) if measured else None
        source = (f"measured: π = {where}/dpo.pt, π_ref = {where}/sft.pt" if measured else
                  f"ILLUSTRATIVE values, not measured: log π − log π_ref = {signed(after[0])} (chosen), "
                  f"{signed(after[1])} (rejected) nats")
        ax.set_title(f"DPO (dpo.dpo_loss, β = {beta:g}) on a held-out pair of data/prefs.jsonl\n"
                     f"x: “{pair[0]}”   chosen: “{pair[1]}”   rejected: “{pair[2]}”", loc="left", fontsize=11)
        ax.text(0.01, 0.97, source, transform=ax.transAxes, va="top", fontsize=10.5,
                color=GREY if measured else ORANGE, weight="normal" if measured else "bold")
        legend_patches(ax, [(GREEN, f"chosen ({pair[3]})"), (RED, f"rejected ({pair[4]})")], loc="lower left")
        return save(fig, out_dir, "dpo_implicit_reward.png")


# ----------------------------------------------------------------------------- 08 GRPO

def grpo_groups(group_size):
    """Two groups of G answers, written here (not sampled) from data/prompts.jsonl and graded by the gold rule:
    a fact prompt with right and wrong answers, and a made-up name that every answer gets wrong."""
    prompts = read_jsonl(data_path("prompts.jsonl"))
    facts = [r for r in prompts if r["kind"] == "fact" and "capital" in r["prompt"]]
    unknown = next(r for r in prompts if r["kind"] == "unknown" and "capital" in r["prompt"])
    target, other = facts[0], facts[1]
    right, short = target["answers"][-1], target["answers"][0]
    invented = right.replace(short, other["answers"][0])  # the right sentence, another country's capital
    mixed = [right, invented, short + ".", "I don't know.", other["answers"][-1], right, "Why should I tell you?",
             invented]
    all_wrong = [f["answers"][-1] for f in facts][:group_size]  # real capitals, none of the made-up country
    return [(target, mixed[:group_size]), (unknown, all_wrong)]


def figure_grpo(out_dir=IMG_DIR):
    """Group-relative advantages (grpo.group_advantages) of 0/1 gold rewards (grpo.gold_rewards), and a group
    whose rewards are all equal."""
    import grpo

    G = grpo.parse_args([]).group_size
    signed = lambda v: f"{v:+.2f}".replace("-", "−") if v else "0"  # noqa: E731
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(14, 0.48 * G + 2.8))
        for ax, (record, answers) in zip(axes, grpo_groups(G)):
            finished = torch.ones(len(answers), dtype=torch.bool)
            rewards = grpo.gold_rewards(answers, [record["answers"]] * len(answers), finished)
            adv = grpo.group_advantages(rewards, len(answers))
            ys = np.arange(len(answers))[::-1]
            ax.barh(ys, adv.numpy(), color=[GREEN if r > 0 else RED for r in rewards.tolist()], height=0.65)
            for yy, a in zip(ys, adv.tolist()):
                ax.text(a + (0.08 if a >= 0 else -0.08), yy, signed(a), ha="left" if a >= 0 else "right",
                        va="center", fontsize=10)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_yticks(ys, [f"{a}   r = {int(r)}" for a, r in zip(answers, rewards.tolist())], fontsize=10)
            ax.set_xlim(-2.2, 2.2)
            ax.set_xlabel("advantage A_i of answer i (every one of its tokens)")
            std = rewards.std().item()
            verdict = ("all rewards equal: every A_i = 0, the group teaches nothing" if std == 0 else
                       "right answers are pushed up, wrong ones down")
            ax.set_title(f"“{record['prompt']}” ({record['kind']})\nmean r = {rewards.mean().item():.3f}, "
                         f"std r = {std:.3f}\n{verdict}", loc="left", fontsize=11)
        fig.suptitle(f"GRPO: G = {G} answers to one prompt, A_i = (r_i − mean r) / (std r + ε) "
                     "(grpo.group_advantages)\nAnswers written for the picture, not sampled; 0/1 rewards by the "
                     "gold rule (grpo.gold_rewards); grpo.zero_std_fraction counts groups like the right one",
                     x=0.01, ha="left", fontsize=12)
        fig.tight_layout()
        return save(fig, out_dir, "grpo_advantages.png")


# ----------------------------------------------------------------------------- measured runs: β against β = 0

# (stage with the default β, the same with β = 0, [(logged key, axis label with its unit)])
RUN_COMPARISONS = {
    "ppo": ("ppo", "ppo_kl0", [("score", "reward-model score of the samples (RM units)"),
                               ("kl", "KL to the SFT model per answer (nats)"),
                               ("response_length", "answer length (tokens)")]),
    "grpo": ("grpo", "grpo_kl0", [("reward", "mean gold reward of the samples"),
                                  ("kl", "k3 KL to the SFT model per answer (nats)"),
                                  ("response_length", "answer length (tokens)")]),
}


def read_metrics(path):
    """(records, summary) of a MetricsLog file: one JSON object per logged step, then {"summary": ...}."""
    records, summary = [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if "summary" in row:
                    summary = row["summary"]
                else:
                    records.append(row)
    return records, summary


def smooth(values, window):
    """Centred moving average; the ends average what they have (no shrinking towards 0)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) < 3:
        return values
    kernel = np.ones(window)
    return np.convolve(values, kernel, "same") / np.convolve(np.ones_like(values), kernel, "same")


def is_noisy(values, threshold=0.05):
    """True when step-to-step jumps are large against the curve's whole range: one batch per step makes
    the score and the length noisy, while a slowly drifting curve reads fine as it is."""
    values = np.asarray(values, dtype=float)
    if len(values) < 12:
        return False
    return float(np.std(np.diff(values))) > threshold * (float(np.ptp(values)) + 1e-12)


def run_label(stage, records, summary):
    beta = next((r["kl_coef"] for r in records if "kl_coef" in r), summary.get("kl_coef"))
    return f"{stage}, β = {beta:g}" if beta is not None else stage


def figure_runs(run_dir, out_dir=IMG_DIR):
    """For each comparison of RUN_COMPARISONS whose two logs are in run_dir: the curves of both runs on shared
    axes, one panel per metric. Returns the paths written; a missing log is reported and skipped."""
    written = []
    seed = os.path.basename(os.path.normpath(run_dir))
    for name, (default, no_kl, metrics) in RUN_COMPARISONS.items():
        paths = [os.path.join(run_dir, f"{stage}.jsonl") for stage in (default, no_kl)]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            print(f"figures: skipping {name}_beta_compare.png: no {', '.join(missing)} "
                  f"(python docs/results.py --run writes them)")
            continue
        runs = [(stage, *read_metrics(p)) for stage, p in zip((default, no_kl), paths)]
        window = max(2, max(len(records) for _, records, _ in runs) // 12)
        smoothed = []
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4.2))
            for ax, (key, label) in zip(axes, metrics):
                for (stage, records, summary), color in zip(runs, (BLUE, ORANGE)):
                    points = [(r["step"], r[key]) for r in records if r.get(key) is not None and "step" in r]
                    if not points:
                        continue
                    steps, values = map(np.array, zip(*points))
                    if is_noisy(values):
                        ax.plot(steps, values, color=color, lw=0.8, alpha=0.3)
                        values = smooth(values, window)
                        smoothed.append(key)
                    ax.plot(steps, values, color=color, lw=2.2, label=run_label(stage, records, summary))
                ax.set_xlabel("step (one batch of sampled answers)")
                ax.set_ylabel(label)
                ax.grid(alpha=0.25)
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="upper right", ncol=2, frameon=False, bbox_to_anchor=(1.0, 0.99))
            note = (f"\nthick lines: moving mean over {window} steps of the noisy {', '.join(dict.fromkeys(smoothed))} "
                    "(thin lines: every step)" if smoothed else "")
            fig.suptitle(f"{name.upper()} with and without the KL term, {seed}{note}", x=0.01, y=0.99,
                         ha="left", va="top", fontsize=11.5)
            fig.tight_layout(rect=(0, 0, 1, 0.86))
            written.append(save(fig, out_dir, f"{name}_beta_compare.png"))
    return written


# ----------------------------------------------------------------------------- command line

FIGURES = {"tokenizer": figure_tokenizer, "transformer": figure_transformer, "pretrain": figure_pretrain,
           "sft": figure_sft, "peft": figure_peft, "reward": figure_reward, "ppo": figure_ppo, "dpo": figure_dpo,
           "grpo": figure_grpo}
# what each function writes under docs/img (tests/test_docs.py checks the chapters' links against it)
FILENAMES = {"tokenizer": "bpe_merges.png", "transformer": "attention_mask.png", "pretrain": "clm_vs_mlm.png",
             "sft": "sft_labels.png", "peft": "peft.png", "reward": "bradley_terry.png", "ppo": "ppo_loop.png",
             "dpo": "dpo_implicit_reward.png", "grpo": "grpo_advantages.png"}
RUN_FILENAMES = [f"{name}_beta_compare.png" for name in RUN_COMPARISONS]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=[*FIGURES, "runs"], help="draw one picture (runs: the run comparisons)")
    parser.add_argument("--out-dir", default=IMG_DIR, help="where the PNGs go (default: docs/img)")
    parser.add_argument("--runs", default=os.path.join(ROOT, "out", "seed0"),
                        help="a results-harness folder with <stage>.jsonl logs and checkpoints (default: out/seed0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds overhead
    names = [args.only] if args.only else [*FIGURES, "runs"]
    for name in names:
        if name == "runs":
            paths = figure_runs(args.runs, args.out_dir)
        elif name == "dpo":
            paths = [figure_dpo(args.out_dir, ckpt_dir=args.runs)]
        else:
            paths = [FIGURES[name](args.out_dir)]
        for path in paths:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
