"""Shared fixtures: tokenizers trained on the fly on the built-in corpus (no Hub access)."""

import pytest

from hfssl.data.text import python_docs_corpus, train_wordpiece_tokenizer


@pytest.fixture(scope="session")
def docs_texts() -> list[str]:
    """Paragraphs of CPython's bundled documentation (pydoc topics only: fast to build)."""
    return python_docs_corpus(include_docstrings=False)["text"]


@pytest.fixture(scope="session")
def wordpiece_tokenizer(docs_texts):
    """An uncased BERT WordPiece tokenizer with a 2,000-token vocabulary."""
    return train_wordpiece_tokenizer(docs_texts, vocab_size=2000)
