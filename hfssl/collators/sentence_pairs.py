"""Collator for SimCSE: sentences, or (sentence, positive[, hard negative]) triplets, as raw text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class DataCollatorForSentencePairs:
    """Tokenize and pad the text columns of a batch for `SimCSEModel`.

    Examples are dicts of strings: `text_column` alone (unsupervised SimCSE), plus `positive_column` and
    optionally `negative_column` (supervised SimCSE: e.g. an NLI premise, its entailment and its contradiction).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): any tokenizer with a pad token.
        max_length (`int`, defaults to 32): truncation length (Gao et al. use 32 unsupervised, 32 supervised).
        text_column, positive_column, negative_column (`str`): column names ("text", "positive", "negative").

    Returns (from `__call__`):
        dict with `input_ids`, `attention_mask` (`torch.LongTensor` of shape (B, L)) and, when the columns are
        present, `positive_input_ids`, `positive_attention_mask`, `negative_input_ids`, `negative_attention_mask`.
    """

    tokenizer: Any
    max_length: int = 32
    text_column: str = "text"
    positive_column: str = "positive"
    negative_column: str = "negative"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples or self.text_column not in examples[0]:
            columns = list(examples[0]) if examples else []
            raise ValueError(f"Examples need a {self.text_column!r} column of strings; got columns {columns}.")
        if self.negative_column in examples[0] and self.positive_column not in examples[0]:
            raise ValueError(f"A {self.negative_column!r} column needs a {self.positive_column!r} column too.")
        batch: dict[str, torch.Tensor] = {}
        for column, prefix in ((self.text_column, ""), (self.positive_column, "positive_"),
                               (self.negative_column, "negative_")):
            if column not in examples[0]:
                continue
            encoded = self.tokenizer([example[column] for example in examples], truncation=True,
                                     max_length=self.max_length, padding=True, return_tensors="pt")
            batch.update({f"{prefix}{key}": encoded[key] for key in ("input_ids", "attention_mask")})
        return batch
