"""T5's span-corruption objective as a PyTorch collator (Raffel et al., 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", JMLR, section 3.1.4).

Legend: B batch size, N raw tokens per example (before corruption), S noise spans per row (the largest in the
batch), I corrupted input length, T target length.

A row's noise tokens and noise spans (`span_counts`) are laid out as two independent uniform random compositions of
the noise and non-noise lengths, interleaved starting with a non-noise span (T5's `random_spans_noise_mask`). The
input replaces each noise span by one sentinel (`<extra_id_0>`, `<extra_id_1>`, ...); the target lists each sentinel
followed by the span it replaced. Both end with EOS.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from hfssl.augmentations.seeding import WorkerSeededGenerator
from hfssl.collators.padding import as_list_of_examples, check_return_tensors, pad_sequences, token_id_arrays

logger = logging.getLogger(__name__)

_SENTINEL_PATTERN = re.compile(r"^<extra_id_(\d+)>$")


def span_counts(
    length: int | torch.Tensor, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int] | tuple[torch.Tensor, torch.Tensor]:
    """Noise tokens and noise spans of a row of `length` tokens, as T5's `random_spans_noise_mask` (two tensors of
    shape (B,) for a `torch.LongTensor` of row lengths of shape (B,)).

    Returns:
        `(num_noise_tokens, num_noise_spans)`: `round(length * noise_density)` clamped to `[1, length - 1]`, and
        `round(num_noise_tokens / mean_noise_span_length)` clamped to `[1, min(num_noise_tokens, length -
        num_noise_tokens)]` (the upper clamp, absent in T5, only matters for rows of a few tokens or mean spans
        near 1: each noise span needs a non-noise span before it). Rounded half to even in float32, as T5's mask
        (`tf.round`); T5's `compute_input_and_target_lengths` rounds in float64, which disagrees at a few lengths
        (190 at density 0.15: 28.5 is 28 in float64, 29 in float32); here both use the mask's arithmetic.
    """
    lengths = torch.as_tensor(length)
    num_noise = torch.round(lengths.to(torch.float32) * torch.tensor(noise_density, dtype=torch.float32)).long()
    num_noise = torch.minimum(num_noise.clamp(min=1), lengths - 1)
    num_spans = torch.round(num_noise.to(torch.float32) / torch.tensor(mean_noise_span_length, dtype=torch.float32))
    num_spans = torch.minimum(num_spans.long().clamp(min=1), torch.minimum(num_noise, lengths - num_noise))
    return (num_noise, num_spans) if isinstance(length, torch.Tensor) else (int(num_noise), int(num_spans))


def compute_input_and_target_lengths(
    input_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """The raw length to pack text into so that corrupted inputs have exactly `input_length` tokens.

    As T5's `compute_input_and_target_lengths` (and transformers' `run_t5_mlm_flax.py`): the largest raw length N
    whose corrupted input (non-noise tokens + one sentinel per span + EOS) fits in `input_length`, which then has
    exactly `input_length` tokens. T5's density-0.5 adjustment (step back one raw token so that the target is no
    longer than the input) is applied only when the input keeps `input_length` tokens: T5 applies it always, which
    leaves the input one token short at some lengths (e.g. 9, 15, 21, ... with mean span 2).

    Args:
        input_length (`int`): the encoder length wanted (512 in T5).
        noise_density (`float`, defaults to 0.15), mean_noise_span_length (`float`, defaults to 3.0): T5's defaults.

    Returns:
        `(raw_length, target_length)`: e.g. `(568, 114)` for `input_length=512` with T5's defaults.

    Raises:
        ValueError: when no raw length gives exactly `input_length` input tokens (only with mean spans near 1, where
            one more raw token can add both a kept token and a sentinel).
    """
    if input_length < 3:
        raise ValueError(f"input_length must be at least 3 (one token, one sentinel, EOS), got {input_length}.")

    # Every raw length from 2 (at index 0) up to one whose kept tokens alone exceed input_length; the input length
    # never decreases as the raw length grows, so the largest raw length whose input fits is the last of a prefix.
    raw_lengths = torch.arange(2, int((input_length + 2) / (1.0 - noise_density)) + 4)
    num_noise, num_spans = span_counts(raw_lengths, noise_density, mean_noise_span_length)
    input_lengths = (raw_lengths - num_noise + num_spans + 1).tolist()
    target_lengths = (num_noise + num_spans + 1).tolist()
    index = sum(length <= input_length for length in input_lengths[1:])
    if input_lengths[index] != input_length:
        raise ValueError(
            f"No raw length gives exactly {input_length} corrupted input tokens at noise_density={noise_density} and "
            f"mean_noise_span_length={mean_noise_span_length}: {index + 2} raw tokens give {input_lengths[index]} and "
            f"{index + 3} give {input_lengths[index + 1]}. Choose another input_length or a longer "
            "mean_noise_span_length."
        )
    # T5's hack: with density 0.5 keep the target no longer than the (usually round) input length.
    stepped_back = index > 0 and input_lengths[index - 1] == input_length
    if noise_density == 0.5 and target_lengths[index] > input_length and stepped_back:
        index -= 1
    return index + 2, target_lengths[index]


def sentinel_token_ids(tokenizer, add_if_missing: bool = False, num_sentinels: int = 100) -> list[int]:
    """The ids of `<extra_id_0>`, `<extra_id_1>`, ... in the tokenizer, in sentinel order.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): T5's tokenizers carry 100 extra ids.
        add_if_missing (`bool`, defaults to `False`): when the tokenizer has none, add `num_sentinels` of them as
            special tokens (the model's embeddings must then be resized to `len(tokenizer)`).
        num_sentinels (`int`, defaults to 100): how many to add (T5 uses 100).

    Returns:
        `list[int]`: the sentinel ids, `<extra_id_0>` first.
    """
    vocab = tokenizer.get_vocab()
    found = sorted(
        (int(match.group(1)), index) for token, index in vocab.items() if (match := _SENTINEL_PATTERN.match(token))
    )
    numbers = [number for number, _ in found]
    if found and numbers != list(range(len(found))):
        raise ValueError(
            f"The tokenizer's sentinel tokens are not numbered <extra_id_0>..<extra_id_{len(found) - 1}> without gaps "
            f"(found numbers {numbers[:10]}...). Fix the tokenizer's extra ids."
        )
    if found:
        return [index for _, index in found]
    if not add_if_missing:
        raise ValueError(
            f"{type(tokenizer).__name__} has no sentinel tokens (<extra_id_0>, <extra_id_1>, ...), which span "
            "corruption needs. Use a T5 tokenizer, train one with "
            "hfssl.data.tokenizer_training.train_unigram_tokenizer, "
            "or pass add_sentinel_tokens=True and resize the model: model.resize_token_embeddings(len(tokenizer))."
        )
    tokens = [f"<extra_id_{i}>" for i in range(num_sentinels)]
    tokenizer.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    logger.warning(
        "Added %d sentinel tokens <extra_id_0>..<extra_id_%d> to %s (now %d tokens). Resize the model's embeddings "
        "with model.resize_token_embeddings(len(tokenizer)) and save this tokenizer with the model.",
        num_sentinels, num_sentinels - 1, type(tokenizer).__name__, len(tokenizer),
    )
    return tokenizer.convert_tokens_to_ids(tokens)


def random_compositions(totals: torch.Tensor, parts: torch.Tensor, max_parts: int, generator) -> torch.Tensor:
    """Split each `totals[b]` into `parts[b]` positive integers, uniformly over all such compositions.

    `parts[b] - 1` distinct cut points are drawn uniformly from `{1, ..., totals[b] - 1}` (T5's
    `random_segmentation`, vectorised). Columns beyond `parts[b]` are 0.

    Args:
        totals (`torch.LongTensor` of shape (B,)), parts (`torch.LongTensor` of shape (B,)): `1 <= parts <= totals`.
        max_parts (`int`): the width of the result, at least `parts.max()`.

    Returns:
        `torch.LongTensor` of shape (B, max_parts): the part lengths, summing to `totals` per row.
    """
    batch_size = totals.shape[0]
    width = max(int(totals.max()) - 1, 1)
    scores = torch.rand((batch_size, width), generator=generator)
    scores.masked_fill_(torch.arange(width)[None, :] >= (totals - 1)[:, None], 2.0)
    cuts = scores.argsort(dim=1)[:, : max_parts - 1] + 1  # (B, max_parts - 1); empty when max_parts == 1
    column = torch.arange(max_parts - 1)[None, :]
    cuts = torch.where(column < (parts - 1)[:, None], cuts, totals[:, None]).sort(dim=1).values
    bounds = torch.cat([torch.zeros((batch_size, 1), dtype=torch.long), cuts, totals[:, None]], dim=1)
    return bounds.diff(dim=1)


@dataclass
class DataCollatorForSpanCorruption:
    """Corrupts token-id examples with T5's span-corruption objective (PyTorch, vectorised over the batch).

    Examples are raw token ids, no EOS needed. Packed into blocks of `compute_input_and_target_lengths(input_length)`
    raw tokens, every input has exactly `input_length` tokens and every target `target_length`, as in T5; rows of
    different lengths get their own noise and span counts, and outputs are padded.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): needs an EOS token, a pad token and sentinel tokens `<extra_id_i>`.
        noise_density (`float`, defaults to 0.15): share of tokens corrupted (Raffel et al., 2020).
        mean_noise_span_length (`float`, defaults to 3.0): mean length of a corrupted span (Raffel et al., 2020).
        add_sentinel_tokens (`bool`, defaults to `False`): when the tokenizer has no `<extra_id_i>` tokens, add 100
            of them (with a warning: resize the model's embeddings) instead of raising.
        input_length (`int`, *optional*): when set, every corrupted input must have exactly this length (the packing
            check), else a `ValueError` names the raw length to pack to.
        pad_to_multiple_of (`int`, *optional*): pad input and target lengths up to a multiple of this.
        seed (`int`, *optional*): seed of the collator's generator (`hfssl.WorkerSeededGenerator`: distinct per
            DataLoader worker and per process); `None` seeds it from torch's global RNG at first use.

    Returns (from `__call__`):
        dict with `input_ids` (`torch.LongTensor` of shape (B, I)), `attention_mask` (B, I), `labels`
        (`torch.LongTensor` of shape (B, T), -100 on padding). T5-style models build `decoder_input_ids` from the
        labels themselves.
    """

    tokenizer: Any
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    add_sentinel_tokens: bool = False
    input_length: int | None = None
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    return_tensors: str = "pt"
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = WorkerSeededGenerator(self.seed)
        check_return_tensors(self.return_tensors)
        if not 0.0 < self.noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density} (T5 uses 0.15).")
        if self.mean_noise_span_length < 1.0:
            raise ValueError(
                f"mean_noise_span_length must be at least 1, got {self.mean_noise_span_length} (T5 uses 3)."
            )
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"{type(self.tokenizer).__name__} has no EOS token; set tokenizer.eos_token first.")
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                f"{type(self.tokenizer).__name__} has no pad token, which T5 uses to start decoding and to pad. "
                "Set one, e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}), and resize the model."
            )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {self.pad_to_multiple_of}.")
        sentinels = sentinel_token_ids(self.tokenizer, self.add_sentinel_tokens)
        self._sentinel_ids = torch.tensor(sentinels, dtype=torch.long)
        if self.input_length is not None:
            self._raw_length, _ = compute_input_and_target_lengths(
                self.input_length, self.noise_density, self.mean_noise_span_length
            )

    def __call__(self, features: Any, return_tensors: str | None = None) -> dict[str, torch.Tensor]:
        check_return_tensors(return_tensors or self.return_tensors)
        examples = as_list_of_examples(features)
        ids = token_id_arrays([example["input_ids"] for example in examples])
        lengths = torch.tensor([len(row) for row in ids], dtype=torch.long)
        if int(lengths.min()) < 2:
            raise ValueError(
                f"Example {int(lengths.argmin())} has {int(lengths.min())} tokens; span corruption needs at least 2. "
                "Filter out short texts or pack the text into blocks."
            )
        if self.input_length is not None and bool((lengths != self._raw_length).any()):
            raise ValueError(
                f"With input_length={self.input_length}, every example must have {self._raw_length} raw tokens "
                f"(compute_input_and_target_lengths), got lengths {sorted(set(lengths.tolist()))[:5]}. Pack the text "
                f"with max_seq_length={self._raw_length}."
            )
        input_ids = pad_sequences(ids, int(lengths.max()), 0)
        noise_mask = self.noise_mask(lengths, input_ids.shape[1])
        inputs, labels = self.corrupt(input_ids, noise_mask, lengths)
        attention_mask = (inputs != -100).long()
        inputs = inputs.masked_fill(inputs == -100, self.tokenizer.pad_token_id)
        return {"input_ids": inputs, "attention_mask": attention_mask, "labels": labels}

    def noise_mask(self, lengths: torch.Tensor, width: int) -> torch.Tensor:
        """Draw T5's random span noise masks.

        Args:
            lengths (`torch.LongTensor` of shape (B,)): the number of real tokens of each row.
            width (`int`): N, the padded row length.

        Returns:
            `torch.BoolTensor` of shape (B, N): True on noise tokens (always False on padding).
        """
        generator = self._rng.get()
        num_noise, num_spans = span_counts(lengths, self.noise_density, self.mean_noise_span_length)
        max_spans = int(num_spans.max())
        if max_spans > len(self._sentinel_ids):
            raise ValueError(
                f"A row needs {max_spans} noise spans but the tokenizer has only {len(self._sentinel_ids)} sentinel "
                "tokens; use shorter rows, a larger mean_noise_span_length, or a tokenizer with more extra ids."
            )
        noise_lengths = random_compositions(num_noise, num_spans, max_spans, generator)
        kept_lengths = random_compositions(lengths - num_noise, num_spans, max_spans, generator)
        interleaved = torch.stack([kept_lengths, noise_lengths], dim=2).reshape(len(lengths), 2 * max_spans)
        ends = interleaved.cumsum(1)
        positions = torch.arange(width).expand(len(lengths), width).contiguous()
        segment = torch.searchsorted(ends, positions, right=True)
        return (segment % 2 == 1) & (positions < lengths[:, None])

    def corrupt(
        self, input_ids: torch.Tensor, noise_mask: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Build inputs and targets from a noise mask. Does not modify `input_ids`.

        Args:
            input_ids (`torch.LongTensor` of shape (B, N)): raw token ids, padded.
            noise_mask (`torch.BoolTensor` of shape (B, N)): True on noise tokens.
            lengths (`torch.LongTensor` of shape (B,)): the real length of each row.

        Returns:
            `(inputs, labels)`: `torch.LongTensor` of shapes (B, I) and (B, T), each row ending with EOS and padded
            with -100.
        """
        real = torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]
        return self._filter(input_ids, noise_mask, real), self._filter(input_ids, ~noise_mask & real, real)

    def _filter(self, input_ids: torch.Tensor, drop: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Replace each run of `drop` tokens by the next sentinel, keep the other real tokens, append EOS."""
        previous = torch.nn.functional.pad(drop[:, :-1], (1, 0), value=False)
        run_starts = drop & ~previous
        sentinel_index = (run_starts.long().cumsum(1) - 1).clamp(min=0)
        sentinels = self._sentinel_ids[sentinel_index.clamp(max=len(self._sentinel_ids) - 1)]
        values = torch.where(run_starts, sentinels, input_ids)
        keep = real & (~drop | run_starts)
        num_kept = keep.sum(1)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        width = int(num_kept.max()) + 1
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        out = torch.nn.functional.pad(values.gather(1, order), (0, max(width - values.shape[1], 0)))[:, :width]
        column = torch.arange(width)[None, :]
        out = out.masked_fill(column > num_kept[:, None], -100)
        return out.masked_fill(column == num_kept[:, None], self.tokenizer.eos_token_id)

