"""Tokens/s of hfssl.DataCollatorForMaskedLM against transformers.DataCollatorForLanguageModeling.

    python bench/mlm_collator.py [--repeats 7]

Same real batches for both (CPython documentation tokenized with a WordPiece tokenizer trained on
it; ragged rows of L/2..L tokens, as lists, the way `datasets` yields them), batch shapes 64x128 and
256x512, with and without a precomputed `special_tokens_mask`, same process, median of the repeats.
Prints one JSON line; the ratios are hfssl / transformers.
"""

import argparse
import json
import random
import statistics
import time
from itertools import chain

import torch
from transformers import DataCollatorForLanguageModeling

from hfssl import DataCollatorForMaskedLM
from hfssl.data.text import python_docs_corpus, train_wordpiece_tokenizer


def make_examples(tokenizer, stream: list[int], batch_size: int, length: int, with_mask: bool, rng) -> list[dict]:
    examples = []
    for _ in range(batch_size):
        size = rng.randint(length // 2, length)
        start = rng.randrange(0, len(stream) - size)
        ids = [tokenizer.cls_token_id] + stream[start : start + size - 2] + [tokenizer.sep_token_id]
        example = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if with_mask:
            example["special_tokens_mask"] = [1] + [0] * (len(ids) - 2) + [1]
        examples.append(example)
    return examples


def tokens_per_second(collator, batches: list[list[dict]], repeats: int) -> float:
    collator(batches[0])  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = 0
        for batch in batches:
            tokens += collator(batch)["input_ids"].numel()
        timings.append(tokens / (time.perf_counter() - start))
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches per repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts = python_docs_corpus()["text"]
    tokenizer = train_wordpiece_tokenizer(texts[:5000], vocab_size=8000)
    stream = list(chain.from_iterable(tokenizer(texts[:6000], add_special_tokens=False)["input_ids"]))
    rng = random.Random(0)
    result = {"benchmark": "mlm_collator", "unit": "tokens/s", "torch_threads": 1}
    for batch_size, length in ((64, 128), (256, 512)):
        for with_mask in (False, True):
            batches = [make_examples(tokenizer, stream, batch_size, length, with_mask, rng) for _ in range(args.batches)]
            ours = tokens_per_second(DataCollatorForMaskedLM(tokenizer, seed=0), batches, args.repeats)
            theirs = tokens_per_second(DataCollatorForLanguageModeling(tokenizer, seed=0), batches, args.repeats)
            key = f"{batch_size}x{length}_{'with' if with_mask else 'no'}_special_mask"
            result[key] = {"hfssl": round(ours), "transformers": round(theirs), "ratio": round(ours / theirs, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
