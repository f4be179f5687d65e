"""A few real training steps of recipes/pretrain_clm.py on the built-in corpus, and from_pretrained of its output."""

import functools
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

import hfssl.data.text

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# The built-in corpus parses the stdlib (seconds); build it once for both architectures.
_cached_corpus = functools.cache(hfssl.data.text.python_docs_corpus)


def run_recipe(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(hfssl.data.text, "python_docs_corpus", _cached_corpus)
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # Trainer pickles the recipe's TrainingArguments subclass
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    module.main()


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_clm_recipe_trains_and_saves(tmp_path, monkeypatch, model_type):
    # The shipped YAML, shrunk to a few steps on a subset of the corpus; a config file is the single argument.
    config = yaml.safe_load((RECIPES / "configs" / "clm_tiny.yaml").read_text())
    config.update(model_type=model_type, output_dir=str(tmp_path), max_steps=4, vocab_size=400, max_seq_length=32,
                  max_train_samples=200, validation_split_percentage=1.0, per_device_train_batch_size=8,
                  warmup_steps=0, logging_steps=1, use_cpu=True)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_recipe("pretrain_clm", [str(config_path)], monkeypatch)

    metrics = json.loads((tmp_path / "all_results.json").read_text())
    assert math.isfinite(metrics["eval_perplexity"]) and metrics["eval_perplexity"] > 1
    assert (tmp_path / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert model.config.model_type == model_type and model.config.vocab_size == len(tokenizer)
    inputs = tokenizer(["The for statement is used"], return_tensors="pt")
    with torch.no_grad():
        loss = model(**inputs, labels=inputs["input_ids"]).loss
    assert math.isfinite(loss.item())


def test_clm_recipe_rejects_unknown_model_type(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--model_type must be one of"):
        run_recipe("pretrain_clm", ["--model_type", "bert", "--output_dir", str(tmp_path)], monkeypatch)
