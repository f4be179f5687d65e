"""The command line: the `hfssl` command that runs a recipe, and what the recipes share: argument dataclasses
parsed from a YAML/JSON file, flags, or both (then seeded, and the checkpoint to resume from found), a short
`--help`, the image backbone options and the image recipes' end (train, kNN, export with a card, push).

    hfssl pretrain_ssl --method byol                        # after `pip install hfssl`: the recipes ship with it
    hfssl pretrain_ssl --config simclr.yaml --max_steps 5   # a shipped config by name (recipes/configs/)
    python recipes/pretrain_mlm.py recipes/configs/mlm_tiny.yaml --max_steps 10          # file, then overrides
    python recipes/pretrain_mlm.py --config recipes/configs/mlm_tiny.yaml --max_steps 10 # the same, TRL's spelling
    python recipes/pretrain_ssl.py --method dino --help       # recipe and method flags, the common Trainer flags
    python recipes/pretrain_ssl.py --method dino --help_all   # every TrainingArguments flag too
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import json
import logging
import os
import runpy
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments, set_seed

from hfssl.data.images import ImageDataArguments, decoded_images
from hfssl.evaluation.features import knn_evaluate
from hfssl.export import native_export_problem, resolve_backbone, save_backbone
from hfssl.trainers.checkpoints import resolve_resume_from_checkpoint

logger = logging.getLogger(__name__)

RECIPE_FILE_SUFFIXES = (".yaml", ".yml", ".json")
# The TrainingArguments flags the short `--help` lists (besides those a recipe or hfssl declares itself).
COMMON_TRAINING_FLAGS = (
    "output_dir", "max_steps", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "optim",
    "max_grad_norm", "logging_steps", "save_strategy", "save_steps", "save_total_limit", "eval_strategy",
    "eval_steps", "seed", "bf16", "fp16", "gradient_checkpointing", "dataloader_num_workers", "report_to",
    "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_token",
)  # fmt: skip


def read_recipe_file(args: list[str]) -> tuple[dict[str, Any], list[str], str | None]:
    """Split `args` into the values of its recipe file ({} without one), the other flags and the file's path (None).
    The file is a `.yaml`/`.yml`/`.json` path given first, or anywhere as `--config FILE` / `--config=FILE`."""
    args, path = list(args), None
    for index, arg in enumerate(args):
        if arg == "--config" or arg.startswith("--config="):
            path = arg.split("=", 1)[1] if "=" in arg else (args[index + 1] if index + 1 < len(args) else None)
            if path is None:
                raise ValueError("--config needs a file: --config recipes/configs/NAME.yaml.")
            del args[index : index + (1 if "=" in arg else 2)]
            break
    if path is None and args and args[0].endswith(RECIPE_FILE_SUFFIXES):
        path = args.pop(0)
    if path is None:
        return {}, args, None
    path = _find_recipe_file(path)
    with open(path, encoding="utf-8") as handle:
        values = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"{path} holds a {type(values).__name__}; a recipe file maps argument names to values.")
    return values or {}, args, path


def _shipped(folder: str = "") -> Any:
    """The folder of the installed recipes (`hfssl.recipes`), or a file or folder in it."""
    root = importlib.resources.files("hfssl.recipes")
    return root / folder if folder else root


def _find_recipe_file(path: str) -> str:
    """`path` if it is a file, else the shipped config of that file name (`hfssl pretrain_ssl --config simclr.yaml`
    works after a plain install, where there is no recipes/configs/ folder)."""
    if os.path.isfile(path):
        return path
    shipped = _shipped("configs") / os.path.basename(path)
    if shipped.is_file():
        return str(shipped)
    names = sorted(item.name for item in _shipped("configs").iterdir() if item.name.endswith(RECIPE_FILE_SUFFIXES))
    raise FileNotFoundError(f"Recipe file {path!r} not found; give a path to a .yaml or .json file, or one of the "
                            f"shipped configs: {', '.join(names)}.")


def recipe_names() -> list[str]:
    """The recipes installed with hfssl (`hfssl.recipes`), by module name."""
    return sorted(item.name[:-3] for item in _shipped().iterdir() if item.name.endswith(".py") and item.name[0] != "_")


def main(argv: list[str] | None = None) -> None:
    """The `hfssl` command: `hfssl RECIPE [ARGS...]` runs recipes/RECIPE.py with ARGS as `python recipes/RECIPE.py
    ARGS` would (`accelerate launch -m hfssl.recipes.RECIPE ARGS` for several processes); `hfssl` alone lists them."""
    argv = sys.argv[1:] if argv is None else argv
    names = recipe_names()
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: hfssl RECIPE [ARGS...]   (hfssl RECIPE --help lists a recipe's arguments)\n\nrecipes:\n  "
              + "\n  ".join(names) + "\n\nshipped configs (--config NAME.yaml):\n  "
              + "\n  ".join(sorted(item.name for item in _shipped("configs").iterdir() if item.name.endswith(".yaml"))))
        return
    name = argv[0].removesuffix(".py").replace("-", "_")
    if name not in names:
        raise SystemExit(f"hfssl: no recipe {argv[0]!r}; choose one of {', '.join(names)}.")
    sys.argv = [name, *argv[1:]]  # runpy puts the recipe's path first
    runpy.run_module(f"hfssl.recipes.{name}", run_name="__main__", alter_sys=True)


def build_parser(dataclass_types: tuple[type, ...], full_help: bool = True) -> HfArgumentParser:
    """`HfArgumentParser(dataclass_types)` whose every flag has help (so its default shows): the first help text a
    class in the dataclasses' MRO gives the field (a recipe re-declaring a TrainingArguments field to change its
    default keeps transformers' help), else the field's name in words. With `full_help=False` the TrainingArguments
    flags that neither the recipe nor hfssl declares and that are not in `COMMON_TRAINING_FLAGS` are left out of
    `--help` (they still parse)."""
    parser = HfArgumentParser(dataclass_types)
    classes = [klass for dtype in dataclass_types for klass in dtype.__mro__]
    own = {name for klass in classes if not klass.__module__.startswith("transformers.")
           for name in vars(klass).get("__annotations__", {})}  # fmt: skip
    for action in parser._actions:
        if action.dest == "help":
            continue
        if not action.help:
            fields = (vars(klass).get("__dataclass_fields__", {}).get(action.dest) for klass in classes)
            texts = [item.metadata["help"] for item in fields if item is not None and item.metadata.get("help")]
            action.help = texts[0] if texts else action.dest.replace("_", " ").capitalize() + "."
        if not full_help and action.dest not in own and action.dest not in COMMON_TRAINING_FLAGS:
            action.help = argparse.SUPPRESS
    if not full_help:
        parser.epilog = "Only the common TrainingArguments flags are listed; --help_all lists every one."
    return parser


def parse_recipe_arguments(dataclass_types: tuple[type, ...], args: list[str] | None = None) -> tuple[Any, ...]:
    """Parse `dataclass_types` from `args` (default `sys.argv[1:]`): flags, after the values of a recipe file
    (`read_recipe_file`), which replace the dataclasses' defaults, so flags override the file. A file key that is no
    argument is refused. `--help` lists the recipe's own flags and the common TrainingArguments ones, `--help_all`
    every flag. Also sets up INFO logging and, for the `TrainingArguments`:

    - seeds Python, NumPy and torch with `seed` before anything random is built (model initialisation);
    - turns `dataloader_pin_memory` off on a machine without an accelerator (torch would warn about it);
    - resolves `resume_from_checkpoint`: a path is checked to be a complete checkpoint, "true" means the last
      complete checkpoint of `output_dir`, and when it is not given a complete checkpoint found in `output_dir`
      is resumed from (a rerun of the same command continues the run, as transformers' example scripts do).

    Returns:
        One instance per dataclass type, in order.
    """
    args = sys.argv[1:] if args is None else args
    values, flags, path = read_recipe_file(args)
    full_help = "--help_all" in flags
    flags = ["--help" if flag == "--help_all" else flag for flag in flags]
    parser = build_parser(dataclass_types, full_help=full_help)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    known = {item.name for dtype in dataclass_types for item in dataclasses.fields(dtype) if item.init}
    if unknown := sorted(set(values) - known):
        raise ValueError(f"{path} sets {', '.join(unknown)}, which this recipe does not take; remove or rename them "
                         "(`--help` lists its arguments).")
    parser.set_defaults(**values)  # string values are converted by each argument's type, like flags
    parsed = parser.parse_args_into_dataclasses(args=flags)
    for arguments in parsed:
        if isinstance(arguments, TrainingArguments):
            set_seed(arguments.seed)
            if not torch.accelerator.is_available():
                arguments.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns every epoch
            arguments.resume_from_checkpoint = resolve_resume_from_checkpoint(
                arguments.resume_from_checkpoint, arguments.output_dir, auto=True
            )
            final_model = os.path.join(arguments.output_dir, "config.json")
            if arguments.resume_from_checkpoint is None and os.path.isfile(final_model):
                logger.warning("%s already holds a trained model and no checkpoint to resume from: this run starts "
                               "afresh and overwrites it (use another --output_dir to keep it).", arguments.output_dir)
    return tuple(parsed)


def requested_method(args: list[str], default: str) -> str:
    """The `--method` of a command line, else of its recipe file, else `default`: read before the full parse, whose
    arguments depend on the method."""
    values, flags, _ = read_recipe_file(args)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--method")
    return parser.parse_known_args(flags)[0].method or values.get("method", default)


def check_push_possible(model: Any, training_args: Any, encoder: str = "backbone") -> str | None:
    """Refuse, before training, an `encoder` the model does not have (`--export_encoder`) or a push whose encoder could
    not be exported natively. Returns that export problem, or None."""
    backbone, _ = resolve_backbone(model, encoder)  # a TypeError naming the model's encoders, before any training
    problem = native_export_problem(backbone)  # e.g. a small-image stem plain timm cannot rebuild
    if training_args.push_to_hub and problem:
        raise ValueError(problem)
    return problem


def train_evaluate_export(trainer: Any, data_args: ImageDataArguments, method: str, encoder: str = "backbone") -> dict[str, float]:
    """Train, save the full model to `output_dir`, measure the weighted-kNN top-1 (k=200, T=0.1) of the model's
    `encoder` (`"backbone"`, or `"teacher_backbone"` for an EMA teacher) when the data has labels and a test split,
    then (main process) export that encoder in its library's own format with a model card to `output_dir/export`
    (`trainer.create_model_card`) and push that folder when `--push_to_hub` was given (`trainer.push_to_hub`;
    `check_push_possible` first).

    Every process must call it: the kNN feature extraction is split between processes.

    Returns:
        The evaluation written into the model card, e.g. `{"kNN top-1 (k=200, T=0.1)": 0.93}`.

    Raises:
        ValueError: before training, when `--skip_invalid_images` was given but the trainer's collator does not skip
            (build it through `data_args.configure_collator(collator)`).
    """
    args, model = trainer.args, trainer.accelerator.unwrap_model(trainer.model)
    if data_args.skip_invalid_images and not getattr(trainer.data_collator, "skip_invalid_images", False):
        raise ValueError(
            f"--skip_invalid_images was given but the trainer's collator ({type(trainer.data_collator).__name__}) "
            "does not skip unreadable images: pass the collator through data_args.configure_collator(collator) "
            "before building the trainer."
        )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    backbone, _ = resolve_backbone(model, encoder)
    train, evaluation = trainer.train_dataset, {}
    if "label" in train.column_names:
        try:
            test = data_args.load("test")
        except ValueError:
            test = None
        if test is not None and "label" in test.column_names:
            # PIL images for the feature extraction, without the unreadable ones training skipped
            train, test = (decoded_images(dataset, data_args.skip_invalid_images) for dataset in (train, test))
            data_config = backbone.data_config
            accuracy = knn_evaluate(backbone, train, test, data_args.image_size, data_config["mean"], data_config["std"])
            evaluation["kNN top-1 (k=200, T=0.1)"] = accuracy
            logger.info("kNN top-1 (k=200, T=0.1): %.4f", accuracy)
            if trainer.is_world_process_zero():
                print(f"knn_top1={accuracy:.4f}")
    if not trainer.is_world_process_zero():
        return evaluation
    if problem := native_export_problem(backbone):
        logger.warning("No native encoder export: %s", problem)
        return evaluation
    export_dir = save_backbone(model, os.path.join(args.output_dir, "export"), encoder=encoder, image_size=data_args.image_size)
    trainer.create_model_card(folder=export_dir, method=method, dataset=data_args.describe(), metrics=evaluation,
                              encoder=encoder)
    print(f"Encoder, model card and full model exported to {export_dir}")
    if args.push_to_hub:
        print(f"Pushed: {trainer.push_to_hub()}")
    return evaluation


def save_text_model(trainer: Any, data_args: Any, metrics: dict[str, float], **card: Any) -> None:
    """The end of a text recipe: log `metrics` and save them to `all_results.json`, save the model and tokenizer to
    `output_dir`, write its model card (`trainer.create_model_card(**card)` with `metrics` and the data of
    `data_args`), push it when `--push_to_hub` was given, and print where it is (main process)."""
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("all", metrics)
    trainer.save_model(trainer.args.output_dir)  # safetensors weights, config and tokenizer
    dataset = data_args.dataset_name or data_args.train_file or "CPython's bundled documentation (built-in)"
    trainer.create_model_card(metrics=metrics, dataset=dataset, **card)
    if trainer.args.push_to_hub:
        trainer.push_to_hub()
    if trainer.is_world_process_zero():
        print(f"\nModel saved to {os.path.abspath(trainer.args.output_dir)}")


@dataclass
class BackboneArguments:
    """The image encoder to pretrain: a timm name, a Hub id or a local folder (`SSLBackboneConfig`)."""

    backbone_name: str = field(default="resnet18", metadata={"help": "timm name, Hub id or local folder."})
    backbone_pretrained: bool = field(default=False, metadata={"help": "Start from the backbone's pretrained weights."})
    small_image_stem: bool = field(default=False, metadata={"help": "3x3 stride-1 stem, no max-pool (28-64 px)."})
    export_encoder: str = field(
        default="backbone",
        metadata={"help": "The encoder to kNN-evaluate and export at the end: 'backbone' (the trained online / student "
                  "network) or, for BYOL, DINO and MoCo, 'teacher_backbone' (the EMA teacher, which DINO's paper "
                  "evaluates and releases)."},
    )  # fmt: skip

    def config_kwargs(self) -> dict[str, Any]:
        """The `SSLBackboneConfig` fields these options set."""
        return {"backbone_name": self.backbone_name, "backbone_pretrained": self.backbone_pretrained,
                "small_image_stem": self.small_image_stem}  # fmt: skip


@dataclass
class TextModelArguments:
    """The model of a text recipe: continued from a checkpoint, or built from scratch from a config or the recipe's
    size preset, with `config_overrides` on top (transformers' run_mlm.py convention); and its tokenizer."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Checkpoint to continue pretraining."})
    config_name: str | None = field(default=None, metadata={"help": "Config to train from scratch (else --preset)."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to change when training from scratch, e.g. 'num_hidden_layers=4,"
                  "hidden_dropout_prob=0.0' (PretrainedConfig.update_from_string)."},
    )  # fmt: skip
    preset: str = field(default="tiny", metadata={"help": "Size from scratch (the recipe lists its presets)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer; else one is trained."})
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary of the trained tokenizer."})

    def check_preset(self, presets: Any) -> None:
        if self.preset not in presets:
            raise ValueError(f"--preset must be one of {list(presets)}, got {self.preset!r}.")

    def build_model(self, auto_class: Any, tokenizer: Any, preset: Any) -> Any:
        """`auto_class.from_pretrained(model_name_or_path)`, else `auto_class.from_config` of `config_name`'s config
        or of `preset` (the recipe's preset config) with `config_overrides` applied; the input embeddings grown to
        the tokenizer's size when it is larger."""
        if self.model_name_or_path is not None:
            if self.config_overrides:
                raise ValueError("--config_overrides changes a model built from scratch; drop it, or drop "
                                 "--model_name_or_path and pass --config_name.")  # fmt: skip
            model = auto_class.from_pretrained(self.model_name_or_path)
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(self.config_name, vocab_size=len(tokenizer)) if self.config_name else preset
            if self.config_overrides:
                config.update_from_string(self.config_overrides)
                logger.info("Config after --config_overrides %s: %s", self.config_overrides, config)
            model = auto_class.from_config(config)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        return model
