"""recipes/pretrain_clip.py runs end to end (a few steps): on the built-in digits it reports zero-shot accuracy and
class-level recall@k and writes them into the model card; on a --train_file of (image path, caption) pairs it reports
instance-level recall@k; both export a dual encoder and two towers that load back."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel, AutoTokenizer

from hfssl.evaluation import zero_shot
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


def recorded(monkeypatch, name: str):
    """Record the arguments of every call of `hfssl.evaluation.zero_shot.<name>` (the recipe imports it when it runs,
    and the module's own functions call it through the module): (the calls, the original function)."""
    calls, function = [], getattr(zero_shot, name)
    monkeypatch.setattr(zero_shot, name, lambda *args, **kwargs: calls.append((args, kwargs)) or function(*args, **kwargs))
    return calls, function


@pytest.mark.slow
def test_recipe_on_builtin_digits_reports_zero_shot_and_exports(tmp_path, monkeypatch, capsys):
    classified, classify = recorded(monkeypatch, "zero_shot_classification")
    stdout = run(["--output_dir", str(tmp_path), "--max_train_samples", "64"], monkeypatch, capsys)
    accuracy = figure(stdout, "zero-shot top1 (10 classes)")
    recalls = [figure(stdout, f"class-level image_to_text/recall@{k}") for k in (1, 5, 10)]
    export = tmp_path / "export"
    # 3 steps leave zero-shot at chance (measured 0.103 on the 359 held-out digits, 10 classes), so the checks that can
    # fail are the figures themselves: the exported dual encoder and tokenizer give them again on the same images and
    # prompts, the class-level recall@k by a loop over the images (a hit: one of the k nearest prompts names its class)
    (_, _, *data), options = classified[-1]  # images, labels, class names, templates, image size, mean, std
    images, labels, names, templates, size, mean, std = data
    exported = AutoModel.from_pretrained(export).eval()
    tokenizer = AutoTokenizer.from_pretrained(export / "text_encoder")
    assert accuracy == pytest.approx(classify(exported, tokenizer, *data, **options)["top1"], abs=1e-4)
    image_embeddings = F.normalize(zero_shot.encode_images(exported, images, size, mean, std), dim=1)
    prompts = [template.format(name) for name in names for template in templates]  # the class of prompt j: j // E
    prompt_embeddings = F.normalize(zero_shot.encode_texts(exported, tokenizer, prompts, options["max_length"]), dim=1)
    nearest = [(prompt_embeddings @ image).argsort(descending=True) // len(templates) for image in image_embeddings]
    hits = [[label in classes[:k].tolist() for classes, label in zip(nearest, labels)] for k in (1, 5, 10)]
    assert recalls == pytest.approx([sum(hit) / len(hit) for hit in hits], abs=1e-4)
    card = (export / "README.md").read_text()
    assert f"| zero-shot top1 (10 classes) | {accuracy:.4f} |" in card and "text_to_image/recall@5" in card
    model = AutoModel.from_pretrained(export)
    assert isinstance(model, DualEncoderModel) and model.config.loss == "clip"
    assert type(AutoModel.from_pretrained(export / "image_encoder")).__name__ == "ResNetModel"
    assert type(AutoModel.from_pretrained(export / "text_encoder")).__name__ == "BertModel"
    assert AutoTokenizer.from_pretrained(export / "text_encoder")("a photo of a seven.")["input_ids"][0] is not None


@pytest.mark.slow
def test_recipe_on_a_train_file_of_pairs_reports_retrieval_with_siglip(tmp_path, monkeypatch, capsys):
    encoded_images, encode_images = recorded(monkeypatch, "encode_images")
    encoded_texts, encode_texts = recorded(monkeypatch, "encode_texts")
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
    assert "zero-shot" not in stdout
    # 3 steps leave recall@1 at chance (measured 0.125, 1 of the 8 held-out images), so the check that can fail is the
    # figures themselves: the saved model's embeddings of the same images and captions (caption i describes image i),
    # ranked here one caption at a time
    model, tokenizer = AutoModel.from_pretrained(output).eval(), AutoTokenizer.from_pretrained(output)
    (_, images, *image_options), _ = encoded_images[-1]
    (_, _, captions, *text_options), _ = encoded_texts[-1]
    assert len(images) == len(captions) == 8
    image_embeddings = F.normalize(encode_images(model, images, *image_options), dim=1)
    ranks = [(image_embeddings @ caption).argsort(descending=True).tolist().index(index) + 1
             for index, caption in enumerate(F.normalize(encode_texts(model, tokenizer, captions, *text_options), dim=1))]
    assert recalls == pytest.approx([sum(rank <= k for rank in ranks) / 8 for k in (1, 5, 10)], abs=1e-4)
    assert "| image_to_text/recall@1 |" in (output / "export" / "README.md").read_text()
    assert AutoModel.from_pretrained(output / "export").config.loss == "siglip"
