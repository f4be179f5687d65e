"""transformers' own cases for the MLM collator, run against DataCollatorForMaskedLM with the same arguments.

Ported from transformers' tests/trainer/test_data_collator.py: the DataCollatorForLanguageModeling MLM cases (padded
and unpadded, lists and dicts, `pad_to_multiple_of`, seeds across instances and DataLoader workers, replacement
probabilities), the NSP and SOP cases (`token_type_ids`, `next_sentence_label`, `sentence_order_label` pass
through), the whole-word-mask cases (offset mappings) and the immutability cases, each for `return_tensors` "pt" and
"np". Each case also runs transformers' collator on the same features and compares keys, shapes and padding.

transformers' fixture is a BERT vocabulary of five special tokens ([UNK] [CLS] [SEP] [PAD] [MASK] = ids 0-4). Where
hfssl refuses on purpose, the case checks the refusal and its message, then reruns on the nearest valid input
(README "Differences from transformers' MLM collator" lists them):

- a vocabulary of special tokens only: nothing to draw random replacements from (transformers draws [MASK], [PAD]
  and the others); refused unless random_replace_prob=0;
- ids outside the vocabulary: the features use ids up to 9 (or 999) with that five-token vocabulary; the rerun uses
  the same five special tokens at the same ids plus ordinary tokens up to id 999 (`wide_tokenizer`);
- nothing to mask: the NSP and SOP features are ids 0-4, all special tokens, so transformers returns no label (a NaN
  loss); the rerun uses ids 5-9;
- `mlm=False`: hfssl only masks and points to the causal-LM path.
"""

import os

import numpy as np
import pytest
import torch
from transformers import BertTokenizer, DataCollatorForLanguageModeling, set_seed

from hfssl import DataCollatorForMaskedLM

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
RETURN_TENSORS = ["pt", "np"]


def _bert_tokenizer(tmp_path_factory, tokens: list[str]) -> BertTokenizer:
    folder = tmp_path_factory.mktemp("vocab")
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as vocab:
        vocab.write("".join(token + "\n" for token in tokens))
    return BertTokenizer(os.path.join(folder, "vocab.txt"))


@pytest.fixture
def tokenizer(tmp_path_factory):
    """transformers' fixture: the five special tokens only (fresh per test: some cases change it)."""
    return _bert_tokenizer(tmp_path_factory, SPECIAL_TOKENS)


@pytest.fixture
def wide_tokenizer(tmp_path_factory):
    """The same five special tokens at ids 0-4, then ordinary tokens up to id 999."""
    return _bert_tokenizer(tmp_path_factory, SPECIAL_TOKENS + [f"word{i}" for i in range(5, 1000)])


def as_torch(batch: dict) -> dict:
    return {key: torch.as_tensor(np.asarray(value)) for key, value in batch.items()}


def check_like_transformers(ours: dict, theirs: dict, tokenizer, return_tensors: str) -> None:
    """Same keys, array types, shapes and dtypes as transformers' batch; the same original ids once the labels are
    put back (so the same padding); labels only on ordinary tokens, and tokens without a label unchanged."""
    kind = torch.Tensor if return_tensors == "pt" else np.ndarray
    # From lists of ids transformers returns no attention mask; hfssl adds one (0 on padding).
    assert set(ours) - set(theirs) <= {"attention_mask"} and set(theirs) <= set(ours)
    assert all(isinstance(value, kind) for value in ours.values())
    for key in theirs:
        assert tuple(ours[key].shape) == tuple(theirs[key].shape), key
        assert ours[key].dtype == theirs[key].dtype, key
    ours, theirs = as_torch(ours), as_torch(theirs)
    for key in set(theirs) - {"input_ids", "labels"}:
        assert torch.equal(ours[key], theirs[key]), key
    original = torch.where(theirs["labels"] != -100, theirs["labels"], theirs["input_ids"])
    selected = ours["labels"] != -100
    assert torch.equal(ours["labels"][selected], original[selected])
    assert torch.equal(ours["input_ids"][~selected], original[~selected])
    assert not torch.isin(original[selected], torch.tensor(tokenizer.all_special_ids)).any(), "special token selected"


def check_masking(batch: dict, tokenizer) -> None:
    """transformers' assertion `torch.any(input_ids == mask_token_id)` (true from the start: the features include
    [MASK] itself, id 4). Its other assertion, no label off a [MASK], holds only by the luck of set_seed(42) (a
    selected token stays or is randomised 20% of the time); `check_like_transformers` checks what always holds."""
    assert (as_torch(batch)["input_ids"] == tokenizer.mask_token_id).any()


# ---------------------------------------------------------------- test_data_collator_for_language_modeling

NO_PAD = [{"input_ids": list(range(10))}, {"input_ids": list(range(10))}]
PAD = [{"input_ids": list(range(5))}, {"input_ids": list(range(10))}]
FEATURE_FORMS = {
    "dicts": (NO_PAD, PAD),
    "lists": ([list(range(10)), list(range(10))], [list(range(5)), list(range(10))]),
}


@pytest.mark.parametrize("return_tensors", RETURN_TENSORS)
@pytest.mark.parametrize("form", FEATURE_FORMS)
def test_no_pad_and_pad(tokenizer, wide_tokenizer, form, return_tensors):
    no_pad, pad = FEATURE_FORMS[form]
    # Refused on purpose: transformers' five-token vocabulary has no ordinary token, and ids 5-9 lie outside it.
    with pytest.raises(ValueError, match="all 5 of its tokens are special.*random_replace_prob=0.0"):
        DataCollatorForMaskedLM(tokenizer, return_tensors=return_tensors)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 5\) for this tokenizer"):
        DataCollatorForMaskedLM(tokenizer, random_replace_prob=0.0, return_tensors=return_tensors)(no_pad)
    # Refused on purpose: hfssl only masks (transformers' mlm=False half of this case).
    with pytest.raises(ValueError, match="DataCollatorForLanguageModeling\\(tokenizer, mlm=False\\)"):
        DataCollatorForMaskedLM(wide_tokenizer, mlm=False, return_tensors=return_tensors)

    set_seed(42)
    for multiple, length in ((None, 10), (8, 16)):
        ours = DataCollatorForMaskedLM(wide_tokenizer, pad_to_multiple_of=multiple, return_tensors=return_tensors)
        options = dict(pad_to_multiple_of=multiple, return_tensors=return_tensors)
        theirs = DataCollatorForLanguageModeling(wide_tokenizer, **options)
        for features in (no_pad, pad):
            batch = ours(features)
            assert tuple(batch["input_ids"].shape) == tuple(batch["labels"].shape) == (2, length)
            check_like_transformers(batch, theirs(features), wide_tokenizer, return_tensors)
            check_masking(batch, wide_tokenizer)

    wide_tokenizer.pad_token = None  # transformers: "Expect error due to padding token missing"
    with pytest.raises(ValueError, match="needs padding but the tokenizer has no pad token"):
        DataCollatorForMaskedLM(wide_tokenizer, return_tensors=return_tensors)(pad)


def test_masking_is_not_luck(wide_tokenizer):
    """transformers asserts, after set_seed(42) on two rows, that no label sits on a token other than [MASK], which
    depends on the draw (a selected token is kept or randomised 20% of the time). Over many rows: what always holds
    does, and the selected and [MASK] counts are within binomial bounds (5 sigma)."""
    rows = [list(range(1000))] * 64
    batch = DataCollatorForMaskedLM(wide_tokenizer, mlm_probability=0.15, seed=0)(rows)
    check_like_transformers(batch, DataCollatorForLanguageModeling(wide_tokenizer)(rows), wide_tokenizer, "pt")
    check_masking(batch, wide_tokenizer)
    selected = batch["labels"] != -100
    count, eligible = int(selected.sum()), 64 * 995
    assert abs(count - 0.15 * eligible) <= 5 * (eligible * 0.15 * 0.85) ** 0.5
    masked = int((batch["input_ids"][selected] == wide_tokenizer.mask_token_id).sum())
    assert abs(masked - 0.8 * count) <= 5 * (count * 0.8 * 0.2) ** 0.5


# ---------------------------------------------------------------- seeds


def _loader_batches(collator, features, seed=42):
    loader = torch.utils.data.DataLoader(
        features, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(seed), collate_fn=collator
    )
    batches = list(loader)
    return [b["input_ids"] for b in batches], [b["labels"] for b in batches]


def test_language_modeling_with_seed(tokenizer, wide_tokenizer):
    features = [{"input_ids": list(range(1000))}, {"input_ids": list(range(1000))}]
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 5\)"):
        DataCollatorForMaskedLM(tokenizer, random_replace_prob=0.0, seed=42)(features)

    first = DataCollatorForMaskedLM(wide_tokenizer, seed=42)(features)
    second = DataCollatorForMaskedLM(wide_tokenizer, seed=42)(features)
    assert first["input_ids"].shape == first["labels"].shape == (2, 1000)
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])

    features = [{"input_ids": list(range(1000))} for _ in range(10)]
    run_1 = _loader_batches(DataCollatorForMaskedLM(wide_tokenizer, seed=42), features)
    run_2 = _loader_batches(DataCollatorForMaskedLM(wide_tokenizer, seed=42), features)
    run_3 = _loader_batches(DataCollatorForMaskedLM(wide_tokenizer, seed=41), features)
    for a, b in zip(run_1, run_2):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(run_1[1], run_3[1]))


# ---------------------------------------------------------------- whole-word masking (offset mappings)


def _word_features(tokenizer, count: int, number: int = 2, as_numpy: bool = False):
    words = [f"token_{i}" for i in range(count)]
    tokenizer.add_tokens(words)
    features = [tokenizer(" ".join(words), return_offsets_mapping=True) for _ in range(number)]
    return [feature.convert_to_tensors("np") for feature in features] if as_numpy else features


@pytest.mark.filterwarnings("ignore:Random token replacement is not supported with whole word masking")
@pytest.mark.parametrize("return_tensors", RETURN_TENSORS)
def test_whole_word_mask(tokenizer, return_tensors):
    _word_features(tokenizer, 8)  # adds the words to the vocabulary
    ours = DataCollatorForMaskedLM(tokenizer, whole_word_mask=True, return_tensors=return_tensors, seed=0)
    theirs = DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, return_tensors=return_tensors)
    for as_numpy in (False, True):  # features can already be arrays
        features = _word_features(tokenizer, 8, as_numpy=as_numpy)
        batch = ours(features)
        assert tuple(batch["input_ids"].shape) == tuple(batch["labels"].shape) == (2, 10)
        assert "offset_mapping" not in batch
        check_like_transformers(batch, theirs(features), tokenizer, return_tensors)


def test_whole_word_mask_with_seed(tokenizer):
    features = _word_features(tokenizer, 998)
    assert [int(i) for i in features[0]["input_ids"][1:4]] == [5, 6, 7]  # the added words have ordinary ids
    first = DataCollatorForMaskedLM(tokenizer, whole_word_mask=True, seed=42)(features)
    second = DataCollatorForMaskedLM(tokenizer, whole_word_mask=True, seed=42)(features)
    assert first["input_ids"].shape == first["labels"].shape == (2, 1000)
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    # Each added "token_i" is a word: selected words never include [CLS]/[SEP].
    assert (first["labels"][:, [0, -1]] == -100).all()

    features = _word_features(tokenizer, 998, number=10)
    run_1 = _loader_batches(DataCollatorForMaskedLM(tokenizer, whole_word_mask=True, seed=42), features)
    run_2 = _loader_batches(DataCollatorForMaskedLM(tokenizer, whole_word_mask=True, seed=42), features)
    run_3 = _loader_batches(DataCollatorForMaskedLM(tokenizer, whole_word_mask=True, seed=41), features)
    for a, b in zip(run_1, run_2):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(run_1[1], run_3[1]))


# ---------------------------------------------------------------- replacement probabilities


def test_probability_sum_error(tokenizer):
    with pytest.raises(ValueError):
        DataCollatorForLanguageModeling(tokenizer, mask_replace_prob=0.9, random_replace_prob=0.2)
    with pytest.raises(ValueError, match="mask_replace_prob \\+ random_replace_prob must not exceed 1"):
        DataCollatorForMaskedLM(tokenizer, mask_replace_prob=0.9, random_replace_prob=0.2)


@pytest.mark.parametrize("return_tensors", RETURN_TENSORS)
def test_all_mask_replacement(tokenizer, wide_tokenizer, return_tensors):
    """mask_replace_prob=1, random_replace_prob=0: exactly the selected tokens become [MASK]."""
    features = [{"input_ids": torch.tensor([0, 1, 2, 3, 4, 5])} for _ in range(8)]
    options = dict(mlm=True, mlm_probability=0.2, mask_replace_prob=1.0, random_replace_prob=0.0)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 5\)"):  # mask_replace_prob=1: no draws needed
        DataCollatorForMaskedLM(tokenizer, return_tensors=return_tensors, **options)(features)
    features = [{"input_ids": torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])} for _ in range(64)]
    collator = DataCollatorForMaskedLM(wide_tokenizer, return_tensors=return_tensors, seed=0, **options)
    batch = as_torch(collator(features))
    selected = batch["labels"] != -100
    assert selected.any() and (batch["input_ids"][selected] == wide_tokenizer.mask_token_id).all()
    assert torch.equal(batch["input_ids"][~selected], torch.arange(10).expand(64, 10)[~selected])


# ---------------------------------------------------------------- NSP and SOP


def _pair_features(label_key: str, ids: list[int], tensors: bool) -> list[dict]:
    wrap = torch.tensor if tensors else list
    return [{"input_ids": wrap(ids), "token_type_ids": wrap([0, 1, 2, 3, 4]), label_key: i} for i in range(2)]


@pytest.mark.parametrize("return_tensors", RETURN_TENSORS)
@pytest.mark.parametrize("label_key, tensors", [("next_sentence_label", False), ("sentence_order_label", True)])
def test_nsp_and_sop(wide_tokenizer, label_key, tensors, return_tensors):
    # Refused on purpose: ids 0-4 are all special tokens, nothing can be masked.
    with pytest.raises(ValueError, match="has a token that can be masked"):
        DataCollatorForMaskedLM(wide_tokenizer, return_tensors=return_tensors)(
            _pair_features(label_key, [0, 1, 2, 3, 4], tensors)
        )
    features = _pair_features(label_key, [5, 6, 7, 8, 9], tensors)
    for multiple, length in ((None, 5), (8, 8)):
        options = dict(pad_to_multiple_of=multiple, return_tensors=return_tensors)
        batch = DataCollatorForMaskedLM(wide_tokenizer, seed=0, **options)(features)
        theirs = DataCollatorForLanguageModeling(wide_tokenizer, **options)(features)
        assert tuple(batch["input_ids"].shape) == tuple(batch["token_type_ids"].shape) == (2, length)
        assert tuple(batch["labels"].shape) == (2, length) and tuple(batch[label_key].shape) == (2,)
        check_like_transformers(batch, theirs, wide_tokenizer, return_tensors)
        assert as_torch(batch)[label_key].tolist() == [0, 1]
        assert torch.equal(as_torch(batch)["token_type_ids"], as_torch(theirs)["token_type_ids"])


# ---------------------------------------------------------------- immutability


def _assert_unchanged(collator, make_features):
    original, passed = make_features(), make_features()
    collator(passed)
    for before, after in zip(original, passed):
        assert before.keys() == after.keys()
        for key in before:
            value_before, value_after = before[key], after[key]
            if isinstance(value_before, (np.ndarray, torch.Tensor)):
                value_before, value_after = value_before.tolist(), value_after.tolist()
            assert value_before == value_after, key


@pytest.mark.parametrize("datatype", [list, torch.tensor, np.array])
def test_language_modelling_collator_immutability(wide_tokenizer, datatype):
    collators = [DataCollatorForMaskedLM(wide_tokenizer), DataCollatorForMaskedLM(wide_tokenizer, pad_to_multiple_of=8)]
    for collator in collators:
        # transformers' "pad" features, two rows of ids 0-4, are special tokens only: refused on purpose.
        with pytest.raises(ValueError, match="has a token that can be masked"):
            collator([{"input_ids": datatype(tuple(range(5)))} for _ in range(2)])
        for rows in ([range(10), range(10)], [range(5, 10), range(5, 10)], [range(5), range(10)]):
            _assert_unchanged(collator, lambda: [{"input_ids": datatype(tuple(row))} for row in rows])


@pytest.mark.parametrize("as_numpy", [False, True])
def test_whole_word_masking_collator_immutability(tokenizer, as_numpy):
    _word_features(tokenizer, 8)
    collator = DataCollatorForMaskedLM(tokenizer, whole_word_mask=True)
    _assert_unchanged(collator, lambda: _word_features(tokenizer, 8, as_numpy=as_numpy))


@pytest.mark.parametrize("label_key, tensors", [("next_sentence_label", False), ("sentence_order_label", True)])
def test_nsp_and_sop_collator_immutability(wide_tokenizer, label_key, tensors):
    for multiple in (None, 8):
        collator = DataCollatorForMaskedLM(wide_tokenizer, pad_to_multiple_of=multiple)
        _assert_unchanged(collator, lambda: _pair_features(label_key, [5, 6, 7, 8, 9], tensors))
