"""Small builders that several test files share (pytest puts tests/ on the import path)."""
import json

import bpe

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!'\n:"


def tokenizer():
    """A character tokenizer that covers every toy prompt and answer of the tests."""
    return bpe.CharTokenizer.train(ALPHABET)


def write_jsonl(path, records):
    """Write records one JSON object per line; returns the path as a string (argparse wants one)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)
