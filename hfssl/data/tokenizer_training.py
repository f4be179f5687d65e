"""Train the tokenizers the text recipes need, offline, with the `tokenizers` library (BERT's WordPiece trainer is
`hfssl.data.text.train_wordpiece_tokenizer`), and `load_or_train_tokenizer`, a recipe's tokenizer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import TrainingArguments


def train_byte_level_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8000, model_max_length: int = 1024):
    """Train a GPT-2-style byte-level BPE tokenizer (Radford et al., 2019) on `texts`.

    Args:
        vocab_size (`int`, defaults to 8000): the vocabulary size, including the 256 byte tokens and
            `<|endoftext|>`.
        model_max_length (`int`, defaults to 1024): GPT-2's context length.

    Returns:
        `transformers.PreTrainedTokenizerFast` with `<|endoftext|>` as BOS, EOS and UNK, and no pad token (as GPT-2).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise ValueError(f"vocab_size must exceed the 256 byte tokens plus <|endoftext|>, got {vocab_size}.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length,
                                   bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def train_unigram_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, extra_ids: int = 100, model_max_length: int = 512
):
    """Train a Unigram (SentencePiece-style, Kudo 2018) tokenizer in T5's layout on `texts`, the same in every process
    (`canonical_unigram_vocab`).

    Args:
        vocab_size (`int`, defaults to 8000): the size of the learned vocabulary, before the sentinels.
        extra_ids (`int`, defaults to 100): the number of sentinel tokens `<extra_id_i>` (T5 uses 100).
        model_max_length (`int`, defaults to 512): T5's input length.

    Returns:
        `transformers.T5Tokenizer` (a fast tokenizer): `<pad>`=0, `</s>`=1 appended to every text, `<unk>`=2, and
        `extra_ids` sentinels, so `len(tokenizer) == vocab_size + extra_ids`.
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    special_tokens = ["<pad>", "</s>", "<unk>"]
    if vocab_size <= len(special_tokens):
        raise ValueError(f"vocab_size must exceed the {len(special_tokens)} special tokens, got {vocab_size}.")
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special_tokens, unk_token="<unk>",
                                      show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    vocab = canonical_unigram_vocab(json.loads(tokenizer.to_str())["model"]["vocab"], len(special_tokens))
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]  # T5: <extra_id_0> is the last id
    return T5Tokenizer(vocab=vocab, extra_ids=extra_ids, model_max_length=model_max_length)


def canonical_unigram_vocab(vocab: list, special_count: int, decimals: int = 6) -> list[tuple[str, float]]:
    """A trained Unigram vocabulary in a form that does not depend on the trainer's hash-map order.

    - Scores are rounded to `decimals` places (the trainer's sums differ from process to process in the last ~11th
      decimal; a log-probability to 1e-6 leaves segmentation as it was).
    - The single characters the trainer adds at the end with `min_score + k * 1e-4` (every character must be in the
      vocabulary; k runs in hash order) get those scores in sorted order of the characters.
    - Pieces after the `special_count` special tokens are ordered by decreasing score, ties by the piece.

    Args:
        vocab (list of `[piece, score]`): the trainer's vocabulary, special tokens first.
        special_count (`int`): how many special tokens lead the list (kept first, in order).

    Returns:
        list of `(piece, score)`.
    """
    specials, pieces = [tuple(item) for item in vocab[:special_count]], [tuple(item) for item in vocab[special_count:]]
    if pieces:
        lowest, delta = min(score for _, score in pieces), 1e-4

        def penalty_step(score: float) -> int | None:
            steps = (score - lowest) / delta
            return round(steps) if abs(steps - round(steps)) < 1e-5 and round(steps) < len(pieces) else None

        added = sorted(piece for piece, score in pieces if len(piece) == 1 and penalty_step(score) is not None)
        steps = sorted(penalty_step(score) for piece, score in pieces if piece in set(added))
        assigned = dict(zip(added, (lowest + step * delta for step in steps)))
        pieces = [(piece, assigned.get(piece, score)) for piece, score in pieces]
    pieces = sorted(((piece, round(score, decimals)) for piece, score in pieces), key=lambda item: (-item[1], item[0]))
    return specials + pieces


def train_word_level_tokenizer(
    texts: Iterable[str], min_count: int = 5, lowercase: bool = True, max_vocab_size: int | None = None
):
    """Build a word-level tokenizer: one id per word seen at least `min_count` times (Word2Vec's vocabulary).

    Words are runs of letters, digits and `_` and single punctuation marks (the `Whitespace` pre-tokenizer); rarer
    words map to `[UNK]`, which the skip-gram collator drops as Word2Vec drops out-of-vocabulary words.

    Args:
        min_count (`int`, defaults to 5): Word2Vec's and gensim's default minimum count.
        lowercase (`bool`, defaults to `True`): lowercase before splitting.
        max_vocab_size (`int`, *optional*): keep at most this many words (the most frequent).

    Returns:
        `transformers.PreTrainedTokenizerFast` with `[PAD]`=0 and `[UNK]`=1, then words by decreasing frequency.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}.")
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    vocab_size = (max_vocab_size + 2) if max_vocab_size else 2**31 - 1
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_count,
                                        special_tokens=["[PAD]", "[UNK]"], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


TRAINED_TOKENIZER_DIR = ".tokenizer"  # in output_dir: hidden (the final model folder holds the tokenizer), not pushed


def saved_tokenizer_folder(checkpoint: str, output_dir: str) -> str | None:
    """Where the tokenizer of a run being resumed lies: the checkpoint itself (Trainer saves its `processing_class`
    there), else `<output_dir>/.tokenizer` (saved when it was trained; `tokenizer/` in older runs), else None."""
    for folder in (checkpoint, *(os.path.join(output_dir, name) for name in (TRAINED_TOKENIZER_DIR, "tokenizer"))):
        if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
            return folder
    return None


def load_or_train_tokenizer(source: str | None, train: Callable[[], Any], training_args: TrainingArguments):
    """The recipe's tokenizer.

    - Resuming (`training_args.resume_from_checkpoint` set): the tokenizer the run was trained with
      (`saved_tokenizer_folder`), never trained again; a `source` with another vocabulary is refused.
    - Else `AutoTokenizer.from_pretrained(source)` when a source is given; else the main process calls `train()`
      and saves the result to `<output_dir>/.tokenizer`, where the other processes load it from (so every process
      of a distributed run uses the very same vocabulary).
    """
    from transformers import AutoTokenizer

    tokenizer_dir = os.path.join(training_args.output_dir, TRAINED_TOKENIZER_DIR)
    checkpoint = training_args.resume_from_checkpoint
    with training_args.main_process_first(desc="preparing the tokenizer"):
        if checkpoint is not None:
            folder = saved_tokenizer_folder(checkpoint, training_args.output_dir)
            if folder is None:
                raise ValueError(
                    f"Resuming from {checkpoint}, but neither it nor {tokenizer_dir} holds the tokenizer the run was "
                    "trained with. Pass that tokenizer with --tokenizer_name."
                )
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if source is not None and AutoTokenizer.from_pretrained(source).get_vocab() != tokenizer.get_vocab():
                raise ValueError(
                    f"The tokenizer {source!r} differs from the one the resumed run was trained with ({folder}): its "
                    "token ids would mean other tokens to the trained embeddings. Drop --tokenizer_name (the run's own "
                    "tokenizer is used), or start a new run in another --output_dir."
                )
            return tokenizer
        if source is not None:
            return AutoTokenizer.from_pretrained(source)
        if training_args.process_index == 0:
            tokenizer = train()
            tokenizer.save_pretrained(tokenizer_dir)
            return tokenizer
        return AutoTokenizer.from_pretrained(tokenizer_dir)
