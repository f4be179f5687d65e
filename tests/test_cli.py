"""The command line: config files with overrides, a short --help that shows every default, and the recipes shipped
in the package (`hfssl RECIPE`)."""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from transformers import TrainingArguments

from hfssl.cli import build_parser, main, parse_recipe_arguments, read_recipe_file, recipe_names
from hfssl.trainers import SSLTrainingArguments

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RecipeArguments:
    vocab_size: int = field(default=4000, metadata={"help": "Vocabulary of the trained tokenizer."})
    mlm_probability: float = 0.15  # no help: the parser must still show its default


@dataclass
class ShortRunArguments(SSLTrainingArguments):
    max_steps: int = field(default=60)  # re-declared for its default, without transformers' help


def test_a_config_file_with_overrides_on_top(tmp_path):
    config = tmp_path / "mlm_tiny.yaml"
    config.write_text("vocab_size: 500\nmax_steps: 40\nlearning_rate: 0.01\n")
    for argv in (
        [str(config), "--max_steps", "10"],  # the bare file first (issue 28: refused before)
        ["--config", str(config), "--max_steps", "10"],  # TRL's spelling
        ["--max_steps", "10", f"--config={config}"],
    ):
        recipe, training = parse_recipe_arguments((RecipeArguments, TrainingArguments), argv + ["--output_dir", str(tmp_path / "out")])
        assert (recipe.vocab_size, training.max_steps, training.learning_rate) == (500, 10, 0.01)


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="--config needs a file"):
        read_recipe_file(["--config"])
    with pytest.raises(FileNotFoundError, match="shipped configs: .*simclr.yaml"):
        read_recipe_file(["--config", str(tmp_path / "missing.yaml")])
    config = tmp_path / "bad.yaml"
    config.write_text("vocab_sise: 500\n")
    with pytest.raises(ValueError, match="vocab_sise"):
        parse_recipe_arguments((RecipeArguments, TrainingArguments), [str(config), "--output_dir", str(tmp_path)])


def test_shipped_configs_resolve_by_name():
    values, flags, path = read_recipe_file(["--config", "simclr.yaml", "--max_steps", "3"])
    assert values["method"] == "simclr" and flags == ["--max_steps", "3"] and path.endswith("configs/simclr.yaml")


def test_short_help_shows_every_default_and_keeps_transformers_help():
    short = build_parser((RecipeArguments, ShortRunArguments), full_help=False).format_help()
    full = build_parser((RecipeArguments, ShortRunArguments), full_help=True).format_help()
    assert len(short.splitlines()) < 0.6 * len(full.splitlines())
    assert "--help_all" in short and "--adam_beta1" not in short and "--adam_beta1" in full
    flat = re.sub(r"\s+", " ", short)
    assert "--mlm-probability MLM_PROBABILITY Mlm probability. (default: 0.15)" in flat  # a field without help shows its default
    # the recipe's max_steps keeps TrainingArguments' help text, with the recipe's default
    assert re.search(r"--max_steps MAX_STEPS, --max-steps MAX_STEPS Overrides `num_train_epochs`.*?\(default: 60\)", flat)
    assert "--knn_eval_steps" in short or "--collapse_action" in short  # hfssl's own TrainingArguments fields stay


def test_recipes_ship_in_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {"hfssl"} | {f"hfssl.{path.parent.name}" for path in (ROOT / "hfssl").glob("*/__init__.py")}
    assert packages == on_disk | {"hfssl.recipes"}
    assert pyproject["tool"]["setuptools"]["package-dir"]["hfssl.recipes"] == "recipes"
    assert pyproject["project"]["scripts"]["hfssl"] == "hfssl.cli:main"
    assert recipe_names() == sorted(path.stem for path in (ROOT / "recipes").glob("[!_]*.py"))


def test_the_hfssl_command(capsys):
    main([])
    listing = capsys.readouterr().out
    assert "pretrain_ssl" in listing and "simclr.yaml" in listing
    with pytest.raises(SystemExit, match="no recipe 'pretrain_simclr'; choose one of"):
        main(["pretrain_simclr"])
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain_ssl", "--method", "dino", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "usage: pretrain_ssl.py" in help_text and "--teacher_temperature" in help_text


def test_config_overrides_change_a_model_built_from_scratch():
    from transformers import AutoModelForMaskedLM, BertConfig

    from hfssl.cli import TextModelArguments

    tokenizer = ["token"] * 120  # only its length matters here
    preset = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    arguments = TextModelArguments(config_overrides="num_hidden_layers=1,hidden_dropout_prob=0.0")
    model = arguments.build_model(AutoModelForMaskedLM, tokenizer, preset)
    assert (model.config.num_hidden_layers, model.config.hidden_dropout_prob) == (1, 0.0)
    assert model.get_input_embeddings().num_embeddings == 120  # grown to the tokenizer
    with pytest.raises(ValueError, match="config_overrides changes a model built from scratch"):
        TextModelArguments(model_name_or_path="bert-base-uncased", config_overrides="num_hidden_layers=1").build_model(
            AutoModelForMaskedLM, tokenizer, preset
        )
    with pytest.raises(ValueError, match="--preset must be one of"):
        TextModelArguments(preset="huge").check_preset({"tiny": None})


@pytest.mark.skipif(__import__("torch").accelerator.is_available(), reason="checks the CPU-only default")
def test_no_pin_memory_warning_without_an_accelerator(tmp_path):
    (training,) = parse_recipe_arguments((TrainingArguments,), ["--output_dir", str(tmp_path)])
    assert training.dataloader_pin_memory is False
    assert SSLTrainingArguments(str(tmp_path)).dataloader_pin_memory is False
