"""Shared fixtures: tokenizers trained on the fly on the built-in corpus (no Hub access)."""

import contextlib

import pytest
import torch
from transformers import TrainerCallback

from hfssl.data.text import python_docs_corpus, train_wordpiece_tokenizer

# On a GPU the suite compares against float32 references computed the same way: no TF32 (cuDNN convolutions use it
# by default), whose 10-bit mantissa is outside the tolerances.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


@contextlib.contextmanager
def torch_threads(count: int):
    """Run a block on `count` intra-op threads: one-process references for the torchrun tests use the workers'
    OMP_NUM_THREADS=1, so float32 sums add up in the same order however many cores the machine has."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def docs_texts() -> list[str]:
    """Paragraphs of CPython's bundled documentation (pydoc topics only: fast to build)."""
    return python_docs_corpus(include_docstrings=False)["text"]


@pytest.fixture(scope="session")
def wordpiece_tokenizer(docs_texts):
    """An uncased BERT WordPiece tokenizer with a 2,000-token vocabulary."""
    return train_wordpiece_tokenizer(docs_texts, vocab_size=2000)


class InterruptAt(TrainerCallback):
    """Stop training after `step` optimizer steps (after the checkpoint of that step is written): the first half of
    an interrupted-and-resumed run. Tests import it with `from conftest import InterruptAt`."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
