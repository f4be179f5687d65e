"""DataCollatorForMaskedLM: statistics over >= 100k tokens with binomial bounds, exactness,
whole words, spans, padding compatibility with transformers, seeding and errors.

Bounds: a count X ~ Binomial(n, p) is checked with |X - np| <= 5 sqrt(np(1-p)); a 5-sigma
two-sided normal tail has probability 6e-7, so with fixed seeds these never flake and a real
bias of a few sigma would show.
"""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from hfssl import DataCollatorForMaskedLM
from hfssl.collators.mlm import word_start_table


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


@pytest.fixture(scope="module")
def batches(docs_texts, wordpiece_tokenizer):
    """Ragged real tokenized examples (lists), 2000 paragraphs truncated to 128 tokens."""
    encoded = wordpiece_tokenizer(docs_texts[:2000], truncation=True, max_length=128)
    return [{"input_ids": ids} for ids in encoded["input_ids"] if len(ids) > 8]


def collate_all(collator, examples, batch_size=256):
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        yield collator.pad(chunk)["input_ids"], collator(chunk)


def test_selection_rate_and_80_10_10_split(batches, wordpiece_tokenizer):
    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0)
    special = torch.tensor(wordpiece_tokenizer.all_special_ids)
    eligible = selected = masked = randomized = unchanged = 0
    for original, batch in collate_all(collator, batches * 2):
        is_eligible = ~torch.isin(original, special)
        is_selected = batch["labels"] != -100
        assert not (is_selected & ~is_eligible).any(), "a special or padding token was selected"
        assert torch.equal(batch["labels"][is_selected], original[is_selected])
        assert torch.equal(batch["input_ids"][~is_selected], original[~is_selected])
        eligible += int(is_eligible.sum())
        selected += int(is_selected.sum())
        out = batch["input_ids"][is_selected]
        masked += int((out == wordpiece_tokenizer.mask_token_id).sum())
        unchanged += int((out == original[is_selected]).sum())
        randomized += int(((out != wordpiece_tokenizer.mask_token_id) & (out != original[is_selected])).sum())
    assert eligible >= 100_000
    assert within_binomial(selected, eligible, 0.15)
    ordinary = len(wordpiece_tokenizer) - len(special)
    # A random draw equals the original token with probability 1 / ordinary: it then looks unchanged.
    assert within_binomial(masked, selected, 0.8)
    assert within_binomial(randomized, selected, 0.1 * (1 - 1 / ordinary))
    assert within_binomial(unchanged, selected, 0.1 + 0.1 / ordinary)


def test_random_replacements_are_ordinary_and_uniform(batches, wordpiece_tokenizer):
    collator = DataCollatorForMaskedLM(
        wordpiece_tokenizer, mlm_probability=0.5, mask_replace_prob=0.0, random_replace_prob=1.0, seed=1
    )
    special = set(wordpiece_tokenizer.all_special_ids)
    draws = []
    for original, batch in collate_all(collator, batches * 3):
        draws.append(batch["input_ids"][batch["labels"] != -100])
    draws = torch.cat(draws)
    assert len(draws) >= 100_000
    assert not any(int(i) in special for i in draws.unique())
    counts = torch.bincount(draws, minlength=len(wordpiece_tokenizer)).float()
    ordinary = [i for i in range(len(wordpiece_tokenizer)) if i not in special]
    expected = len(draws) / len(ordinary)
    chi2 = float(((counts[ordinary] - expected) ** 2 / expected).sum())
    dof = len(ordinary) - 1
    assert abs(chi2 - dof) <= 5 * math.sqrt(2 * dof), (chi2, dof)


def test_padding_never_selected_and_matches_transformers_padding(wordpiece_tokenizer, batches):
    examples = batches[:64]
    ours = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0, pad_to_multiple_of=8)(examples)
    theirs = DataCollatorForLanguageModeling(wordpiece_tokenizer, seed=0, pad_to_multiple_of=8)(examples)
    assert set(ours) == set(theirs)
    assert ours["input_ids"].shape == theirs["input_ids"].shape and ours["input_ids"].shape[1] % 8 == 0
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert not (ours["labels"][ours["attention_mask"] == 0] != -100).any()
    assert (ours["input_ids"][ours["attention_mask"] == 0] == wordpiece_tokenizer.pad_token_id).all()


def test_left_padding_and_tensor_inputs_not_mutated(wordpiece_tokenizer, batches):
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece_tokenizer.backend_tokenizer, pad_token="[PAD]", mask_token="[MASK]",
        cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]", padding_side="left",
    )
    examples = [{"input_ids": torch.tensor(e["input_ids"])} for e in batches[:16]]
    copies = [e["input_ids"].clone() for e in examples]
    batch = DataCollatorForMaskedLM(tokenizer, seed=0)(examples)
    padded = tokenizer.pad([{"input_ids": c.tolist()} for c in copies], return_tensors="pt")
    assert torch.equal(batch["attention_mask"], padded["attention_mask"])
    restored = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
    assert torch.equal(restored, padded["input_ids"])
    assert all(torch.equal(e["input_ids"], c) for e, c in zip(examples, copies))


def test_precomputed_special_tokens_mask_is_used(wordpiece_tokenizer, docs_texts):
    encoded = wordpiece_tokenizer(docs_texts[:200], truncation=True, max_length=64, return_special_tokens_mask=True)
    examples = [dict(zip(encoded, values)) for values in zip(*encoded.values())]
    for example in examples:  # forbid the first real token too: the collator must obey the given mask
        example["special_tokens_mask"] = [1, 1] + example["special_tokens_mask"][2:]
    batch = DataCollatorForMaskedLM(wordpiece_tokenizer, mlm_probability=0.5, seed=0)(examples)
    assert "special_tokens_mask" not in batch and "token_type_ids" in batch
    assert (batch["labels"][:, :2] == -100).all()


def test_exact_count_per_sequence(wordpiece_tokenizer, batches):
    for probability in (0.15, 0.3):
        collator = DataCollatorForMaskedLM(wordpiece_tokenizer, mlm_probability=probability, selection="exact", seed=2)
        for original, batch in collate_all(collator, batches):
            # BERT's num_to_predict: n counts every token of the row, [CLS] and [SEP] included (not padding)
            tokens = batch["attention_mask"].sum(1).tolist()
            expected = torch.tensor([max(1, int(round(n * probability))) for n in tokens])
            assert torch.equal((batch["labels"] != -100).sum(1), expected)


def test_exact_count_is_berts_num_to_predict(wordpiece_tokenizer):
    """create_pretraining_data.py: num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) *
    masked_lm_prob)))), len(tokens) counting [CLS] and [SEP]."""
    cls, sep = wordpiece_tokenizer.cls_token_id, wordpiece_tokenizer.sep_token_id
    row = [cls] + list(range(100, 115)) + [sep]  # 17 tokens, 15 maskable
    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, selection="exact", seed=0)
    for _ in range(20):
        assert int((collator([row, row[:9] + [sep]])["labels"] != -100).sum(1)[0]) == round(17 * 0.15) == 3
    # Python rounds the float64 product half to even: 30 * 0.15 is 4.5 -> 4 (float32 arithmetic would give 5).
    row30 = [cls] + list(range(100, 128)) + [sep]
    assert int((collator([row30])["labels"] != -100).sum()) == round(30 * 0.15) == 4
    capped = DataCollatorForMaskedLM(wordpiece_tokenizer, selection="exact", max_predictions_per_seq=2, seed=0)
    assert int((capped([row])["labels"] != -100).sum()) == 2
    short = [cls, 100, sep]  # round(3 * 0.15) = 0 -> at least 1
    assert int((collator([short])["labels"] != -100).sum()) == 1
    with pytest.raises(ValueError, match="max_predictions_per_seq=20 caps selection='exact'"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, max_predictions_per_seq=20)
    with pytest.raises(ValueError, match="max_predictions_per_seq must be at least 1"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, selection="exact", max_predictions_per_seq=0)


def test_drop_in_for_transformers_arguments(wordpiece_tokenizer, batches):
    """The HF course line works, positional arguments follow transformers' order, return_tensors='np' converts."""
    examples = batches[:8]
    keyword = DataCollatorForMaskedLM(tokenizer=wordpiece_tokenizer, mlm=True, mlm_probability=0.15, seed=0)(examples)
    positional = DataCollatorForMaskedLM(wordpiece_tokenizer, True, False, 0.15, 0.8, 0.1, None, "pt", 0)(examples)
    assert torch.equal(keyword["labels"], positional["labels"])
    import numpy as np

    as_numpy = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0, return_tensors="np")(examples)
    assert set(as_numpy) == set(keyword) and all(isinstance(value, np.ndarray) for value in as_numpy.values())
    assert all(np.array_equal(as_numpy[key], keyword[key].numpy()) for key in keyword)
    per_call = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0)(examples, return_tensors="np")
    assert np.array_equal(per_call["labels"], keyword["labels"].numpy())
    with pytest.raises(ValueError, match=r"mlm=False.*DataCollatorForLanguageModeling\(tokenizer, mlm=False\).*"
                       r"default_data_collator.*recipes/pretrain_clm.py"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, mlm=False)
    with pytest.raises(ValueError, match=r"return_tensors='tf' is not supported; use 'pt' .* or 'np'"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, return_tensors="tf")
    with pytest.raises(ValueError, match=r"return_tensors='jax' is not supported"):
        DataCollatorForMaskedLM(wordpiece_tokenizer)(examples, return_tensors="jax")


@pytest.mark.parametrize("selection", ["bernoulli", "exact"])
def test_whole_words_all_or_none(wordpiece_tokenizer, docs_texts, selection):
    encoded = wordpiece_tokenizer(docs_texts[:1500], truncation=True, max_length=128)
    examples = [{"input_ids": ids} for ids in encoded["input_ids"]]
    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, whole_word_mask=True, selection=selection, seed=3)
    words_total = words_selected = 0
    for start in range(0, len(examples), 256):
        batch = collator(examples[start : start + 256])
        selected = batch["labels"] != -100
        for row, index in enumerate(range(start, min(start + 256, len(examples)))):
            word_ids = encoded.word_ids(index)
            groups: dict[int, list[bool]] = {}
            for position, word in enumerate(word_ids):
                if word is not None:
                    groups.setdefault(word, []).append(bool(selected[row, position]))
            for flags in groups.values():
                assert all(flags) or not any(flags), "a word was partly selected"
                words_selected += flags[0]
            words_total += len(groups)
            if selection == "exact":
                tokens = len(word_ids)  # BERT's n: [CLS] and [SEP] included
                assert 1 <= int(selected[row].sum()) <= max(1, round(tokens * 0.15)) + max(
                    len(v) for v in groups.values()
                )
    if selection == "bernoulli":
        assert words_total >= 20_000
        assert within_binomial(words_selected, words_total, 0.15)


def _byte_level_bpe(texts):
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<pad>", "<mask>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", mask_token="<mask>")


def _unigram_metaspace(texts):
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=800, special_tokens=["<pad>", "<mask>", "<unk>"], unk_token="<unk>")
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", mask_token="<mask>", unk_token="<unk>")


@pytest.mark.parametrize("build", [_byte_level_bpe, _unigram_metaspace])
def test_word_boundaries_for_other_fast_tokenizers(docs_texts, build):
    """The vocabulary markers (Ġ, ▁) give the starts of whitespace-separated words: a token starts
    a word when its text begins with a space or follows one in the original string."""
    tokenizer = build(docs_texts[:2000])
    table, marks_end = word_start_table(tokenizer)
    assert not marks_end
    texts = docs_texts[:300]
    encoded = tokenizer(texts, truncation=True, max_length=96, return_offsets_mapping=True)
    agree = total = 0
    for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"]):
        for position in range(1, len(ids)):
            start, end = offsets[position]
            previous = text[offsets[position - 1][0] : offsets[position - 1][1]]
            bare_marker_before = previous.isspace()  # a lone "▁"/"Ġ" token: this one continues its word
            starts_word = text[start:end][:1].isspace() or (text[start - 1 : start].isspace() and not bare_marker_before)
            total += 1
            agree += bool(table[ids[position]]) == starts_word
    assert total > 10_000 and agree / total > 0.99, agree / total
    collator = DataCollatorForMaskedLM(tokenizer, whole_word_mask=True, seed=0)
    batch = collator([{"input_ids": ids, "word_ids": encoded.word_ids(i)} for i, ids in enumerate(encoded["input_ids"])])
    for index in range(len(encoded["input_ids"])):
        word_ids = encoded.word_ids(index)
        selected = batch["labels"][index]
        for word in set(w for w in word_ids if w is not None):
            flags = {bool(selected[p] != -100) for p, w in enumerate(word_ids) if w == word}
            assert len(flags) == 1


def test_span_lengths_follow_clipped_geometric():
    """The leftmost span of each row is never the truncated last one (budget 19 > max length 10),
    so its length follows P(l=k) = q(1-q)^(k-1), k < 10, and P(l=10) = (1-q)^9."""
    vocab = 100
    collator = DataCollatorForMaskedLM(_FakeTokenizer(vocab), span_masking=True, seed=4)
    rows = 6000
    input_ids = torch.randint(2, vocab, (rows, 128), generator=torch.Generator().manual_seed(0))
    _, labels = collator.mask_tokens(input_ids)
    selected = labels != -100
    assert (selected.sum(1) == round(128 * 0.15)).all()
    starts = selected & ~torch.nn.functional.pad(selected[:, :-1], (1, 0), value=False)
    first_start = starts.float().argmax(1)
    positions = torch.arange(128)[None, :]
    after = positions >= first_start[:, None]
    # length of the first run: from its start to the first unselected position after it
    run = torch.where(after & ~selected, positions, torch.full_like(positions, 128)).min(1).values - first_start
    q = 0.2
    pmf = [q * (1 - q) ** (k - 1) for k in range(1, 10)] + [(1 - q) ** 9]
    counts = torch.bincount(run, minlength=11)
    for k, p in enumerate(pmf, start=1):
        assert within_binomial(int(counts[k]), rows, p), (k, int(counts[k]), rows * p)
    assert int(counts[0]) == 0 and int(counts[11:].sum()) == 0


class _FakeTokenizer:
    """The minimum a collator needs, for synthetic token streams."""

    mask_token, mask_token_id, pad_token_id = "[MASK]", 1, 0
    all_special_ids = [0, 1]
    added_tokens_decoder: dict = {}
    model_max_length = 512
    padding_side = "right"
    model_input_names = ["input_ids", "attention_mask"]
    is_fast = False

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab


def test_span_masking_over_words_keeps_words_whole(wordpiece_tokenizer, batches):
    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, span_masking=True, whole_word_mask=True, seed=5)
    original = collator.pad(batches[:256])["input_ids"]
    batch = collator(batches[:256])
    selected = batch["labels"] != -100
    continuation = torch.tensor(
        [[tok.startswith("##") for tok in wordpiece_tokenizer.convert_ids_to_tokens(row)] for row in original.tolist()]
    )
    previous = torch.nn.functional.pad(selected[:, :-1], (1, 0), value=False)
    assert torch.equal(selected & continuation, previous & continuation)


def test_seed_reproducible_and_worker_streams_distinct(wordpiece_tokenizer, batches):
    examples = batches[:32]
    first = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=7)(examples)
    again = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=7)(examples)
    other = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=8)(examples)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["labels"], other["labels"])

    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=7)
    dataset = [examples] * 4  # every item is the same batch: any difference comes from the streams

    def run():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, collate_fn=collator)
        return [b["labels"] for b in loader]

    labels = run()
    assert not torch.equal(labels[0], labels[1]), "workers 0 and 1 drew the same masks"
    assert all(torch.equal(a, b) for a, b in zip(labels, run()))


def test_accepts_datasets_rows_and_batch_dicts(wordpiece_tokenizer, docs_texts):
    from datasets import Dataset

    dataset = Dataset.from_dict({"text": docs_texts[:64]}).map(
        lambda b: wordpiece_tokenizer(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"]
    )
    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0)
    from_rows = collator([dataset[i] for i in range(8)])
    from_columns = DataCollatorForMaskedLM(wordpiece_tokenizer, seed=0)(dataset[:8])
    assert torch.equal(from_rows["labels"], from_columns["labels"])
    transformed = dataset.with_format("torch")
    assert collator([transformed[i] for i in range(8)])["input_ids"].dtype == torch.long
    lists_only = collator([row["input_ids"] for row in dataset.select(range(4))])
    assert set(lists_only) == {"input_ids", "attention_mask", "labels"}


def test_clear_errors(wordpiece_tokenizer):
    no_mask = PreTrainedTokenizerFast(tokenizer_object=wordpiece_tokenizer.backend_tokenizer, pad_token="[PAD]")
    with pytest.raises(ValueError, match="no mask token"):
        DataCollatorForMaskedLM(no_mask)
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, mlm_probability=0.0)
    with pytest.raises(ValueError, match="must not exceed 1"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, mask_replace_prob=0.9, random_replace_prob=0.2)
    with pytest.raises(ValueError, match="selection must be one of"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, selection="topk")
    with pytest.raises(ValueError, match="mlm_probability <= 0.5"):
        DataCollatorForMaskedLM(wordpiece_tokenizer, span_masking=True, mlm_probability=0.6)
    collator = DataCollatorForMaskedLM(wordpiece_tokenizer, max_length=16)
    with pytest.raises(ValueError, match="Example 1 has empty input_ids"):
        collator([{"input_ids": [2, 10, 3]}, {"input_ids": []}])
    with pytest.raises(ValueError, match="Example 0 has 20 tokens, more than max_length=16"):
        collator([{"input_ids": [10] * 20}])
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 2000\)"):
        collator([{"input_ids": [2, 5000, 3]}])
    with pytest.raises(ValueError, match="non-empty list of examples"):
        collator([])
    no_pad = PreTrainedTokenizerFast(tokenizer_object=wordpiece_tokenizer.backend_tokenizer, mask_token="[MASK]")
    with pytest.raises(ValueError, match="no pad token"):
        DataCollatorForMaskedLM(no_pad)([{"input_ids": [5, 6, 7]}, {"input_ids": [5]}])
