"""Tokenization: turning text into the integers a language model reads.

A model does not see letters. It sees a sequence of *tokens*, each an integer id into a fixed
vocabulary, and every id gets its own learned embedding vector. The tokenizer is the dictionary
between the two worlds: `encode(text) -> ids` before training or generation, `decode(ids) -> text`
after. Every later stage of this course (pretrain, sft, reward, ppo, dpo) goes through one.

The simplest choice is one token per character (`CharTokenizer`, the default of every stage here):
tiny vocabulary, trivially correct, but sequences are long, and a character never seen in training
has no id at all -- the out-of-vocabulary (OOV) problem. Sub-word tokenizers fix both.

Why bytes. Any string is a sequence of UTF-8 bytes, and there are only 256 byte values. Starting the
vocabulary from those 256 ids means every string -- emoji, accents, CJK, binary junk -- can be
encoded, so byte-level tokenizers have no OOV problem by construction, and decode(encode(s)) == s.

Byte Pair Encoding (BPE) then grows the vocabulary from data. Count every adjacent pair of ids in
the training text; take the most frequent pair (ties: the smallest pair, so training is
deterministic); give it a new id (256, 257, ...); replace its occurrences left to right; repeat
until the vocabulary is as large as wanted. The ordered list of merges *is* the tokenizer: to
encode new text, start from bytes and apply the same merges in the order they were learned.
Common words end up as one token, rare ones as a few pieces, unseen ones as bytes.

Part 2 below is that algorithm as plain code, the way Karpathy's minbpe teaches it: `get_stats`
counts the pairs, `merge` replaces one pair, and `train_naive` repeats the two over the whole text
for every merge, which costs (number of merges) x (text length). A merge only changes the text
where the pair occurs, so `BPETokenizer.train` in Part 3 keeps the counts and the positions of
every pair and updates just those places. It learns exactly the same merges, in the same order
(tests/test_bpe.py checks this; benchmarks/run.py measures the difference in speed).

Pre-tokenization. Left alone, BPE happily learns tokens like "d. The" that glue the end of one word
to the start of the next. GPT-2 first splits text into chunks with a regular expression (words
with their leading space, numbers, punctuation runs, whitespace) and lets merges happen only
inside a chunk. `GPT2_PATTERN` is that split, rewritten for Python's `re` module.

Special tokens. Control signals such as "beginning of text", "end of answer" or "padding" must
never be confused with ordinary text, so they get their own ids after the ordinary vocabulary,
and BPE never produces them by merging. Their written forms ("<|eos|>") are recognised inside
the text given to encode, which is how the chat template `User: ...\\nAssistant: ...<|eos|>`
becomes ids.

Compression ratio. A useful single number: UTF-8 bytes per token. Character tokens give about 1
on English text; a few hundred merges give about 2; large production vocabularies about 4. More
bytes per token means more text fits in the model's context and each training step sees more.

Run `python bpe.py --help` to train one and see its first merges.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

DEFAULT_SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|mask|>", "<|sep|>")
UNK = "<|unk|>"


def _specials_regex(specials):
    """The regex that finds the special tokens in a text (None if there are none).

    Every tokenizer and both trainers build theirs here, so bad specials are refused before any work.
    """
    specials = tuple(specials)
    if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
        raise ValueError(f"special tokens must be distinct non-empty strings, got {specials!r}")
    if not specials:
        return None
    # Longest first, so that a special that is a prefix of another cannot steal its match.
    alternatives = sorted(specials, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")


def _split_specials(regex, text):
    """Yield (offset, piece, is_special) for the pieces of `text`, specials cut out whole."""
    if regex is None:
        if text:
            yield 0, text, False
        return
    offset = 0
    for k, piece in enumerate(regex.split(text)):  # the capture group keeps the specials
        if piece:
            yield offset, piece, k % 2 == 1
        offset += len(piece)


# ---------------------------------------------------------------------------------------------
# The interface every stage relies on: special tokens, encode/decode, saving and loading.
# ---------------------------------------------------------------------------------------------

class Tokenizer:
    """Base class: holds the special tokens and the save/load plumbing shared by both tokenizers."""

    kind = ""  # the "type" field of the saved JSON

    def _set_specials(self, specials, first_id):
        specials = tuple(specials)
        self._special_re = _specials_regex(specials)  # also checks them
        self.specials = specials
        # Specials live after the ordinary vocabulary, so they can never collide with it.
        self.special_ids = {s: first_id + k for k, s in enumerate(specials)}
        self._special_names = {i: s for s, i in self.special_ids.items()}

    def _special(self, name):
        if name not in self.special_ids:  # AttributeError, so getattr(tok, "mask_id", None) works
            raise AttributeError(f"this tokenizer has no {name} token (its specials: {list(self.specials)})")
        return self.special_ids[name]

    @property
    def bos_id(self):
        return self._special("<|bos|>")

    @property
    def eos_id(self):
        return self._special("<|eos|>")

    @property
    def pad_id(self):
        return self._special("<|pad|>")

    @property
    def mask_id(self):
        return self._special("<|mask|>")

    @property
    def sep_id(self):
        return self._special("<|sep|>")

    def compression_ratio(self, text):
        """UTF-8 bytes per token on `text` (higher = more text per token)."""
        return len(text.encode("utf-8")) / max(1, len(self.encode(text)))

    def save(self, path):
        """Write the tokenizer as JSON; a crash mid-write never leaves a half-written file behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path):
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise ValueError(f"{path} holds a {tok.kind!r} tokenizer, not {cls.kind!r}")
        return tok

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, specials={len(self.specials)})"


# ---------------------------------------------------------------------------------------------
# Part 1: one token per character.
# ---------------------------------------------------------------------------------------------

class CharTokenizer(Tokenizer):
    """Vocabulary = the sorted characters of the training text, then the special tokens."""

    kind = "char"

    def __init__(self, chars="", specials=DEFAULT_SPECIALS, unk=False):
        specials = tuple(specials)
        if unk and UNK not in specials:
            specials += (UNK,)
        self.unk = bool(unk)
        self.chars = sorted(set(chars))
        if not all(isinstance(c, str) and len(c) == 1 for c in self.chars):
            raise ValueError("a CharTokenizer vocabulary holds single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self._set_specials(specials, len(self.chars))

    @classmethod
    def train(cls, text, specials=DEFAULT_SPECIALS, unk=False):
        # Specials written in the text are not ordinary characters: leave their letters out.
        regex = _specials_regex(specials)
        plain = "".join(piece for _, piece, is_special in _split_specials(regex, text) if not is_special)
        return cls(plain, specials, unk)

    @property
    def vocab_size(self):
        return len(self.chars) + len(self.specials)

    @property
    def unk_id(self):
        return self._special(UNK)

    def encode(self, text):
        ids = []
        stoi = self.stoi
        for offset, piece, is_special in _split_specials(self._special_re, text):
            if is_special:
                ids.append(self.special_ids[piece])
                continue
            try:
                ids.extend([stoi[c] for c in piece])
            except KeyError:  # rare path: find the culprit, then map or report it
                for k, c in enumerate(piece):
                    if c in stoi:
                        ids.append(stoi[c])
                    elif self.unk:
                        ids.append(self.unk_id)
                    else:
                        raise ValueError(
                            f"character {c!r} at position {offset + k} is not in the vocabulary "
                            f"({len(self.chars)} characters) -- train on text that contains it, "
                            f"or build the tokenizer with unk=True") from None
        return ids

    def decode(self, ids, skip_special=False):
        out = []
        n = len(self.chars)
        for i in ids:
            i = int(i)
            if 0 <= i < n:
                out.append(self.chars[i])
            elif i in self._special_names:
                if not skip_special:
                    out.append(self._special_names[i])
            else:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return "".join(out)

    def to_dict(self):
        return {"type": "char", "chars": list(self.chars), "specials": list(self.specials), "unk": self.unk}

    @classmethod
    def from_dict(cls, d):
        return cls(d["chars"], d["specials"], d.get("unk", False))


# ---------------------------------------------------------------------------------------------
# Part 2: byte-level BPE, the plain way. Count the pairs, merge the most frequent one, repeat.
# ---------------------------------------------------------------------------------------------

# GPT-2's split: contractions, letters with an optional leading space, digits, other symbols,
# whitespace. The original uses \p{L} and \p{N}, which `re` lacks: [^\W\d_] is "a word character
# that is not a digit or underscore", i.e. a letter; the underscore joins the symbol class so that
# every character of the text falls into some chunk.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""


def get_stats(ids, counts=None):
    """Count the adjacent pairs of `ids`: [1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}.

    A run counts at every position: [97, 97, 97] holds (97, 97) twice, although one merge can
    replace only one of the two. Pass `counts` to add to it, so that many chunks share one table.
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids, pair, new_id):
    """A copy of `ids` with every occurrence of `pair` replaced by `new_id`, scanning left to right.

    merge([1, 2, 3, 1, 2], (1, 2), 256) -> [256, 3, 256]. In a run, merge([97, 97, 97], (97, 97), 256)
    -> [256, 97]: the pair that starts at position 1 lost its left half to the one merged at 0.
    """
    out, i = [], 0
    while i < len(ids):
        if ids[i] == pair[0] and i + 1 < len(ids) and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2  # both halves are used up
        else:
            out.append(ids[i])
            i += 1
    return out


def _num_merges(vocab_size, specials):
    """How many merges a vocabulary of `vocab_size` holds: it is 256 byte ids + merges + specials."""
    num_merges = vocab_size - 256 - len(specials)
    if num_merges < 0:
        raise ValueError(f"vocab_size {vocab_size} is below 256 byte ids + {len(specials)} specials")
    return num_merges


def _training_chunks(text, pattern, specials):
    """The pieces of `text` that BPE learns from, in text order.

    Special-token strings are cut out: they are boundaries, not text, and get their own ids, so no
    merge ever learns from or produces one. The pre-tokenization `pattern`, if any, splits the rest
    into chunks, and since each chunk is merged on its own, no token spans two chunks.
    """
    chunk_re = re.compile(pattern) if pattern else None
    for _, piece, is_special in _split_specials(_specials_regex(specials), text):
        if not is_special:
            yield from chunk_re.findall(piece) if chunk_re else [piece]


def train_naive(text, vocab_size, pattern=None, specials=DEFAULT_SPECIALS):
    """Learn `vocab_size - 256 - len(specials)` merges from `text` (fewer if it runs out of pairs).

    The plain algorithm: every merge recounts and rewrites the whole text. It returns the same
    tokenizer as `BPETokenizer.train` (Part 3), which gets there faster; this one is the reference
    that the tests and benchmarks/run.py hold the fast one to.
    """
    specials = tuple(specials)
    num_merges = _num_merges(vocab_size, specials)
    # The whole text, one list of byte ids per chunk, repeats included. (BPETokenizer.train keeps one
    # copy of each distinct chunk with its number of occurrences as a weight: the counts come out equal.)
    chunks = [list(chunk.encode("utf-8")) for chunk in _training_chunks(text, pattern, specials)]
    merges, merge_counts = {}, []
    for new_id in range(256, 256 + num_merges):
        counts = {}
        for ids in chunks:  # pairs never span two chunks
            get_stats(ids, counts)
        if not counts:  # every chunk is a single token: nothing is left to merge
            break
        # The most frequent pair; among equal counts the smallest one, so that training is
        # deterministic (BPETokenizer.train breaks ties the same way).
        pair = min(counts, key=lambda p: (-counts[p], p))
        chunks = [merge(ids, pair, new_id) for ids in chunks]
        merges[pair] = new_id
        merge_counts.append(counts[pair])
    tok = BPETokenizer(merges, pattern, specials)
    tok.merge_counts = merge_counts
    return tok


# ---------------------------------------------------------------------------------------------
# Part 3: byte-level BPE, fast. The same merges, but a merge updates only the places it changes:
# first the engine that keeps the pair counts up to date, then the tokenizer, which trains and
# encodes with it.
# ---------------------------------------------------------------------------------------------

class _PairTable:
    """The text as a doubly-linked list of symbols, plus the count and positions of every pair.

    All chunks are laid end to end, each followed by a sentinel slot (symbol -1; one leads the
    row too), so a merge never crosses a chunk boundary and every real symbol has a neighbour on
    both sides. A chunk that occurs w times is stored once with weight w: its pairs count w times.

    `counts` is exact after every merge. `where[pair]` lists the slots of the pair's left symbol,
    ascending; entries may be stale (the text has moved on there), so they are re-checked on use.
    """

    def __init__(self, chunks, weights=None):
        sizes = np.array([len(c) for c in chunks], dtype=np.int64)
        weights = np.array([1] * len(chunks) if weights is None else weights, dtype=np.int64)
        assert (weights > 0).all(), "chunk weights are occurrence counts"
        raw = np.frombuffer(b"\0" + b"".join(c + b"\0" for c in chunks), dtype=np.uint8)
        # Weight of each slot; sentinels weigh 0, which is also how they are told apart.
        wt = np.zeros(len(raw), dtype=np.int64)
        wt[1:] = np.repeat(weights, sizes + 1)
        ends = np.cumsum(sizes + 1)  # slot of the sentinel after each chunk
        wt[ends] = 0
        self.starts, self.ends = (ends - sizes).tolist(), ends.tolist()  # slots of each chunk
        self.sym = np.where(wt > 0, raw.astype(np.int64), -1).tolist()
        self.nxt = list(range(1, len(raw) + 1))
        self.prv = list(range(-1, len(raw) - 1))
        self.wt = wt.tolist() if (weights != 1).any() else None  # None: every weight is 1
        self.counts, self.where = defaultdict(int), {}

        # Count the byte pairs and index where each occurs, all at once: one stable sort of the
        # pair codes groups the slots by pair, ascending inside each group. (The only numpy in
        # this file; as a Python loop over every byte it would be the slowest part of training.)
        slots = np.flatnonzero((wt[:-1] > 0) & (wt[1:] > 0))  # left slot of every adjacent pair
        if len(slots) == 0:
            return
        codes = raw[slots].astype(np.uint16) * 256 + raw[slots + 1]  # 16 bits: a radix sort
        order = np.argsort(codes, kind="stable")
        codes, slots = codes[order], slots[order]
        firsts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # where each group starts
        totals = np.add.reduceat(wt[slots], firsts).tolist()
        bounds = firsts.tolist() + [len(codes)]
        slots = slots.tolist()
        for k, code in enumerate(codes[firsts].tolist()):
            pair = divmod(code, 256)
            self.counts[pair] = totals[k]
            self.where[pair] = slots[bounds[k]:bounds[k + 1]]

    def merge(self, pair, new):
        """Replace every occurrence of `pair` by `new`, left to right. Returns the pairs it created."""
        a, b = pair
        sym, nxt, prv = self.sym, self.nxt, self.prv
        # The neighbours of each occurrence, grouped by their symbol at the moment of the merge:
        # left[x] = positions p where (x, a) became (x, new); right[y] = positions i where
        # (b, y) became (new, y).
        left, right = defaultdict(list), defaultdict(list)
        for i in self.where.pop(pair, ()):
            # Ascending order makes overlapping runs ("aaa") merge left to right; an occurrence
            # already consumed by the previous merge fails this check.
            if sym[i] != a:
                continue
            j = nxt[i]
            if sym[j] != b:
                continue
            p, n = prv[i], nxt[j]
            left[sym[p]].append(p)
            right[sym[n]].append(i)
            sym[i], sym[j] = new, -1
            nxt[i], prv[n] = n, i
        left.pop(-1, None)  # chunk edges have no pair to update
        right.pop(-1, None)
        # Applying the count changes in bulk gives the same totals as applying them one
        # occurrence at a time, because additions commute.
        counts, where, wt = self.counts, self.where, self.wt
        created = []
        for x, ps in left.items():
            c = sum(map(wt.__getitem__, ps)) if wt else len(ps)
            counts[x, a] -= c
            counts[x, new] += c
            where[x, new] = ps
            created.append((x, new))
        for y, ps in right.items():
            c = sum(map(wt.__getitem__, ps)) if wt else len(ps)
            counts[b, y] -= c
            counts[new, y] += c
            where[new, y] = ps
            created.append((new, y))
        counts.pop(pair, None)  # every occurrence is gone: merged, or consumed by an overlap
        return created

    def chunk_ids(self):
        """The current symbols of each chunk, in the order the chunks were given."""
        # A merge keeps its left slot and empties the right one, so the live symbols of a chunk
        # are simply its non-empty slots, in slot order.
        sym = self.sym
        return [[s for s in sym[a:b] if s != -1] for a, b in zip(self.starts, self.ends)]


class BPETokenizer(Tokenizer):
    """Byte-level BPE: 256 byte ids, then one id per learned merge, then the special tokens."""

    kind = "bpe"

    def __init__(self, merges=(), pattern=None, specials=DEFAULT_SPECIALS):
        # merges: {(left, right): new_id} in learning order, or a list of [left, right] pairs.
        self.merges = {}
        self.vocab = {i: bytes([i]) for i in range(256)}
        for k, (left, right) in enumerate(merges):
            new = 256 + k
            if isinstance(merges, dict) and merges[(left, right)] != new:
                raise ValueError(f"merge {k} {(left, right)} should create id {new}, not {merges[(left, right)]}")
            if not (0 <= left < new and 0 <= right < new) or (left, right) in self.merges:
                raise ValueError(f"merge {k} {(left, right)} refers to ids that do not exist yet or repeats")
            self.merges[(left, right)] = new
            self.vocab[new] = self.vocab[left] + self.vocab[right]
        self.pattern = pattern or None
        self._chunk_re = re.compile(self.pattern) if self.pattern else None
        self._set_specials(specials, 256 + len(self.merges))
        for s, i in self.special_ids.items():
            self.vocab[i] = s.encode("utf-8")
        self._cache = {}  # chunk -> ids; words repeat a lot, so most chunks are encoded once
        self.merge_counts = []  # filled by train(): how often each merged pair occurred

    @property
    def vocab_size(self):
        return 256 + len(self.merges) + len(self.specials)

    def _chunks(self, piece):
        return self._chunk_re.findall(piece) if self._chunk_re else [piece]

    @classmethod
    def train(cls, text, vocab_size, pattern=None, verbose=False, specials=DEFAULT_SPECIALS):
        """Learn the same merges as `train_naive`, in the same order, without recounting the text.

        That is `vocab_size - 256 - len(specials)` merges, fewer if the text runs out of pairs.
        """
        specials = tuple(specials)
        num_merges = _num_merges(vocab_size, specials)
        # The same chunks as train_naive, but a chunk that occurs w times is counted once, with weight
        # w: its pairs count w times, so the counts are the same and a merge rewrites it only once.
        words = Counter(_training_chunks(text, pattern, specials))
        table = _PairTable([w.encode("utf-8") for w in words], list(words.values()))

        # Max-heap of (-count, pair) with lazy deletion: counts only fall after a pair is pushed,
        # except for pairs a merge creates, which are pushed then. So an entry whose count is
        # still current is a true maximum, and among equal counts the heap yields the smallest pair.
        counts = table.counts
        heap = [(-c, pair) for pair, c in counts.items()]
        heapq.heapify(heap)
        merges, merge_counts = {}, []
        bar = None
        if verbose:
            from tqdm import tqdm
            bar = tqdm(total=num_merges, desc="bpe merges", unit="merge")
        while len(merges) < num_merges and heap:
            neg, pair = heapq.heappop(heap)
            c = counts.get(pair, 0)
            if c != -neg:  # stale entry: put it back with its current count
                if c > 0:
                    heapq.heappush(heap, (-c, pair))
                continue
            new = 256 + len(merges)
            merges[pair] = new
            merge_counts.append(c)
            for created in table.merge(pair, new):
                if counts[created] > 0:
                    heapq.heappush(heap, (-counts[created], created))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        tok = cls(merges, pattern, specials)
        tok.merge_counts = merge_counts
        return tok

    def _encode_chunks(self, chunks):
        """Encode distinct chunks by replaying the learned merges in order (lowest id first)."""
        table = _PairTable([c.encode("utf-8") for c in chunks])
        merges, counts = self.merges, table.counts
        # Only merges whose pair actually occurs are visited; a merge can make later ones occur.
        heap = [(merges[pair], pair) for pair in counts if pair in merges]
        heapq.heapify(heap)
        while heap:
            new, pair = heapq.heappop(heap)
            if counts.get(pair, 0) > 0:
                for created in table.merge(pair, new):
                    if created in merges and counts[created] > 0:
                        heapq.heappush(heap, (merges[created], created))
        return table.chunk_ids()

    def encode(self, text):
        plan = []  # special ids and chunk strings, in text order
        for _, piece, is_special in _split_specials(self._special_re, text):
            if is_special:
                plan.append(self.special_ids[piece])
            else:
                plan.extend(self._chunks(piece))
        cache = self._cache
        todo = [c for c in dict.fromkeys(x for x in plan if isinstance(x, str)) if c not in cache]
        fresh = dict(zip(todo, self._encode_chunks(todo))) if todo else {}
        ids = []
        for x in plan:
            if isinstance(x, int):
                ids.append(x)
            else:
                ids.extend(cache[x] if x in cache else fresh[x])
        if len(cache) > 100_000:  # bound the memory; the cache refills with what is common
            cache.clear()
        cache.update((c, v) for c, v in fresh.items() if len(c) <= 64)
        return ids

    def decode(self, ids, skip_special=False):
        parts = []
        vocab, names = self.vocab, self._special_names
        for i in ids:
            i = int(i)
            if i not in vocab:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            if not (skip_special and i in names):
                parts.append(vocab[i])
        # A slice of ids can end inside a multi-byte character: show U+FFFD rather than fail.
        return b"".join(parts).decode("utf-8", errors="replace")

    def token_str(self, i):
        """A readable form of one token; bytes that are not complete UTF-8 show as \\xNN."""
        return self.vocab[i].decode("utf-8", errors="backslashreplace")

    def to_dict(self):
        return {"type": "bpe", "merges": [[l, r] for l, r in self.merges],
                "pattern": self.pattern or "", "specials": list(self.specials)}

    @classmethod
    def from_dict(cls, d):
        return cls([tuple(m) for m in d["merges"]], d.get("pattern") or None, d["specials"])


# ---------------------------------------------------------------------------------------------
# Loading: either tokenizer back from what `save` wrote (or from the dict a checkpoint stores).
# ---------------------------------------------------------------------------------------------

_TYPES = {"char": CharTokenizer, "bpe": BPETokenizer}


def load_tokenizer(path_or_dict):
    """Rebuild a tokenizer from `to_dict()` output or a saved JSON file; the "type" field picks the class."""
    where = "tokenizer dict"
    d = path_or_dict
    if not isinstance(d, dict):
        where = str(path_or_dict)
        try:
            d = json.loads(Path(path_or_dict).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read tokenizer {where}: {e}") from None
    if not isinstance(d, dict) or d.get("type") not in _TYPES:
        kind = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{where} is not a tokenizer: type {kind!r}, expected one of {sorted(_TYPES)}")
    try:
        return _TYPES[d["type"]].from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where} is a damaged {d['type']} tokenizer: {e!r}") from None


# ---------------------------------------------------------------------------------------------
# Command line: train on a corpus, show what was learned, save out/bpe.json.
# ---------------------------------------------------------------------------------------------

def _write_logs(tok, out_dir, summary):
    with open(out_dir / "bpe.jsonl", "w", encoding="utf-8") as f:
        for k, ((l, r), new) in enumerate(tok.merges.items()):
            f.write(json.dumps({"step": k, "id": new, "pair": [l, r], "token": tok.token_str(new),
                                "count": tok.merge_counts[k]}, ensure_ascii=False) + "\n")
        f.write(json.dumps({"summary": summary}) + "\n")
    if not tok.merge_counts:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(256, 256 + len(tok.merge_counts)), tok.merge_counts)
    ax.set(yscale="log", xlabel="new token id (merge order)", ylabel="occurrences of the merged pair",
           title="BPE: each merge is rarer than the last")
    fig.tight_layout()
    fig.savefig(out_dir / "bpe.png", dpi=120)
    plt.close(fig)


def main(argv=None):
    # plumbing.py holds the project's error handling, but it imports load_tokenizer from this file: a
    # top-level import here would be circular (whichever of the two loads first would find the other
    # half-built). Only the command line needs plumbing, so it imports it here, which also keeps
    # `import bpe` from loading torch (plumbing needs it).
    from plumbing import UserError, read_text

    ap = argparse.ArgumentParser(description="Train a byte-level BPE tokenizer and save it as JSON.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="data/corpus.txt", help="UTF-8 training text")
    ap.add_argument("--vocab-size", type=int, default=512,
                    help="256 byte ids + merges + special tokens")
    ap.add_argument("--pattern", choices=["none", "gpt2"], default="gpt2",
                    help="pre-tokenization split; merges never cross its chunks")
    ap.add_argument("--out-dir", default="out", help="where bpe.json, bpe.jsonl and bpe.png go")
    args = ap.parse_args(argv)

    minimum = 256 + len(DEFAULT_SPECIALS)
    if args.vocab_size < minimum:
        raise UserError(f"--vocab-size {args.vocab_size} is too small — use at least {minimum} "
                        f"(256 byte ids + {len(DEFAULT_SPECIALS)} special tokens)")
    text = read_text(args.data)  # a missing, empty or non-UTF-8 file is a UserError naming it
    pattern = GPT2_PATTERN if args.pattern == "gpt2" else None

    t0 = time.perf_counter()
    tok = BPETokenizer.train(text, args.vocab_size, pattern=pattern, verbose=True)
    train_s = time.perf_counter() - t0
    print(f"learned {len(tok.merges)} merges from {len(text.encode('utf-8')):,} bytes "
          f"in {train_s:.2f}s; first merges:")
    for (l, r), new in list(tok.merges.items())[:20]:
        print(f"  {new}: {tok.token_str(l)!r} + {tok.token_str(r)!r} -> {tok.token_str(new)!r}")

    t0 = time.perf_counter()
    ids = tok.encode(text)
    encode_s = time.perf_counter() - t0
    assert tok.decode(ids) == text, "round trip failed"  # a bug, not a user error
    char = CharTokenizer.train(text)
    n_bytes = len(text.encode("utf-8"))
    bpe_ratio, char_ratio = n_bytes / max(1, len(ids)), n_bytes / max(1, len(char.encode(text)))
    print(f"encoded in {encode_s:.2f}s: {len(ids):,} tokens")
    print(f"compression (bytes per token): bpe {bpe_ratio:.2f} vs char {char_ratio:.2f} "
          f"(vocab {tok.vocab_size} vs {char.vocab_size})")

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(out_dir / "bpe.json")
    summary = {"vocab_size": tok.vocab_size, "merges": len(tok.merges), "pattern": args.pattern,
               "bytes_per_token": round(bpe_ratio, 3), "char_bytes_per_token": round(char_ratio, 3),
               "train_s": round(train_s, 3), "encode_s": round(encode_s, 3)}
    _write_logs(tok, out_dir, summary)
    print(f"summary: vocab {tok.vocab_size} ({len(tok.merges)} merges, pattern {args.pattern}), "
          f"{bpe_ratio:.2f} bytes/token vs {char_ratio:.2f} for chars, train {train_s:.2f}s, "
          f"encode {encode_s:.2f}s -> {out_dir / 'bpe.json'}")


if __name__ == "__main__":
    from plumbing import run_main  # not at the top: see main()

    run_main(main)
