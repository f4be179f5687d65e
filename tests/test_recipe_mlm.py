"""End to end: recipes/pretrain_mlm.py on a tiny BERT, then the transformers loaders on its output."""

import contextlib
import io
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfssl.evaluation import masked_lm

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pretrain_mlm.py"
TINY_YAML = RECIPE.parent / "configs" / "mlm_tiny.yaml"
TINY = ["--preset", "tiny", "--vocab_size", "600", "--max_seq_length", "32", "--max_train_samples", "400",
        "--max_steps", "4", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
        "--logging_steps", "2", "--disable_tqdm", "true"]


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # the recipe runs on CPU (the two-process test is gloo)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def run_here(arguments: list[str], cwd: Path) -> str:
    """The command line `python recipes/pretrain_mlm.py ARGUMENTS`, run in this process (a subprocess would spend
    ~10 s re-importing torch and transformers); returns what it printed."""
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as stdout:
        patch.setattr(sys, "argv", [str(RECIPE), *arguments])
        patch.setenv("TOKENIZERS_PARALLELISM", "false")
        patch.chdir(cwd)
        runpy.run_path(str(RECIPE), run_name="__main__")
    return stdout.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run of the bare recipe shared by the tests below: (output folder, stdout, the pre-masked held-out
    blocks its final evaluation scored)."""
    tmp_path = tmp_path_factory.mktemp("mlm")
    out = tmp_path / "mlm"
    evaluated, evaluate = [], masked_lm.evaluate_masked_lm

    def recording(trainer, eval_dataset):
        evaluated.append(eval_dataset)
        return evaluate(trainer, eval_dataset)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masked_lm, "evaluate_masked_lm", recording)  # the recipe imports it when it runs
        stdout = run_here([*TINY, "--output_dir", str(out)], tmp_path)
    return out, stdout, evaluated[-1]


@pytest.mark.slow
def test_recipe_trains_saves_and_loads_with_transformers(trained):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    out, stdout, held_out = trained
    assert f"Model saved to {out}" in stdout
    assert "Held-out masked-token accuracy" in stdout and "most-frequent-token baseline" in stdout
    assert (out / "model.safetensors").exists() and not (out / "pytorch_model.bin").exists()
    # the trained tokenizer is in the model folder; its copy for resuming is hidden, not a second tokenizer/ folder
    assert (out / "tokenizer.json").exists() and (out / ".tokenizer" / "tokenizer.json").exists()
    assert not (out / "tokenizer").exists()
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_perplexity"] > 1.0
    assert "fill-mask" in (out / "README.md").read_text()

    model = AutoModelForMaskedLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "modernbert" and len(tokenizer) == model.config.vocab_size
    predictions = pipeline("fill-mask", model=str(out))(f"the {tokenizer.mask_token} statement")
    assert len(predictions) == 5 and all("token_str" in p for p in predictions)
    with torch.no_grad():
        logits = model(**tokenizer("the for statement", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tokenizer)
    # 4 steps do not beat the most-frequent-token baseline (measured 0.007 against 0.036), so the check that can fail
    # is the figure itself: the recipe's masked-token accuracy (Trainer, the sparse logits put back in place by
    # preprocess_logits_for_masked_lm) is the saved model's, recomputed here from its full logits on the same blocks
    # (measured equal; the margin of 2 of the ~5,400 masked tokens covers an argmax near-tie rounding differently).
    labels = torch.tensor(held_out["labels"])
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.tensor(held_out["input_ids"]),
                              attention_mask=torch.tensor(held_out["attention_mask"])).logits  # fmt: skip
    masked = labels != -100
    accuracy = (logits.argmax(-1)[masked] == labels[masked]).double().mean().item()
    assert masked.sum() > 1000 and results["eval_masked_accuracy"] == pytest.approx(accuracy, abs=2.5 / masked.sum().item())


@pytest.mark.slow
def test_recipe_from_yaml_continues_from_checkpoint(trained, tmp_path):
    first, _, _ = trained
    config = tmp_path / "continue.yaml"
    config.write_text(
        f"model_name_or_path: {first}\nmax_seq_length: 32\nmax_train_samples: 200\nmax_steps: 2\n"
        f"per_device_train_batch_size: 4\nwhole_word_mask: true\nselection: exact\noutput_dir: {tmp_path / 'second'}\n"
    )
    stdout = run_here([str(config)], tmp_path)
    assert "Held-out masked-token accuracy" in stdout
    from transformers import AutoModelForMaskedLM

    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "second").config.vocab_size == 600


@pytest.mark.slow
def test_recipe_runs_unchanged_on_two_processes(tmp_path):
    """torchrun gives two gloo processes that Trainer/Accelerate see as MULTI_CPU."""
    out = tmp_path / "ddp"
    stdout = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(RECIPE), *TINY,
                  "--output_dir", str(out)], tmp_path)
    assert stdout.count("Model saved to") == 1  # printed by the main process only
    assert (out / "model.safetensors").exists()


@pytest.mark.slow
def test_shipped_tiny_config_beats_the_most_frequent_token_baseline(tmp_path):
    """recipes/configs/mlm_tiny.yaml as shipped (issue 28 point 6: at 50 steps it printed 0.047 against a baseline of
    0.052). Its 600 steps sit between runs measured at 300 steps (0.076 against 0.053) and 800 (0.140); the margin
    asked here is a fifth of the baseline, far above the noise of the ~4,000 masked held-out tokens."""
    stdout = run_here([str(TINY_YAML), "--output_dir", str(tmp_path / "out"), "--disable_tqdm", "true"], tmp_path)
    found = re.search(r"masked-token accuracy: ([0-9.]+) \(most-frequent-token baseline ([0-9.]+)\)", stdout)
    assert found, stdout[-2000:]
    accuracy, baseline = float(found[1]), float(found[2])
    print(found[0])  # shown with pytest -s
    assert baseline > 0.02 and accuracy > 1.2 * baseline
