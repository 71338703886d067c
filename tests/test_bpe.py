"""Tests for bpe.py: round trips, the fast trainer against the plain one, specials, saving."""

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest

import bpe
from bpe import (DEFAULT_SPECIALS, GPT2_PATTERN, BPETokenizer, CharTokenizer, _PairTable, get_stats, load_tokenizer,
                 merge, train_naive)
from plumbing import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy "
    "to the people.\n\nAll:\nWe know't, we know't.\n\nFirst Citizen:\nLet us kill him, and we'll "
    "have corn at our own price. Is't a verdict? 1234 + 5678 = 6912; a_b__c\n"
) * 3

SAMPLES = ["", "a", "hello world", "héllo wörld, ça va?", "日本語のテキストです。", "emoji 🎉👍🏽 mix",
           "\n\n\t mixed   spaces \r\n", "a_b__c 123,456.78", "Ｆｕｌｌｗｉｄｔｈ", "\x00\x01 bytes\x7f",
           "Ωμέγα Привет مرحبا שלום"]


# --- both trainers, sized by their number of merges -------------------------------------------

def train(text, num_merges, pattern=None, specials=DEFAULT_SPECIALS):
    return BPETokenizer.train(text, 256 + num_merges + len(specials), pattern=pattern, specials=specials)


def naive(text, num_merges, pattern=None, specials=DEFAULT_SPECIALS):
    return train_naive(text, 256 + num_merges + len(specials), pattern=pattern, specials=specials)


def replay(text, merges, pattern=None):
    """What the plain trainer turned `text` (no specials in it) into: each chunk's bytes, then every
    merge in the order it was learned, with `merge` from bpe.py."""
    out = []
    for chunk in re.findall(pattern, text) if pattern else [text]:
        ids = list(chunk.encode("utf-8"))
        for pair, new_id in merges.items():
            ids = merge(ids, pair, new_id)
        out += ids
    return out


# --- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", [None, GPT2_PATTERN], ids=["no-pattern", "gpt2"])
def test_bpe_round_trips_any_unicode(pattern):
    tok = train(TEXT + "".join(SAMPLES), 80, pattern)
    assert len(tok.merges) == 80
    rng = random.Random(0)
    randoms = ["".join(chr(rng.choice([rng.randrange(32, 0x7f), rng.randrange(0xa0, 0xd7ff),
                                       rng.randrange(0xe000, 0x10ffff)])) for _ in range(rng.randrange(30)))
               for _ in range(50)]
    for s in SAMPLES + randoms:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.encode("") == []
    # learned merges actually shorten familiar text
    assert len(tok.encode(TEXT)) < 0.7 * len(TEXT.encode("utf-8"))


def test_gpt2_pattern_covers_every_character():
    rng = random.Random(1)
    for s in SAMPLES + ["".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(200)) for _ in range(20)]:
        assert "".join(re.findall(GPT2_PATTERN, s)) == s
    assert re.findall(GPT2_PATTERN, "Hello world's 42 foo_bar!!  x") == [
        "Hello", " world", "'s", " 42", " foo", "_", "bar", "!!", " ", " x"]


def test_char_round_trip_and_vocab():
    tok = CharTokenizer.train(TEXT)
    assert tok.chars == sorted(set(TEXT))
    assert tok.vocab_size == len(set(TEXT)) + len(DEFAULT_SPECIALS)
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.encode("ab") == [tok.stoi["a"], tok.stoi["b"]]
    # specials come right after the characters, in order
    assert [tok.special_ids[s] for s in DEFAULT_SPECIALS] == list(range(len(tok.chars), tok.vocab_size))
    uni = CharTokenizer.train("".join(SAMPLES))
    for s in SAMPLES:
        assert uni.decode(uni.encode(s)) == s


def test_char_unknown_character_is_named_unless_unk():
    tok = CharTokenizer.train("hello world")
    with pytest.raises(ValueError, match=r"'é' at position 4"):
        tok.encode("hell\u00e9")
    with pytest.raises(ValueError, match="unk=True"):
        tok.encode("🎉")
    unk = CharTokenizer.train("hello world", unk=True)
    assert "<|unk|>" in unk.special_ids and unk.unk_id == unk.special_ids["<|unk|>"]
    ids = unk.encode("hé🎉")
    assert ids == [unk.stoi["h"], unk.unk_id, unk.unk_id]
    assert unk.decode(ids) == "h<|unk|><|unk|>"
    assert unk.decode(ids, skip_special=True) == "h"


# --- the plain trainer's parts, and the fast trainer learns exactly what it learns ----------

def test_get_stats_and_merge_do_what_their_docstrings_say():
    assert get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_stats([97, 97, 97]) == {(97, 97): 2}  # a run counts at every position
    assert get_stats([97, 97, 97, 97]) == {(97, 97): 3}
    assert get_stats([]) == {} and get_stats([5]) == {}
    counts = get_stats([1, 2])
    assert get_stats([1, 2, 3], counts) is counts and counts == {(1, 2): 2, (2, 3): 1}  # adds to the table given
    assert merge([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]
    assert merge([97, 97, 97], (97, 97), 256) == [256, 97]  # left to right: the overlapping pair is gone
    assert merge([97, 97, 97, 97], (97, 97), 256) == [256, 256]
    assert merge([1, 2, 1], (2, 1), 256) == [1, 256] and merge([1, 2], (2, 1), 256) == [1, 2]
    ids = [1, 2]
    assert merge(ids, (1, 2), 256) == [256] and ids == [1, 2]  # a copy: the input is left alone


@pytest.mark.parametrize("pattern", [None, GPT2_PATTERN], ids=["no-pattern", "gpt2"])
def test_fast_training_matches_naive_reference(pattern):
    expected = naive(TEXT, 120, pattern)
    tok = train(TEXT, 120, pattern)
    assert list(tok.merges.items()) == list(expected.merges.items())
    assert tok.merge_counts == expected.merge_counts
    # and encoding the training text reproduces the reference's final segmentation
    assert tok.encode(TEXT) == replay(TEXT, expected.merges, pattern)


def test_fast_training_matches_naive_on_random_small_alphabets():
    # Tiny alphabets make long runs ("aaaa") and overlapping pairs, where incremental counts break.
    rng = random.Random(1234)
    for trial in range(300):
        alphabet = rng.choice(["ab", "aab", "aaab", "abc", "ab ", "a a"])
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        pattern = rng.choice([None, GPT2_PATTERN])
        n = rng.randrange(1, 12)
        expected = naive(text, n, pattern, specials=())
        tok = train(text, n, pattern, specials=())
        assert list(tok.merges.items()) == list(expected.merges.items()), (text, pattern)
        assert tok.encode(text) == replay(text, expected.merges, pattern), (text, pattern)


@pytest.mark.parametrize("pattern", [None, GPT2_PATTERN], ids=["no-pattern", "gpt2"])
def test_both_trainers_cut_out_specials_and_stop_when_pairs_run_out(pattern):
    text = ("hi there<|eos|>" * 20) + "<|bos|>x<|pad|>aaaa<|eos|>"
    fast, plain = train(text, 500, pattern), naive(text, 500, pattern)
    assert len(fast.merges) < 500  # the text ran out of pairs first
    assert fast.to_dict() == plain.to_dict() and fast.merge_counts == plain.merge_counts
    with pytest.raises(ValueError, match="below 256"):
        train_naive(text, 260)


def test_incremental_counts_equal_a_full_recount_after_every_merge():
    rng = random.Random(7)
    for trial in range(200):
        chunks = ["".join(rng.choice("aab") for _ in range(rng.randrange(0, 15))) for _ in range(3)]
        weights = [rng.randrange(1, 4) for _ in chunks]
        table = _PairTable([c.encode() for c in chunks], weights)
        for step in range(8):
            live = {p: c for p, c in table.counts.items() if c}
            if not live:
                break
            assert min(live.values()) > 0
            pair = min(live, key=lambda p: (-live[p], p))
            table.merge(pair, 256 + step)
            recount = Counter()
            for ids, w in zip(table.chunk_ids(), weights):
                for p in zip(ids, ids[1:]):
                    recount[p] += w
            assert {p: c for p, c in table.counts.items() if c} == dict(recount), (chunks, step)


def test_overlapping_pairs_are_counted_at_every_position():
    assert _PairTable([b"aaa"]).counts[(97, 97)] == 2
    assert _PairTable([b"aaaa"]).counts[(97, 97)] == 3
    tok = train("aaaa", 1, specials=())
    assert tok.merges == {(97, 97): 256}
    assert tok.merge_counts == [3]
    assert tok.encode("aaaa") == [256, 256]  # left to right, no overlap
    assert tok.encode("aaa") == [256, 97]
    tok2 = train("aaaa", 2, specials=())
    assert tok2.merges == {(97, 97): 256, (256, 256): 257}


def test_ties_go_to_the_smallest_pair():
    # every pair occurs once: (c,d), (d,a), (a,b) -> the smallest, (a,b), wins though it is last
    tok = train("cdab", 1, specials=())
    assert list(tok.merges) == [(ord("a"), ord("b"))]
    tok = train("zy xw zy xw", 2, specials=())
    assert list(tok.merges)[0] == (ord(" "), ord("x"))  # (' ','x'), ('w',' '), ('x','w'), ('z','y'), ('y',' ') tie at 2


def test_training_stops_when_no_pairs_are_left():
    tok = train("ab", 10, specials=())
    assert tok.merges == {(97, 98): 256} and tok.vocab_size == 257
    assert train("", 5).merges == {}


# --- special tokens ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_specials_are_single_ids_and_distinct(kind):
    text = ("hi there<|eos|>" * 20) + "<|bos|>x<|pad|>"
    tok = CharTokenizer.train(text) if kind == "char" else train(text, 40, GPT2_PATTERN)
    assert tok.pad_id != tok.eos_id
    assert len({tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id, tok.sep_id}) == 5
    ids = tok.encode("hi<|eos|>")
    assert ids[-1] == tok.eos_id and ids.count(tok.eos_id) == 1
    assert tok.encode("<|bos|><|sep|><|mask|>") == [tok.bos_id, tok.sep_id, tok.mask_id]
    assert tok.decode(ids) == "hi<|eos|>"
    assert tok.decode(ids, skip_special=True) == "hi"
    assert tok.decode(tok.encode(text)) == text
    assert max(tok.special_ids.values()) == tok.vocab_size - 1


def test_bpe_merges_never_learn_or_produce_specials():
    text = "ab<|eos|>" * 200
    tok = train(text, 20, specials=DEFAULT_SPECIALS)
    first_special = 256 + len(tok.merges)
    assert sorted(tok.special_ids.values()) == list(range(first_special, first_special + 5))
    assert all(new < first_special for new in tok.merges.values())
    # the specials' own letters were not learned from: "ab" is the only merge possible
    assert list(tok.merges) == [(97, 98)]
    assert not any(b"<" in tok.vocab[new] or b"|" in tok.vocab[new] for new in tok.merges.values())
    assert tok.encode(text) == [256, tok.eos_id] * 200


def test_vocab_size_counts_bytes_merges_and_specials():
    tok = BPETokenizer.train(TEXT, 300, pattern=GPT2_PATTERN)
    assert tok.vocab_size == 300 == len(tok.vocab)
    assert len(tok.merges) == 300 - 256 - len(DEFAULT_SPECIALS)
    with pytest.raises(ValueError, match="below 256"):
        BPETokenizer.train(TEXT, 260)


# --- pre-tokenization ----------------------------------------------------------------------

def test_pattern_merges_never_cross_chunk_boundaries():
    tok = train(TEXT, 150, GPT2_PATTERN)
    text = TEXT + " unseen words, here: 999!"
    boundaries, pos = set(), 0
    for chunk in re.findall(GPT2_PATTERN, text):
        pos += len(chunk.encode("utf-8"))
        boundaries.add(pos)
    token_ends, pos = set(), 0
    for i in tok.encode(text):
        pos += len(tok.vocab[i])
        token_ends.add(pos)
    assert boundaries <= token_ends  # every chunk boundary is also a token boundary
    for new in tok.merges.values():  # and no token is two chunks glued together
        s = tok.vocab[new].decode("utf-8", errors="ignore")
        assert len(re.findall(GPT2_PATTERN, s)) <= 1, s
    # without a pattern, merges do glue words together on this text
    free = train(TEXT, 150)
    assert any(len(re.findall(GPT2_PATTERN, free.vocab[n].decode("utf-8", "ignore"))) > 1
               for n in free.merges.values())


# --- saving and loading --------------------------------------------------------------------

def _plain_json(x):
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain_json(v) for v in x)
    return isinstance(x, (str, int, bool))


@pytest.mark.parametrize("kind", ["char", "char-unk", "bpe", "bpe-nopattern"])
def test_save_load_round_trip(tmp_path, kind):
    tok = {"char": lambda: CharTokenizer.train(TEXT),
           "char-unk": lambda: CharTokenizer.train(TEXT, unk=True),
           "bpe": lambda: train(TEXT, 60, GPT2_PATTERN),
           "bpe-nopattern": lambda: train(TEXT, 60)}[kind]()
    d = tok.to_dict()
    assert _plain_json(d)
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tok.json"]  # no temp file left behind
    for again in (load_tokenizer(path), load_tokenizer(json.loads(path.read_text())), type(tok).load(path)):
        assert type(again) is type(tok)
        assert again.to_dict() == d
        assert again.special_ids == tok.special_ids and again.vocab_size == tok.vocab_size
        sample = "Speak, speak<|eos|>" + ("ü" if kind == "char-unk" else "")
        if kind != "char":
            assert again.encode(sample) == tok.encode(sample)
    if kind.startswith("bpe"):
        assert again.merges == tok.merges and again.vocab == tok.vocab


def test_tokenizer_dict_survives_a_weights_only_torch_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    tok = train(TEXT, 30, GPT2_PATTERN)
    torch.save({"tokenizer": tok.to_dict()}, tmp_path / "ck.pt")
    d = torch.load(tmp_path / "ck.pt", weights_only=True)["tokenizer"]
    assert load_tokenizer(d).encode(TEXT) == tok.encode(TEXT)


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"type": "wordpiece"}))
    with pytest.raises(ValueError, match="wrong.json.*wordpiece"):
        load_tokenizer(wrong)
    with pytest.raises(ValueError, match="missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    char = tmp_path / "char.json"
    CharTokenizer.train("abc").save(char)
    with pytest.raises(ValueError, match="not 'bpe'"):
        BPETokenizer.load(char)


def test_compression_ratio():
    tok = train(TEXT, 150, GPT2_PATTERN)
    char = CharTokenizer.train(TEXT)
    assert char.compression_ratio(TEXT) == pytest.approx(1.0)
    assert tok.compression_ratio(TEXT) > 2.0
    assert tok.compression_ratio(TEXT) == len(TEXT.encode()) / len(tok.encode(TEXT))


# --- command line --------------------------------------------------------------------------

def test_cli_trains_and_saves(tmp_path, capsys):
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT, encoding="utf-8")
    bpe.main(["--data", str(data), "--vocab-size", "300", "--out-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "256: " in out and "bytes per token" in out and out.strip().splitlines()[-1].startswith("summary:")
    tok = load_tokenizer(tmp_path / "out" / "bpe.json")
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300 and tok.pattern == GPT2_PATTERN
    lines = (tmp_path / "out" / "bpe.jsonl").read_text().splitlines()
    assert len(lines) == len(tok.merges) + 1 and "summary" in json.loads(lines[-1])
    bpe.main(["--data", str(data), "--vocab-size", "300", "--pattern", "none", "--out-dir", str(tmp_path / "free")])
    assert load_tokenizer(tmp_path / "free" / "bpe.json").pattern is None


@pytest.mark.parametrize("case", ["missing", "empty", "latin1", "small-vocab"])
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    data = tmp_path / "corpus.txt"
    args = ["--data", str(data), "--out-dir", str(tmp_path / "out")]
    if case == "empty":
        data.write_text("")
    elif case == "latin1":
        data.write_bytes("line one\ncaf\u00e9\n".encode("latin-1"))
    elif case == "small-vocab":
        data.write_text(TEXT)
        args += ["--vocab-size", "260"]
    with pytest.raises(SystemExit) as e:
        run_main(lambda: bpe.main(args))  # what `python bpe.py` does
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and " — " in err[0]
    if case == "latin1":
        assert "corpus.txt:2" in err[0]
    if case == "small-vocab":
        assert "261" in err[0]
    assert not (tmp_path / "out" / "bpe.json").exists()


def test_cli_as_a_script_imports_plumbing_and_fails_in_one_line(tmp_path):
    # The real entry point: bpe.py and plumbing.py import each other, which must not break `python bpe.py`.
    missing = tmp_path / "missing.txt"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bpe.py"), "--data", str(missing),
                           "--out-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and " — " in err[0] and "missing.txt" in err[0]
