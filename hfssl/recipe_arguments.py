"""What every recipe does first: parse its argument dataclasses from the command line or from one
YAML/JSON file (then seed, and find the checkpoint to resume from), and get a tokenizer (loaded, reloaded from the
run being resumed, or trained on the training text once, by the main process)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed

from hfssl.trainers.checkpoints import resolve_resume_from_checkpoint

logger = logging.getLogger(__name__)


def parse_recipe_arguments(dataclass_types: tuple[type, ...], args: list[str] | None = None) -> tuple[Any, ...]:
    """Parse `dataclass_types` with `HfArgumentParser` from `args` (default `sys.argv[1:]`): either a single
    `.yaml`/`.yml`/`.json` file, or command-line flags. Also sets up INFO logging and, for the `TrainingArguments`:

    - seeds Python, NumPy and torch with `seed` before anything random is built (model initialisation);
    - resolves `resume_from_checkpoint`: a path is checked to be a complete checkpoint, "true" means the last
      complete checkpoint of `output_dir`, and when it is not given a complete checkpoint found in `output_dir`
      is resumed from (a rerun of the same command continues the run, as transformers' example scripts do).

    Returns:
        One instance per dataclass type, in order.
    """
    args = sys.argv[1:] if args is None else args
    parser = HfArgumentParser(dataclass_types)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if len(args) == 1 and args[0].endswith((".yaml", ".yml")):
        parsed = parser.parse_yaml_file(args[0])
    elif len(args) == 1 and args[0].endswith(".json"):
        parsed = parser.parse_json_file(args[0])
    else:
        parsed = parser.parse_args_into_dataclasses(args=args)
    for arguments in parsed:
        if isinstance(arguments, TrainingArguments):
            set_seed(arguments.seed)
            arguments.resume_from_checkpoint = resolve_resume_from_checkpoint(
                arguments.resume_from_checkpoint, arguments.output_dir, auto=True
            )
            final_model = os.path.join(arguments.output_dir, "config.json")
            if arguments.resume_from_checkpoint is None and os.path.isfile(final_model):
                logger.warning("%s already holds a trained model and no checkpoint to resume from: this run starts "
                               "afresh and overwrites it (use another --output_dir to keep it).", arguments.output_dir)
    return tuple(parsed)


def saved_tokenizer_folder(checkpoint: str, output_dir: str) -> str | None:
    """Where the tokenizer of a run being resumed lies: the checkpoint itself (Trainer saves its
    `processing_class` there), else `<output_dir>/tokenizer` (saved when it was trained), else None."""
    for folder in (checkpoint, os.path.join(output_dir, "tokenizer")):
        if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
            return folder
    return None


def load_or_train_tokenizer(source: str | None, train: Callable[[], Any], training_args: TrainingArguments):
    """The recipe's tokenizer.

    - Resuming (`training_args.resume_from_checkpoint` set): the tokenizer the run was trained with, read from the
      checkpoint (or `<output_dir>/tokenizer`), never trained again; a `source` whose vocabulary differs from it is
      refused (token ids would change meaning under the trained embeddings).
    - Else `AutoTokenizer.from_pretrained(source)` when a source is given; else the main process calls `train()`
      and saves the result to `<output_dir>/tokenizer`, and the other processes load it from there (so every
      process of a distributed run uses the very same vocabulary).
    """
    tokenizer_dir = os.path.join(training_args.output_dir, "tokenizer")
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
