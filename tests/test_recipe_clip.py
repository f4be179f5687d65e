"""recipes/pretrain_clip.py runs end to end (a few steps): on the built-in digits it reports zero-shot accuracy and
class-level recall@k and writes them into the model card; on a --train_file of (image path, caption) pairs it reports
instance-level recall@k; both export a dual encoder and two towers that load back."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import AutoModel, AutoTokenizer

from hfssl.models.clip import DualEncoderModel

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pretrain_clip.py"
ARGS = ["--max_steps", "3", "--per_device_train_batch_size", "16", "--captions_per_image", "2", "--logging_steps", "1",
        "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip


def run(arguments: list[str], monkeypatch, capsys) -> str:
    """The command line, run in this process (a subprocess would spend ~10 s re-importing torch and transformers)."""
    monkeypatch.setattr(sys, "argv", [str(RECIPE), *arguments, *ARGS])
    runpy.run_path(str(RECIPE), run_name="__main__")
    return capsys.readouterr().out


def figure(stdout: str, name: str) -> float:
    return float(stdout.split(f"{name}: ")[1].split()[0])


@pytest.mark.slow
def test_recipe_on_builtin_digits_reports_zero_shot_and_exports(tmp_path, monkeypatch, capsys):
    stdout = run(["--output_dir", str(tmp_path), "--max_train_samples", "64"], monkeypatch, capsys)
    accuracy = figure(stdout, "zero-shot top1 (10 classes)")
    recalls = [figure(stdout, f"class-level image_to_text/recall@{k}") for k in (1, 5, 10)]
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1.0
    export = tmp_path / "export"
    card = (export / "README.md").read_text()
    assert f"| zero-shot top1 (10 classes) | {accuracy:.4f} |" in card and "text_to_image/recall@5" in card
    model = AutoModel.from_pretrained(export)
    assert isinstance(model, DualEncoderModel) and model.config.loss == "clip"
    assert type(AutoModel.from_pretrained(export / "image_encoder")).__name__ == "ResNetModel"
    assert type(AutoModel.from_pretrained(export / "text_encoder")).__name__ == "BertModel"
    assert AutoTokenizer.from_pretrained(export / "text_encoder")("a photo of a seven.")["input_ids"][0] is not None


@pytest.mark.slow
def test_recipe_on_a_train_file_of_pairs_reports_retrieval_with_siglip(tmp_path, monkeypatch, capsys):
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "yellow": (220, 220, 40)}
    rows, generator = [], np.random.default_rng(0)
    for index in range(40):
        name = list(colours)[index % 4]
        pixels = np.clip(np.array(colours[name]) + generator.integers(-20, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{index}.png")
        rows.append({"file": f"{index}.png", "text": f"a {name} square number {index}"})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    output = tmp_path / "run"
    stdout = run(["--output_dir", str(output), "--train_file", str(tmp_path / "pairs.jsonl"), "--image_column", "file",
                  "--caption_column", "text", "--image_size", "24", "--loss", "siglip"], monkeypatch, capsys)  # fmt: skip
    recalls = [figure(stdout, f"text_to_image/recall@{k}") for k in (1, 5, 10)]
    assert "zero-shot" not in stdout and 0.0 <= recalls[0] <= recalls[1] <= recalls[2] == 1.0  # 8 held-out images
    assert "| image_to_text/recall@1 |" in (output / "export" / "README.md").read_text()
    assert AutoModel.from_pretrained(output / "export").config.loss == "siglip"
