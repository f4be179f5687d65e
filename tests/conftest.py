"""Shared fixtures, built offline (no Hub access): the tiny ViT and projection head most model tests train, the
built-in digits at 16 px (the 32 images they train on, the train and test splits), tokenizers trained on the fly on
the built-in corpus. Test modules import the constants with `from conftest import TINY_VIT, ...`; so can the torchrun
workers, whose script directory (this one) is on sys.path."""

import contextlib

import pytest
import torch
from transformers import TrainerCallback, ViTConfig

from hfssl.data.text import python_docs_corpus, train_wordpiece_tokenizer

# On a GPU the suite compares against float32 references computed the same way: no TF32 (cuDNN convolutions use it
# by default), whose 10-bit mantissa is outside the tolerances.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def tiny_vit_config(**overrides) -> ViTConfig:
    """A one-layer ViT of width 32 on 16x16 images in 8x8 patches (4 patches): `overrides` change any field."""
    values = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16,
                  patch_size=8)  # fmt: skip
    return ViTConfig(**{**values, **overrides})


TINY_VIT = tiny_vit_config().to_dict()  # the `backbone_model_config` of the tiny method models
TINY_HEAD = {"projection_hidden_dim": 16, "projection_dim": 8}  # their projection head
MEAN, STD = (0.5,) * 3, (0.25,) * 3  # the normalisation the tests feed the tiny models


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
def digits_train():
    """The built-in digits' train split at 16 px: 1,437 images, a `datasets.Dataset` with "image" and "label".
    Shared by every test: select from it, never modify it in place."""
    from hfssl.data.images import load_digits_dataset

    return load_digits_dataset(image_size=16)


@pytest.fixture(scope="session")
def digits_test():
    """The built-in digits' test split at 16 px: 359 images (select from it, never modify it in place)."""
    from hfssl.data.images import load_digits_dataset

    return load_digits_dataset(image_size=16, split="test")


@pytest.fixture(scope="session")
def digits(digits_train):
    """Its first 32 images: four batches of 8 for the tiny models."""
    return digits_train.select(range(32))


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
