"""What every recipe does first: parse its argument dataclasses from the command line or from one
YAML/JSON file, and get a tokenizer (loaded, or trained on the training text once, by the main process)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments


def parse_recipe_arguments(dataclass_types: tuple[type, ...], args: list[str] | None = None) -> tuple[Any, ...]:
    """Parse `dataclass_types` with `HfArgumentParser` from `args` (default `sys.argv[1:]`): either a single
    `.yaml`/`.yml`/`.json` file, or command-line flags. Also sets up INFO logging.

    Returns:
        One instance per dataclass type, in order.
    """
    args = sys.argv[1:] if args is None else args
    parser = HfArgumentParser(dataclass_types)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if len(args) == 1 and args[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(args[0])
    if len(args) == 1 and args[0].endswith(".json"):
        return parser.parse_json_file(args[0])
    return parser.parse_args_into_dataclasses(args=args)


def load_or_train_tokenizer(source: str | None, train: Callable[[], Any], training_args: TrainingArguments):
    """`AutoTokenizer.from_pretrained(source)` when a source is given; else the main process calls `train()`
    and saves the result to `<output_dir>/tokenizer`, and the other processes load it from there (so every
    process of a distributed run uses the very same vocabulary)."""
    tokenizer_dir = os.path.join(training_args.output_dir, "tokenizer")
    with training_args.main_process_first(desc="preparing the tokenizer"):
        if source is not None:
            return AutoTokenizer.from_pretrained(source)
        if training_args.process_index == 0:
            tokenizer = train()
            tokenizer.save_pretrained(tokenizer_dir)
            return tokenizer
        return AutoTokenizer.from_pretrained(tokenizer_dir)
