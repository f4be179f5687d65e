"""Fast padding of tokenized examples into tensors.

Ragged lists of Python lists are padded through numpy rather than `torch.tensor` or `tokenizer.pad`
(see BENCHMARKS.md, `bench/mlm_collator.py`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

# Columns that hold one value per token and are padded with these values; anything else that is
# numeric is stacked as is.
TOKEN_LEVEL_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "word_ids": -1,
                          "position_ids": 0, "offset_mapping": 0}  # fmt: skip
TOKENIZE_FIRST = "tokenize the text first, e.g. dataset.map(lambda batch: tokenizer(batch['text']), batched=True)"
_TENSOR_TYPES = {"pt": "'pt' (torch tensors)", "np": "'np' (NumPy arrays)"}


def check_return_tensors(return_tensors: str, allowed: tuple[str, ...] = ("pt",)) -> str:
    """Return `return_tensors` if it is one of `allowed`, else raise naming the allowed values."""
    if return_tensors not in allowed:
        choices = " or ".join(_TENSOR_TYPES[name] for name in allowed)
        raise ValueError(f"return_tensors={return_tensors!r} is not supported; use {choices}.")
    return return_tensors


def as_list_of_examples(features: Any) -> list[Mapping[str, Any]]:
    """Accept a list of dicts, a list of token-id sequences, or a batch dict of columns (as
    `datasets.map(batched=True)` passes) and return a list of dicts, each with an `input_ids` column."""
    if isinstance(features, Mapping):
        columns = list(features)
        if not columns:
            raise ValueError("Got an empty batch dict; expected columns such as 'input_ids'.")
        features = [dict(zip(columns, values)) for values in zip(*(features[c] for c in columns))]
    if not isinstance(features, Sequence) or len(features) == 0:
        raise ValueError(f"Expected a non-empty list of examples, got {type(features).__name__} of length 0.")
    if not isinstance(features[0], Mapping):
        features = [{"input_ids": example} for example in features]
    if any("input_ids" not in example for example in features):
        raise ValueError(
            f"Every example needs an 'input_ids' column; got columns {list(features[0])}: {TOKENIZE_FIRST}."
        )
    return list(features)


def token_id_arrays(values: Sequence[Any]) -> list[np.ndarray]:
    """Each example's token ids (a list, numpy array or tensor) as a flat integer `np.ndarray` of shape (L_i,).

    Raises:
        ValueError: naming the example, for text (a string or strings), float or other non-integer ids, and nested
            sequences, which `pad_sequences` would fail on with an unrelated message, or silently truncate.
    """
    arrays = []
    for index, value in enumerate(values):
        if isinstance(value, str):
            raise ValueError(
                f"Example {index} has text in 'input_ids' ({value[:40]!r}), not token ids; {TOKENIZE_FIRST}."
            )
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = (value.float() if value.is_floating_point() else value).numpy()  # numpy has no bfloat16
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:  # e.g. ragged nested lists
            message = f"Example {index}: 'input_ids' is not one flat sequence of token ids ({error})."
            raise ValueError(message) from error
        if array.size == 0:
            arrays.append(np.zeros(0, dtype=np.int64))
            continue
        if array.ndim != 1:
            raise ValueError(
                f"Example {index} has 'input_ids' of shape {array.shape}; each example's 'input_ids' must be one flat "
                "sequence of token ids (was a batch of encodings passed as one example?)."
            )
        if array.dtype.kind in "iu":
            arrays.append(array)
            continue
        items = array.tolist()
        text = [item for item in items if isinstance(item, (str, bytes))]
        if text:
            raise ValueError(
                f"Example {index} has strings in 'input_ids' (e.g. {text[0]!r}), not token ids; {TOKENIZE_FIRST}."
            )
        others = [item for item in items if not isinstance(item, numbers.Integral) or isinstance(item, bool)]
        if not others:  # integers in an object array
            arrays.append(array.astype(np.int64))
            continue
        fractional = [item for item in others if isinstance(item, float) and not item.is_integer()]
        raise ValueError(
            f"Example {index} has non-integer 'input_ids' (e.g. {(fractional or others)[0]!r}, dtype {array.dtype}); "
            "token ids must be integers. Cast them (e.g. tensor.long()), and check the step that made them: ids "
            "turn into floats in a float tensor, or in a column with missing values."
        )
    return arrays


def pad_sequences(values: Sequence[Any], length: int, pad_value: int, padding_side: str = "right") -> torch.Tensor:
    """Pad sequences (lists, numpy arrays or tensors, of scalars or of pairs) to `length`.

    Returns:
        `torch.Tensor` of shape (batch_size, length) or (batch_size, length, 2) for pairs.
    """
    if isinstance(values[0], torch.Tensor):
        values = [value.numpy() for value in values]
    trailing = tuple(np.shape(values[0])[1:]) if len(values[0]) else ()
    out = np.full((len(values), length, *trailing), pad_value, dtype=np.int64)
    for row, value in enumerate(values):
        if len(value):
            start = length - len(value) if padding_side == "left" else 0
            out[row, start : start + len(value)] = value
    return torch.from_numpy(out)

