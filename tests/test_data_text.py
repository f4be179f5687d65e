"""The built-in corpus, user text loading, tokenizer training, packing and MLM metrics."""

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from transformers import EvalPrediction

from hfssl.data.text import load_text_dataset, python_docs_corpus, tokenize_and_pack
from hfssl.evaluation.masked_lm import masked_lm_metrics, most_frequent_token


def test_builtin_corpus_is_real_prose():
    corpus = python_docs_corpus()
    texts = corpus["text"]
    assert len(texts) > 10_000 and sum(map(len, texts)) > 1_000_000
    assert all(len(t) >= 40 and sum(c.isalpha() for c in t) >= len(t) / 2 for t in texts)
    assert any("statement" in t for t in texts[:200])


def test_load_text_dataset_sources(tmp_path):
    lines = [f"line number {i} of a small corpus" for i in range(200)]
    (tmp_path / "train.txt").write_text("\n".join(lines))
    from_file = load_text_dataset(train_file=str(tmp_path / "train.txt"), validation_split_percentage=10)
    assert set(from_file) == {"train", "validation"} and len(from_file["validation"]) == 20
    assert from_file["train"].column_names == ["text"]

    saved = Dataset.from_dict({"body": lines, "other": list(range(200))})
    DatasetDict({"train": saved}).save_to_disk(tmp_path / "saved")
    from_disk = load_text_dataset(dataset_name=str(tmp_path / "saved"), text_column="body")
    assert from_disk["train"].column_names == ["text"] and len(from_disk["train"]) + len(from_disk["validation"]) == 200

    with pytest.raises(ValueError, match="Text column 'missing' not found"):
        load_text_dataset(dataset_name=str(tmp_path / "saved"), text_column="missing")
    with pytest.raises(ValueError, match="pass only one of them"):
        load_text_dataset(dataset_name="x", train_file="y.txt")
    with pytest.raises(ValueError, match="has extension '.docx'"):
        load_text_dataset(train_file=str(tmp_path / "corpus.docx"))


def test_tokenize_and_pack_makes_full_blocks(wordpiece_tokenizer, docs_texts):
    packed = tokenize_and_pack(Dataset.from_dict({"text": docs_texts[:300]}), wordpiece_tokenizer, 64)
    assert set(packed.column_names) == {"input_ids", "attention_mask", "token_type_ids", "special_tokens_mask"}
    assert all(len(row) == 64 for row in packed["input_ids"])
    stream = [i for t in wordpiece_tokenizer(docs_texts[:300])["input_ids"] for i in t]
    assert packed["input_ids"][0] == stream[:64]


def test_tokenize_and_pack_does_not_warn_about_long_texts(wordpiece_tokenizer, docs_texts):
    """Texts longer than model_max_length are what packing is for: the tokenizer's length warning is noise."""
    import copy
    import logging

    tokenizer = copy.deepcopy(wordpiece_tokenizer)
    tokenizer.model_max_length = 16
    tokenizer.deprecation_warnings.clear()  # the warning is given once per tokenizer
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        packed = tokenize_and_pack(Dataset.from_dict({"text": docs_texts[:50]}), tokenizer, 16)
    finally:
        transformers_logger.removeHandler(handler)
    assert len(packed) > 0
    assert not [r for r in records if "sequence length is longer" in r.getMessage()], [r.getMessage() for r in records]
    tokenizer(docs_texts[0])  # the check itself: a plain call does warn
    assert tokenizer.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")


def test_masked_lm_metrics_and_baseline():
    labels = np.array([[-100, 5, 7, -100], [5, -100, -100, 9]])
    predictions = np.array([[0, 5, 1, 3], [5, 2, 2, 1]])
    metrics = masked_lm_metrics(baseline_token_id=5)(EvalPrediction(predictions=predictions, label_ids=labels))
    assert metrics == {"masked_accuracy": 0.5, "baseline_accuracy": 0.5}
    assert most_frequent_token([[0, 5, 5, 7], [5, 0, 0, 0]], special_ids=[0]) == (5, 0.75)
