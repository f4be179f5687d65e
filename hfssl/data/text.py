"""Text corpora for the recipes (the built-in offline corpus, and user data from the Hub or disk), the WordPiece
tokenizer trainer, and the tokenize-and-pack step."""

from __future__ import annotations

import ast
import functools
import os
import re
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

_SKIPPED_STDLIB_PARTS = {"site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}
_TEXT_FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _paragraphs(text: str, min_chars: int) -> list[str]:
    """Split text on blank lines, join wrapped lines, keep prose paragraphs of at least `min_chars`
    (at least half of their characters letters, which drops tables, rules and code dumps)."""
    parts = (" ".join(block.split()) for block in re.split(r"\n\s*\n", text))
    return [p for p in parts if len(p) >= min_chars and sum(c.isalpha() for c in p) >= len(p) / 2]


@functools.lru_cache(maxsize=4)
def _stdlib_docstrings(min_chars: int) -> tuple[str, ...]:
    """Docstring paragraphs of every stdlib source file (parsed once per process: the stdlib does not change under
    it)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if _SKIPPED_STDLIB_PARTS.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    texts.extend(_paragraphs(docstring, min_chars))
    return tuple(texts)


def python_docs_corpus(min_chars: int = 40, include_docstrings: bool = True) -> Dataset:
    """The built-in offline corpus: real English prose that every CPython install carries, the language reference and
    library topics of `pydoc_data.topics` (what `help("FOR")` prints) and the stdlib's docstrings (read with `ast`, so
    no module is imported). About 2 MB of text, enough for a tiny BERT or GPT to learn visibly in minutes.

    Args:
        min_chars (`int`, defaults to 40): paragraphs shorter than this are dropped.
        include_docstrings (`bool`, defaults to `True`): add the stdlib docstrings to the
            `pydoc_data.topics` text (about 0.45 MB alone, 2.2 MB with them).

    Returns:
        `datasets.Dataset` with one column `text`, one paragraph per row, in a fixed order.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # some distributions strip pydoc_data
        raise RuntimeError(
            "This Python has no `pydoc_data` package, so the built-in corpus is unavailable. "
            "Pass --dataset_name or --train_file to train on your own text."
        ) from error
    texts = list(chain.from_iterable(_paragraphs(topics[key], min_chars) for key in sorted(topics)))
    if include_docstrings:
        texts.extend(_stdlib_docstrings(min_chars))
    return Dataset.from_dict({"text": texts})


def load_text_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    text_column: str = "text",
    validation_split_percentage: float = 5.0,
    seed: int = 42,
) -> DatasetDict:
    """Load text for pretraining as a `DatasetDict` with `train` and `validation` splits.

    Exactly one source is used: `dataset_name` (a Hub id, a local dataset script/folder for
    `load_dataset`, or a folder written by `Dataset.save_to_disk`), `train_file` (.txt, .json,
    .jsonl, .csv or .parquet), or, when both are `None`, the built-in `python_docs_corpus()`.
    When the source has no validation split, `validation_split_percentage` of the training rows
    are held out (seeded). The text column is renamed to `text`.
    """
    if dataset_name is not None and train_file is not None:
        raise ValueError(
            f"Got both dataset_name={dataset_name!r} and train_file={train_file!r}; pass only one of them."
        )
    if not 0 < validation_split_percentage < 100:
        raise ValueError(f"validation_split_percentage must be in (0, 100), got {validation_split_percentage}.")
    if dataset_name is not None:
        saved = [Path(dataset_name, name) for name in ("dataset_info.json", "dataset_dict.json")]
        if os.path.isdir(dataset_name) and any(path.exists() for path in saved):
            raw = load_from_disk(dataset_name)
        else:
            raw = load_dataset(dataset_name, dataset_config_name)
    elif train_file is not None:
        suffix = Path(train_file).suffix.lower()
        if suffix not in _TEXT_FILE_BUILDERS:
            builders = sorted(_TEXT_FILE_BUILDERS)
            raise ValueError(f"train_file {train_file!r} has extension {suffix!r}; use one of {builders}.")
        data_files = {"train": train_file}
        if validation_file is not None:
            data_files["validation"] = validation_file
        raw = load_dataset(_TEXT_FILE_BUILDERS[suffix], data_files=data_files)
    else:
        raw = DatasetDict({"train": python_docs_corpus()})
    if isinstance(raw, Dataset):
        raw = DatasetDict({"train": raw})
    if "train" not in raw:
        raise ValueError(f"The dataset has splits {list(raw)}; a 'train' split is required.")
    if "validation" not in raw:
        split = raw["train"].train_test_split(test_size=validation_split_percentage / 100, seed=seed)
        raw = DatasetDict({"train": split["train"], "validation": split["test"]})
    columns = raw["train"].column_names
    if text_column not in columns:
        raise ValueError(f"Text column {text_column!r} not found; the dataset has columns {columns}. Set --text_column.")
    if text_column != "text":
        raw = raw.rename_column(text_column, "text")
    return DatasetDict({name: raw[name].select_columns(["text"]) for name in ("train", "validation")})


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 8000, model_max_length: int = 512):
    """Train a BERT-style (uncased WordPiece) fast tokenizer on `texts` with the `tokenizers` library.

    Deterministic: the same texts give the same vocabulary and ids in every process. (`tokenizers`' trainer numbers
    the `##c` continuation characters in the order of a hash map that is seeded anew in each process, and ties
    between merges are broken by those numbers; here the continuation characters are numbered in sorted order
    before training.)

    Returns:
        `transformers.BertTokenizerFast` with [PAD] [UNK] [CLS] [SEP] [MASK], ready for
        `save_pretrained` and `AutoTokenizer.from_pretrained`.
    """
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    texts = texts if isinstance(texts, list) else list(texts)
    special_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    continuations = set()  # every character that follows another one inside a word
    for text in texts:
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text)):
            continuations.update(word[1:])
    numbered = [f"##{character}" for character in sorted(continuations)]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special_tokens + numbered,
                                        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # the continuation characters were passed as special tokens only to fix their ids: make them plain tokens again
    state = json.loads(tokenizer.to_str())
    state["added_tokens"] = [token for token in state["added_tokens"] if token["content"] in special_tokens]
    tokenizer = Tokenizer.from_str(json.dumps(state))
    special = [("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=special
    )
    return BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, pad_token="[PAD]",
                             unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tokenize_and_pack(
    dataset: DatasetDict | Dataset,
    tokenizer,
    max_seq_length: int,
    return_special_tokens_mask: bool = True,
    num_proc: int | None = None,
) -> DatasetDict | Dataset:
    """Tokenize the `text` column and pack the token stream into blocks of exactly `max_seq_length`.

    As in transformers' `run_mlm.py`/`run_clm.py`: every text is tokenized with its special tokens,
    the streams are concatenated and cut into full blocks (the remainder of each map batch is
    dropped). Columns: `input_ids`, `attention_mask` and, if asked, `special_tokens_mask`. Texts longer than the
    tokenizer's `model_max_length` are expected (they are cut into blocks), so the tokenizer's "Token indices sequence
    length is longer than the specified maximum" warning is turned off (`verbose=False`).
    """
    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be at least 2, got {max_seq_length}.")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], return_special_tokens_mask=return_special_tokens_mask,
                         return_attention_mask=True, verbose=False)

    def pack(batch: dict[str, list]) -> dict[str, list]:
        concatenated = {key: list(chain.from_iterable(batch[key])) for key in batch}
        total = (len(concatenated["input_ids"]) // max_seq_length) * max_seq_length
        return {
            key: [values[i : i + max_seq_length] for i in range(0, total, max_seq_length)]
            for key, values in concatenated.items()
        }

    tokenized = dataset.map(tokenize, batched=True, num_proc=num_proc, remove_columns=["text"], desc="Tokenizing")
    return tokenized.map(pack, batched=True, batch_size=1000, num_proc=num_proc, desc="Packing")


@dataclass
class TextDataArguments:
    """The data options every text recipe shares, as an `HfArgumentParser` dataclass; recipes subclass it to add
    their own fields or change a default (e.g. `max_seq_length`)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or local path; default: built-in."})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset's configuration name (datasets.load_dataset's second argument)."}
    )
    train_file: str | None = field(default=None, metadata={"help": ".txt/.json/.jsonl/.csv/.parquet file."})
    validation_file: str | None = field(
        default=None, metadata={"help": "A text file of held-out lines (default: a split of the training text)."}
    )
    text_column: str = field(default="text", metadata={"help": "The column holding the text."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Percent of the training text held out when there is no validation split."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example (block size when packing)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N texts."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenizing (datasets.map num_proc)."}
    )

    def load(self, seed: int = 42) -> DatasetDict:
        """`load_text_dataset` with these options, keeping only the first `max_train_samples` training texts."""
        raw = load_text_dataset(self.dataset_name, self.dataset_config_name, self.train_file, self.validation_file,
                                self.text_column, self.validation_split_percentage, seed=seed)
        if self.max_train_samples is not None:
            raw["train"] = raw["train"].select(range(min(self.max_train_samples, len(raw["train"]))))
        return raw
