"""A few real training steps of recipes/pretrain_t5.py on the built-in corpus, and from_pretrained of its output."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hfssl.collators.span_corruption import DataCollatorForSpanCorruption, compute_input_and_target_lengths
from hfssl.evaluation import masked_lm

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def run_recipe(name: str, argv: list[str], monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # Trainer pickles the recipe's TrainingArguments subclass
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    module.main()


@pytest.mark.slow
def test_t5_recipe_trains_and_saves(tmp_path, monkeypatch):
    evaluated, evaluate = [], masked_lm.evaluate_masked_lm  # the pre-masked held-out blocks the recipe scores
    monkeypatch.setattr(masked_lm, "evaluate_masked_lm", lambda trainer, data: evaluated.append(data) or evaluate(trainer, data))
    config = yaml.safe_load((RECIPES / "configs" / "t5_tiny.yaml").read_text())
    config.update(output_dir=str(tmp_path), max_steps=4, vocab_size=400, max_seq_length=32, max_train_samples=200,
                  validation_split_percentage=1.0, per_device_train_batch_size=8, warmup_steps=0, logging_steps=1,
                  use_cpu=True)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_recipe("pretrain_t5", [str(config_path)], monkeypatch)

    metrics = json.loads((tmp_path / "all_results.json").read_text())
    assert math.isfinite(metrics["eval_perplexity"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    # 4 steps learn next to nothing (measured target-token accuracy 0.030), so the check that can fail is the figure
    # itself: the saved model's accuracy over the target tokens of the same held-out blocks, recomputed here (measured
    # equal; the margin of 2 of the ~2,200 targets covers an argmax near-tie rounding differently)
    held_out = {name: torch.tensor(values) for name, values in evaluated[-1].to_dict().items()}
    with torch.no_grad():
        logits = model.eval()(**held_out).logits
    targets = held_out["labels"] != -100
    accuracy = (logits.argmax(-1)[targets] == held_out["labels"][targets]).double().mean().item()
    assert targets.sum() > 1000 and metrics["eval_masked_accuracy"] == pytest.approx(accuracy, abs=2.5 / targets.sum().item())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert model.config.model_type == "t5" and model.config.vocab_size == len(tokenizer)
    raw_length, target_length = compute_input_and_target_lengths(32)
    text = " ".join(["The for statement iterates over the items of any sequence."] * 10)
    ids = tokenizer(text)["input_ids"][:raw_length]
    batch = DataCollatorForSpanCorruption(tokenizer, input_length=32, seed=0)([ids])
    assert batch["input_ids"].shape == (1, 32) and batch["labels"].shape == (1, target_length)
    with torch.no_grad():
        assert math.isfinite(model(**batch).loss.item())
