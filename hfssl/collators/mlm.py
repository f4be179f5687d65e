"""Masked language modelling collator, vectorised over the batch, all randomness from one `torch.Generator`.

Legend: B batch size, L padded sequence length, U units that can be selected per row (tokens, or
words with whole-word masking), M the largest number of spans in a row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from hfssl.augmentations.seeding import WorkerSeededGenerator
from hfssl.collators.padding import (
    TOKEN_LEVEL_PAD_VALUES,
    as_list_of_examples,
    check_return_tensors,
    pad_sequences,
    token_id_arrays,
)

_SELECTIONS = ("bernoulli", "exact")
_RETURN_TENSORS = ("pt", "np")


def _find_pre_tokenizer_marker(node: Any) -> str | None:
    """Search a tokenizer.json pre-tokenizer tree for ByteLevel ('Ġ') or Metaspace ('▁')."""
    if isinstance(node, dict):
        if node.get("type") == "ByteLevel":
            return "\u0120"
        if node.get("type") == "Metaspace":
            return node.get("replacement", "\u2581")
        children = node.get("pretokenizers") or []
        return next((m for m in map(_find_pre_tokenizer_marker, children) if m is not None), None)
    return None


def word_start_table(tokenizer) -> tuple[torch.Tensor, bool]:
    """For every vocabulary id, whether the token marks a word boundary, read from a fast tokenizer.

    Returns:
        `(table, marks_end)`: `table` is a bool tensor of shape (len(tokenizer),). When `marks_end`
        is False, `table[i]` says token `i` starts a word (WordPiece tokens without `##`, byte-level
        BPE tokens with `Ġ`, SentencePiece/Metaspace tokens with `▁`); when True, it says token `i`
        ends one (BPE with an end-of-word suffix such as CLIP's `</w>`).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Whole-word masking needs word boundaries; {type(tokenizer).__name__} is not a fast tokenizer. "
            "Use a fast tokenizer (AutoTokenizer(..., use_fast=True)), or add a `word_ids` column "
            "(from `encoding.word_ids()`) or an `offset_mapping` column to your examples."
        )
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model", {})
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    tokens = [token if isinstance(token, str) else "" for token in tokens]
    if suffix := model.get("end_of_word_suffix"):
        return torch.tensor([token.endswith(suffix) for token in tokens], dtype=torch.bool), True
    if model.get("type") == "WordPiece" or model.get("continuing_subword_prefix"):
        prefix = model.get("continuing_subword_prefix") or "##"
        return torch.tensor([not token.startswith(prefix) for token in tokens], dtype=torch.bool), False
    marker = _find_pre_tokenizer_marker(state.get("pre_tokenizer"))
    if marker is not None:
        return torch.tensor([token.startswith(marker) for token in tokens], dtype=torch.bool), False
    raise ValueError(
        f"Cannot infer word boundaries from this tokenizer (model type {model.get('type')!r}, no '##', 'Ġ' or '▁' "
        "marker). Add a `word_ids` column (from `encoding.word_ids()`) or an `offset_mapping` column "
        "(tokenize with return_offsets_mapping=True) to your examples."
    )


@dataclass
class DataCollatorForMaskedLM:
    """Pads token-id examples and masks them for masked language modelling (BERT, RoBERTa, SpanBERT).

    A drop-in for `transformers.DataCollatorForLanguageModeling(tokenizer, mlm=True, ...)`, with the same arguments
    in the same order, that never selects special tokens or padding (`special_tokens_mask` from the batch when
    present, else the tokenizer's special ids) and draws random replacements only from ordinary (non-special) ids.

    Args (the first nine as transformers', in its order):
        tokenizer (`PreTrainedTokenizerBase`): needs a mask token, and a pad token for ragged batches.
        mlm (`bool`, defaults to `True`): must be True; this collator only masks (`mlm=False` raises an error naming
            the causal-LM alternatives).
        whole_word_mask (`bool`, defaults to `False`): select whole words, with any fast tokenizer (boundaries from
            the vocabulary's `##`/`Ġ`/`▁` markers, or from `word_ids`/`offset_mapping` columns); unlike transformers,
            the 80/10/10 split stays per selected token.
        mlm_probability (`float`, defaults to 0.15): share of tokens selected for prediction.
        mask_replace_prob (`float`, defaults to 0.8): share of selected tokens replaced by the mask token.
        random_replace_prob (`float`, defaults to 0.1): share replaced by a random ordinary token; the
            rest (0.1) stay unchanged.
        pad_to_multiple_of (`int`, *optional*): pad the length up to a multiple of this.
        return_tensors (`str`, defaults to `"pt"`): `"pt"` for torch tensors, `"np"` for NumPy arrays.
        seed (`int`, *optional*): seed of the collator's `hfssl.WorkerSeededGenerator` (distinct per DataLoader
            worker and per process); `None` seeds it from torch's global RNG at first use.
        selection (`str`, defaults to `"bernoulli"`): `"bernoulli"` selects each token with probability
            `mlm_probability` (as transformers); `"exact"` selects exactly
            `min(max_predictions_per_seq, max(1, round(p * n)))` tokens per row, `n` counting all its tokens, [CLS]
            and [SEP] included, as `num_to_predict` in BERT's `create_pretraining_data.py` (Devlin et al., 2019);
            fewer only when the row has fewer maskable tokens.
        max_predictions_per_seq (`int`, *optional*): with `selection="exact"`, the most tokens selected per
            row (BERT's: 20 for 128-token rows, 80 for 512); no cap when unset.
        span_masking (`bool`, defaults to `False`): mask spans of geometric length (SpanBERT, Joshi et al., 2020),
            counting words with `whole_word_mask`, tokens otherwise: exactly `max(1, round(p * U))` units per row
            (whatever `selection`), in spans placed uniformly at random without overlapping or touching (each a
            maximal run), the last cut short to the budget.
        span_geometric_p (`float`, defaults to 0.2), max_span_length (`int`, defaults to 10): span law.
        max_length (`int`, *optional*): longest sequence accepted; defaults to the tokenizer's
            `model_max_length` when that is a real limit. Longer examples raise an error.

    Returns (from `__call__`):
        dict with `input_ids` and `labels` (`torch.LongTensor` of shape (B, L), labels -100 where not
        selected), `attention_mask` and any other token-level columns padded, other numeric columns
        stacked (NumPy arrays with `return_tensors="np"`). `special_tokens_mask`, `word_ids` and
        `offset_mapping` are consumed.
    """

    tokenizer: Any
    mlm: bool = True
    whole_word_mask: bool = False
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    seed: int | None = None
    selection: str = "bernoulli"
    max_predictions_per_seq: int | None = None
    span_masking: bool = False
    span_geometric_p: float = 0.2
    max_span_length: int = 10
    max_length: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = WorkerSeededGenerator(self.seed)
        if not self.mlm:
            raise ValueError(
                "DataCollatorForMaskedLM only builds masked-LM batches, got mlm=False. For causal-LM labels "
                "(labels = input_ids, padding -100) use transformers.DataCollatorForLanguageModeling(tokenizer, "
                "mlm=False), or pack the text into blocks with a `labels` column and use "
                "transformers.default_data_collator, as recipes/pretrain_clm.py does."
            )
        if self.tokenizer.mask_token is None:
            raise ValueError(
                f"{type(self.tokenizer).__name__} has no mask token, which masked language modelling needs. "
                "Add one with tokenizer.add_special_tokens({'mask_token': '[MASK]'}) and resize the model's "
                "embeddings, or train a causal LM instead (recipes/pretrain_clm.py)."
            )
        check_return_tensors(self.return_tensors, _RETURN_TENSORS)
        if not 0.0 < self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1], got {self.mlm_probability}.")
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob must not exceed 1, got {self.mask_replace_prob} + "
                f"{self.random_replace_prob}; the remainder is the share of selected tokens left unchanged."
            )
        if self.selection not in _SELECTIONS:
            raise ValueError(f"selection must be one of {_SELECTIONS}, got {self.selection!r}.")
        if self.max_predictions_per_seq is not None:
            if self.selection != "exact" or self.span_masking:
                raise ValueError(
                    f"max_predictions_per_seq={self.max_predictions_per_seq} caps selection='exact' (BERT's "
                    f"create_pretraining_data.py), got selection={self.selection!r}, span_masking={self.span_masking}. "
                    "Set selection='exact' without span_masking, or leave max_predictions_per_seq unset."
                )
            if self.max_predictions_per_seq < 1:
                raise ValueError(f"max_predictions_per_seq must be at least 1, got {self.max_predictions_per_seq}.")
        if self.span_masking:
            if not 0.0 < self.span_geometric_p <= 1.0:
                raise ValueError(f"span_geometric_p must be in (0, 1], got {self.span_geometric_p}.")
            if self.max_span_length < 1:
                raise ValueError(f"max_span_length must be at least 1, got {self.max_span_length}.")
            if self.mlm_probability > 0.5:
                raise ValueError(
                    f"span_masking needs mlm_probability <= 0.5 so that non-touching spans always fit, "
                    f"got {self.mlm_probability}."
                )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {self.pad_to_multiple_of}.")
        if self.max_length is None:
            model_max = getattr(self.tokenizer, "model_max_length", None)
            self.max_length = int(model_max) if model_max is not None and model_max < 1_000_000 else None

        self._vocab_size = vocab_size = len(self.tokenizer)
        special_ids = set(self.tokenizer.all_special_ids)
        special_ids.update(i for i, token in self.tokenizer.added_tokens_decoder.items() if token.special)
        self._special_ids = torch.tensor(sorted(special_ids), dtype=torch.long)
        self._ordinary_ids = torch.nonzero(~torch.isin(torch.arange(vocab_size), self._special_ids)).flatten()
        if len(self._ordinary_ids) == 0 and self.random_replace_prob > 0:
            raise ValueError(
                f"{type(self.tokenizer).__name__} has no ordinary (non-special) token to draw random replacements "
                f"from: all {vocab_size} of its tokens are special. Use a tokenizer with a real vocabulary, or set "
                "random_replace_prob=0.0."
            )
        self._mask_token_id = int(self.tokenizer.mask_token_id)
        self._word_table: tuple[torch.Tensor, bool] | None = None

    def __call__(self, features: Any, return_tensors: str | None = None) -> dict[str, Any]:
        return_tensors = check_return_tensors(return_tensors or self.return_tensors, _RETURN_TENSORS)
        batch = self.pad(features)
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        word_ids = batch.pop("word_ids", None)
        offset_mapping = batch.pop("offset_mapping", None)
        batch["input_ids"], batch["labels"] = self.mask_tokens(
            batch["input_ids"], special_tokens_mask, batch.get("attention_mask"), word_ids, offset_mapping
        )
        if return_tensors == "np":
            return {key: value.numpy() for key, value in batch.items()}
        return batch

    def pad(self, features: Any) -> dict[str, torch.Tensor]:
        """Pad examples (lists or tensors) into a batch of tensors, validating lengths and ids."""
        examples = as_list_of_examples(features)
        ids = token_id_arrays([example["input_ids"] for example in examples])
        lengths = [len(row) for row in ids]
        for index, length in enumerate(lengths):
            if length == 0:
                raise ValueError(f"Example {index} has empty input_ids; filter out empty texts before collating.")
            if self.max_length is not None and length > self.max_length:
                raise ValueError(
                    f"Example {index} has {length} tokens, more than max_length={self.max_length}. Tokenize with "
                    "truncation=True and max_length, or pack the text into blocks (hfssl.data.text.tokenize_and_pack)."
                )
        length = max(lengths)
        if self.pad_to_multiple_of:
            length = math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_id = self.tokenizer.pad_token_id
        if length != min(lengths) and pad_id is None:
            raise ValueError(
                "The batch needs padding but the tokenizer has no pad token. Set one, e.g. "
                "tokenizer.pad_token = tokenizer.eos_token, or pack the text into equal-length blocks."
            )
        side = getattr(self.tokenizer, "padding_side", "right")
        batch = {"input_ids": pad_sequences(ids, length, pad_id or 0, side)}
        if batch["input_ids"].min() < 0 or batch["input_ids"].max() >= self._vocab_size:
            raise ValueError(
                f"input_ids must lie in [0, {self._vocab_size}) for this tokenizer, got values in "
                f"[{int(batch['input_ids'].min())}, {int(batch['input_ids'].max())}]; was the data tokenized "
                "with a different tokenizer?"
            )
        for key in [key for key in examples[0] if key != "input_ids"]:
            values = [example[key] for example in examples]
            if key in TOKEN_LEVEL_PAD_VALUES:
                if key == "word_ids":
                    values = [[-1 if w is None else w for w in value] for value in values]
                pad_value = TOKEN_LEVEL_PAD_VALUES[key]
                if key == "token_type_ids":
                    pad_value = getattr(self.tokenizer, "pad_token_type_id", 0)
                batch[key] = pad_sequences(values, length, pad_value, side)
            else:
                try:
                    batch[key] = torch.as_tensor(values)
                except (TypeError, ValueError) as error:
                    raise ValueError(
                        f"Column {key!r} cannot be made into a tensor ({error}); remove it before collating "
                        "(Trainer does this with remove_unused_columns=True)."
                    ) from error
        input_names = getattr(self.tokenizer, "model_input_names", ["attention_mask"])
        if "attention_mask" not in batch and "attention_mask" in input_names:
            real = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
            batch["attention_mask"] = (real.flip(1) if side == "left" else real).long()
        return batch

    def mask_tokens(
        self, input_ids: torch.Tensor, special_tokens_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, word_ids: torch.Tensor | None = None,
        offset_mapping: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Select and replace tokens. Does not modify `input_ids`.

        Args:
            input_ids (`torch.LongTensor` of shape (B, L)): padded token ids.
            special_tokens_mask (`torch.Tensor` of shape (B, L), *optional*): 1 for tokens never to select.
            attention_mask (`torch.Tensor` of shape (B, L), *optional*): 0 marks padding.
            word_ids (`torch.LongTensor` of shape (B, L), *optional*): word index per token, -1 for none.
            offset_mapping (`torch.LongTensor` of shape (B, L, 2), *optional*): character spans.

        Returns:
            `(masked_input_ids, labels)`, both `torch.LongTensor` of shape (B, L).

        Raises:
            ValueError: when no token of the batch can be masked (every one special or padding).
        """
        generator = self._rng.get()
        if special_tokens_mask is None:
            special_tokens_mask = torch.isin(input_ids, self._special_ids)
        eligible = ~special_tokens_mask.bool()
        if attention_mask is not None:
            eligible &= attention_mask.bool()
        if not bool(eligible.any()):
            added = getattr(self.tokenizer, "num_special_tokens_to_add", lambda: 2)()
            raise ValueError(
                f"No example in this batch of {input_ids.shape[0]} has a token that can be masked (only special tokens "
                "and padding), so the masked-LM loss would be NaN (a mean over no labels). Filter empty and "
                "special-only texts out of the dataset: before tokenizing, e.g. dataset.filter(lambda example: "
                f"example['text'].strip() != ''), or after, e.g. dataset.filter(lambda example: "
                f"len(example['input_ids']) > {added}) ({added} special tokens added per text by this tokenizer)."
            )
        unit_ids, is_new_unit = self._units(input_ids, eligible, word_ids, offset_mapping)
        if self.span_masking:
            unit_selected = self._select_spans(is_new_unit.sum(1), input_ids.shape[1], generator)
        elif self.selection == "exact":
            if attention_mask is not None:
                num_tokens = attention_mask.bool().sum(1)
            elif self.tokenizer.pad_token_id is not None:
                num_tokens = (input_ids != self.tokenizer.pad_token_id).sum(1)
            else:
                num_tokens = torch.full((input_ids.shape[0],), input_ids.shape[1])
            unit_selected = self._select_exact(unit_ids, is_new_unit, eligible, num_tokens, generator)
        else:
            unit_selected = torch.rand(input_ids.shape, generator=generator) < self.mlm_probability
        selected = unit_selected.gather(1, unit_ids.clamp(min=0)) & eligible

        labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
        draw = torch.rand(input_ids.shape, generator=generator)
        to_mask = selected & (draw < self.mask_replace_prob)
        to_random = selected & ~to_mask & (draw < self.mask_replace_prob + self.random_replace_prob)
        masked = input_ids.masked_fill(to_mask, self._mask_token_id)
        num_random = int(to_random.sum())
        if num_random:
            picks = torch.randint(len(self._ordinary_ids), (num_random,), generator=generator)
            masked[to_random] = self._ordinary_ids[picks]
        return masked, labels

    def _units(
        self, input_ids: torch.Tensor, eligible: torch.Tensor, word_ids: torch.Tensor | None,
        offset_mapping: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Number the selectable units (tokens or words) of each row: `unit_ids` (B, L) is the unit
        of each token (-1 when not eligible) and `is_new_unit` (B, L) marks each unit's first token."""
        previous_eligible = torch.nn.functional.pad(eligible[:, :-1], (1, 0), value=False)
        if not self.whole_word_mask:
            is_new_unit = eligible
        elif word_ids is not None:
            previous = torch.nn.functional.pad(word_ids[:, :-1], (1, 0), value=-2)
            is_new_unit = eligible & ((word_ids != previous) | ~previous_eligible)
        elif offset_mapping is not None:
            previous_end = torch.nn.functional.pad(offset_mapping[:, :-1, 1], (1, 0), value=-1)
            is_new_unit = eligible & ((offset_mapping[:, :, 0] != previous_end) | ~previous_eligible)
        else:
            if self._word_table is None:
                self._word_table = word_start_table(self.tokenizer)
            table, marks_end = self._word_table
            if marks_end:
                starts = torch.nn.functional.pad(table[input_ids[:, :-1]], (1, 0), value=True)
            else:
                starts = table[input_ids]
            is_new_unit = eligible & (starts | ~previous_eligible)
        unit_ids = is_new_unit.long().cumsum(1) - 1
        return unit_ids.masked_fill(~eligible, -1), is_new_unit

    def _select_exact(
        self, unit_ids: torch.Tensor, is_new_unit: torch.Tensor, eligible: torch.Tensor, num_tokens: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """BERT's `num_to_predict` tokens per row (n = `num_tokens`, shape (B,)), taken as whole units in random
        order; with words, units are added while the total stays within the budget (the first is always taken;
        BERT instead skips a word that would overshoot)."""
        batch_size, length = unit_ids.shape
        num_units = is_new_unit.sum(1)
        # float64 and half-to-even, as Python's round() on BERT's float product
        budget = torch.round(num_tokens.double() * self.mlm_probability).long().clamp(min=1)
        if self.max_predictions_per_seq is not None:
            budget = budget.clamp(max=self.max_predictions_per_seq)
        budget = torch.minimum(budget, eligible.sum(1))
        scores = torch.rand((batch_size, length), generator=generator)
        scores.masked_fill_(torch.arange(length)[None, :] >= num_units[:, None], 2.0)
        order = scores.argsort(dim=1)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(length).expand(batch_size, length))
        if not self.whole_word_mask:
            return ranks < budget[:, None]
        unit_lengths = torch.zeros((batch_size, length), dtype=torch.long)
        unit_lengths.scatter_add_(1, unit_ids.clamp(min=0), eligible.long())
        taken_tokens = unit_lengths.gather(1, order).cumsum(1)
        num_taken = (taken_tokens <= budget[:, None]).sum(1).clamp(min=1)
        num_taken = torch.minimum(num_taken, num_units)
        return ranks < num_taken[:, None]

    def _select_spans(self, num_units: torch.Tensor, length: int, generator) -> torch.Tensor:
        """Non-touching geometric spans covering exactly `max(1, round(p * U))` units per row.

        Span lengths l_1..l_k are drawn i.i.d. (the last cut to the budget); with F = U - budget free
        units, k-1 of them go between spans and the other R = F - (k-1) are spread uniformly by
        choosing k distinct slots c_1 < ... < c_k in [0, R + k): span i starts at c_i + sum_{j<i} l_j.
        """
        batch_size = num_units.shape[0]
        budget = torch.round(num_units * self.mlm_probability).long().clamp(min=1).masked_fill(num_units == 0, 0)
        max_spans = max(int(budget.max()), 1)
        uniform = torch.rand((batch_size, max_spans), generator=generator).clamp_min(1e-12)
        if self.span_geometric_p >= 1.0:
            span_lengths = torch.ones((batch_size, max_spans), dtype=torch.long)
        else:
            span_lengths = (torch.log(uniform) / math.log1p(-self.span_geometric_p)).floor().long() + 1
        span_lengths = span_lengths.clamp(max=self.max_span_length)
        ends = span_lengths.cumsum(1)
        num_spans = ((ends < budget[:, None]).sum(1) + 1).masked_fill(budget == 0, 0)
        starts_before = ends - span_lengths  # exclusive cumulative sum
        column = torch.arange(max_spans)[None, :]
        span_lengths = torch.where(column < num_spans[:, None] - 1, span_lengths, budget[:, None] - starts_before)
        span_lengths = span_lengths.masked_fill(column >= num_spans[:, None], 0)

        slots = num_units - budget + 1  # R + k = U - budget - (k - 1) + k
        scores = torch.rand((batch_size, length + 1), generator=generator)
        scores.masked_fill_(torch.arange(length + 1)[None, :] >= slots[:, None], 2.0)
        chosen = scores.argsort(dim=1)[:, :max_spans]
        chosen = chosen.masked_fill(column >= num_spans[:, None], length + 1).sort(dim=1).values
        starts = (chosen + starts_before).clamp(max=length)
        delta = torch.zeros((batch_size, length + 2), dtype=torch.long)
        active = (column < num_spans[:, None]).long()
        delta.scatter_add_(1, starts, active)
        delta.scatter_add_(1, (starts + span_lengths).clamp(max=length + 1), -active)
        return delta.cumsum(1)[:, :length] > 0

