"""What every recipe does first: parse its argument dataclasses from a YAML/JSON file, command-line flags, or both
(then seed, and find the checkpoint to resume from), and get a tokenizer (loaded, reloaded from the run being resumed,
or trained on the training text once, by the main process)."""

from __future__ import annotations

import dataclasses
import json
import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import yaml
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed

from hfssl.trainers.checkpoints import resolve_resume_from_checkpoint

logger = logging.getLogger(__name__)


RECIPE_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def read_recipe_file(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split `args` into the values of the `.yaml`/`.yml`/`.json` recipe file it starts with ({} without one) and the
    flags after it."""
    if not args or not args[0].endswith(RECIPE_FILE_SUFFIXES):
        return {}, list(args)
    with open(args[0]) as handle:
        values = json.load(handle) if args[0].endswith(".json") else yaml.safe_load(handle)
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"{args[0]} holds a {type(values).__name__}; a recipe file maps argument names to values.")
    return values or {}, list(args[1:])


def parse_recipe_arguments(dataclass_types: tuple[type, ...], args: list[str] | None = None) -> tuple[Any, ...]:
    """Parse `dataclass_types` with `HfArgumentParser` from `args` (default `sys.argv[1:]`): command-line flags,
    optionally after a `.yaml`/`.yml`/`.json` file whose values replace the dataclasses' defaults (so flags override
    the file: `recipe.py config.yaml --max_steps 5`). A file key that is no argument is refused. Also sets up INFO
    logging and, for the `TrainingArguments`:

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
    values, flags = read_recipe_file(args)
    known = {item.name for dtype in dataclass_types for item in dataclasses.fields(dtype) if item.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{args[0]} sets {', '.join(unknown)}, which this recipe does not take; remove or rename them (`--help` "
            "lists its arguments)."
        )
    parser.set_defaults(**values)  # string values are converted by each argument's type, like flags
    parsed = parser.parse_args_into_dataclasses(args=flags)
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


def requested_method(args: list[str], default: str) -> str:
    """The `--method` of a command line, else of the recipe file it starts with, else `default`: read before the full
    parse, whose arguments depend on the method."""
    values, flags = read_recipe_file(args)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--method")
    return parser.parse_known_args(flags)[0].method or values.get("method", default)
