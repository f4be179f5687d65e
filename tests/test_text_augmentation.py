"""Tests of the EDA text ops and the back-translation hook."""

import math
import pickle

import pytest
import torch

from hfssl.augmentations.text import (
    BackTranslation,
    EasyDataAugmentation,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)

WORDS = "the quick brown fox jumps over the lazy dog".split()
SYNONYMS = {"quick": ["fast", "rapid"], "lazy": ["idle"], "dog": ["hound", "canine"]}


def test_random_deletion_rate_and_never_empty():
    """Over n word draws the deleted count is Binomial(n, p): 5 sigma = 5 sqrt(n p (1 - p))."""
    generator = torch.Generator().manual_seed(0)
    words = [f"w{i}" for i in range(100)]
    kept = sum(len(random_deletion(words, 0.1, generator)) for _ in range(200))
    n, p = 100 * 200, 0.1
    assert abs((n - kept) - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    assert len(random_deletion(words, 1.0, generator)) == 1
    out = random_deletion(WORDS, 0.3, generator)
    assert all(word in WORDS for word in out) and WORDS[0] == "the"  # input untouched
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        random_deletion(WORDS, 1.5)


def test_random_swap_is_a_permutation():
    generator = torch.Generator().manual_seed(1)
    out = random_swap(WORDS, 3, generator)
    assert sorted(out) == sorted(WORDS) and len(out) == len(WORDS)
    assert random_swap(["one"], 5, generator) == ["one"]


def test_synonym_replacement_uses_the_table():
    generator = torch.Generator().manual_seed(2)
    out = synonym_replacement(WORDS, 3, SYNONYMS, generator)
    assert len(out) == len(WORDS)
    changed = [(a, b) for a, b in zip(WORDS, out) if a != b]
    assert len(changed) == 3 and all(b in SYNONYMS[a] for a, b in changed)
    once = synonym_replacement(WORDS, 1, SYNONYMS, generator)
    assert sum(a != b for a, b in zip(WORDS, once)) == 1
    assert synonym_replacement(WORDS, 3, SYNONYMS, generator, stopwords={"quick", "lazy", "dog"}) == WORDS


def test_random_insertion_inserts_synonyms():
    generator = torch.Generator().manual_seed(3)
    out = random_insertion(WORDS, 2, SYNONYMS, generator)
    assert len(out) == len(WORDS) + 2
    inserted = list(out)
    for word in WORDS:
        inserted.remove(word)
    assert all(any(word in s for s in SYNONYMS.values()) for word in inserted)
    assert random_insertion(WORDS, 2, {}, generator) == WORDS


def test_eda_draws_every_op_uniformly_and_is_seeded():
    """Each call draws one of the 4 ops uniformly; over n calls each op count is Binomial(n, 1/4)."""
    eda = EasyDataAugmentation(SYNONYMS, seed=0)
    text = " ".join(WORDS)
    outputs = eda([text] * 2000)
    lengths = [len(out.split()) for out in outputs]
    insertions = sum(length == len(WORDS) + 1 for length in lengths)  # RI adds n = max(1, int(0.1 * 9)) = 1 word
    n, p = 2000, 0.25
    assert abs(insertions - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    assert EasyDataAugmentation(SYNONYMS, seed=0)([text] * 5) == outputs[:5]
    assert isinstance(eda(text), str)
    restored = pickle.loads(pickle.dumps(EasyDataAugmentation(SYNONYMS, seed=0)))
    assert restored([text] * 5) == outputs[:5]


def test_eda_without_synonyms_keeps_swap_and_deletion():
    eda = EasyDataAugmentation(seed=1)
    assert eda.operations == ("random_swap", "random_deletion")
    with pytest.raises(ValueError, match="need a synonym table"):
        EasyDataAugmentation(operations=("synonym_replacement",))
    with pytest.raises(ValueError, match="non-empty subset"):
        EasyDataAugmentation(SYNONYMS, operations=("shuffle",))


def fake_pipeline(suffix: str):
    """Mimics a transformers translation pipeline: a list of texts in, [{'translation_text': ...}] out."""
    def translate(texts, **kwargs):
        return [{"translation_text": f"{text} {suffix}"} for text in texts]
    return translate


def test_back_translation_round_trip_and_batching():
    calls = []

    def forward(texts, **kwargs):
        calls.append((len(texts), kwargs))
        return [[{"translation_text": text.upper()}] for text in texts]  # the nested form of some pipelines

    back = BackTranslation(forward, fake_pipeline("(back)"), batch_size=2, generate_kwargs={"do_sample": True})
    assert back(["a b", "c", "d e f"]) == ["A B (back)", "C (back)", "D E F (back)"]
    assert [size for size, _ in calls] == [2, 1] and calls[0][1] == {"do_sample": True}
    assert back("x") == "X (back)"
    with pytest.raises(TypeError, match="must be callables"):
        BackTranslation("en-de", fake_pipeline(""))
    with pytest.raises(TypeError, match="transformers pipeline output"):
        BackTranslation(lambda texts: [{"label": 1}] * len(texts), fake_pipeline(""))(["a"])
    with pytest.raises(ValueError, match="must contain"):
        BackTranslation(fake_pipeline(""), fake_pipeline(""), forward_prompt="Translate:")
    prompted = BackTranslation(lambda texts: texts, lambda texts: [t.upper() for t in texts],
                               forward_prompt="to de: {text}", backward_prompt="to en: {text}")
    assert prompted("hi") == "TO EN: TO DE: HI"


def test_back_translation_with_real_transformers_models(docs_texts):
    """Tiny randomly initialised models: a T5 through Seq2SeqTranslator and a GPT-2 text-generation pipeline."""
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration, pipeline

    from hfssl.augmentations.text import Seq2SeqTranslator
    from hfssl.data.tokenizer_training import train_byte_level_bpe_tokenizer, train_unigram_tokenizer

    torch.manual_seed(0)
    t5_tokenizer = train_unigram_tokenizer(docs_texts[:200], vocab_size=300, extra_ids=0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(t5_tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                             num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    translator = Seq2SeqTranslator(t5, t5_tokenizer, prefix="translate English to German: ")
    out = BackTranslation(translator, translator, generate_kwargs={"max_new_tokens": 5})(["The for statement.", "A list."])
    assert len(out) == 2 and all(isinstance(text, str) for text in out)

    gpt_tokenizer = train_byte_level_bpe_tokenizer(docs_texts[:200], vocab_size=300)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt_tokenizer), n_embd=16, n_layer=1, n_head=2))
    generator = pipeline("text-generation", model=gpt, tokenizer=gpt_tokenizer)
    back = BackTranslation(generator, generator, forward_prompt="German: {text} =", backward_prompt="English: {text} =",
                           generate_kwargs={"max_new_tokens": 4, "return_full_text": False, "do_sample": False})
    assert isinstance(back("The for statement iterates."), str)
