"""Model cards for what hfssl trains, written through `huggingface_hub.ModelCard`."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ method }} pretraining of a `{{ architecture }}` with [hfssl](https://github.com/hfssl/hfssl), on {{ dataset }}.

## Evaluation

| metric | value |
|---|---|
{% for name, value in metrics.items() %}| {{ name }} | {{ value }} |
{% endfor %}

## Training

| hyperparameter | value |
|---|---|
{% for name, value in hyperparameters.items() %}| {{ name }} | {{ value }} |
{% endfor %}
Hardware: {{ hardware }}.

## Usage

```python
{{ usage }}
```
"""


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()})"


def write_model_card(
    output_dir: str | Path,
    *,
    method: str,
    architecture: str,
    dataset: str,
    pipeline_tag: str | None,
    metrics: Mapping[str, Any],
    hyperparameters: Mapping[str, Any],
    usage: str,
    tags: list[str] | None = None,
) -> ModelCard:
    """Write `README.md` (a Hub model card with metadata) into `output_dir` and return it.

    Args:
        method (`str`): the objective, e.g. "Masked language modelling".
        architecture (`str`): the model class or timm name.
        dataset (`str`): what it was trained on.
        pipeline_tag (`str`, *optional*): the Hub task, e.g. "fill-mask" or "image-feature-extraction".
        metrics (`Mapping`): final figures (floats are shown with 4 decimals).
        hyperparameters (`Mapping`): the settings worth reproducing.
        usage (`str`): a Python snippet that loads the model.
    """
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=pipeline_tag, tags=["hfssl", "self-supervised", *(tags or [])]
    )
    shown = {name: f"{value:.4f}" if isinstance(value, float) else value for name, value in metrics.items()}
    card = ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        model_name=Path(output_dir).resolve().name,
        method=method,
        architecture=architecture,
        dataset=dataset,
        metrics=shown,
        hyperparameters=dict(hyperparameters),
        hardware=_hardware(),
        usage=usage.strip(),
    )
    card.save(Path(output_dir) / "README.md")
    return card


def push_folder_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool | None = None,
                       commit_message: str = "Upload with hfssl") -> str:
    """Create `repo_id` if needed and upload `folder` (weights, config, tokenizer, model card) as one commit.

    Unlike `Trainer.push_to_hub`, this keeps the card written by `write_model_card`.

    Returns:
        The URL of the commit.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.pth", "training_args.bin"],
    )
    return str(info.commit_url)
