"""Model cards for what hfssl trains, written through `huggingface_hub.ModelCard`, and the upload of a folder.

- `write_model_card`: a card for a plain transformers model (the MLM recipe).
- `write_ssl_model_card`: the card of an exported SSL encoder (`hfssl.export.save_backbone`): method, backbone,
  dataset, hyperparameters, steps and hardware, final loss, evaluation figures, a summary of the training curve
  from `trainer.state.log_history`, and usage snippets that load the encoder (timm or transformers alone) and the
  full SSL model (subfolder `ssl_model/`, with hfssl).
- `push_folder_to_hub`: one commit of a folder through `huggingface_hub.HfApi`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData

SSL_MODEL_SUBFOLDER = "ssl_model"

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
{% if curve %}
Training curve: {{ curve }}
{% endif %}
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
    curve: str | None = None,
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
        curve (`str`, *optional*): a one-line summary of the training curve (see `training_curve`).
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
        curve=curve,
    )
    card.save(Path(output_dir) / "README.md")
    return card


_SSL_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

The {% if encoder.startswith("teacher") %}`{{ encoder }}` (the EMA teacher's encoder) {% else %}encoder {% endif %}of a {{ method }} model pretrained with [hfssl](https://github.com/hfssl/hfssl) on {{ dataset }}: a
{{ library }} `{{ architecture }}` that maps a {{ channels }} x {{ image_size }} x {{ image_size }} image to a
{{ feature_dim }}-dimensional feature vector ({{ pooling }}). It is saved in the {{ library }} format and loads
without hfssl{% if ssl_usage %}; the full {{ method }} model is in the `{{ subfolder }}/` subfolder{% endif %}.

## Evaluation

{% if evaluation %}| metric | value |
|---|---|
{% for name, value in evaluation.items() %}| {{ name }} | {{ value }} |
{% endfor %}{% else %}No labelled evaluation was run.
{% endif %}
## Training

{{ steps }} optimizer steps in {{ runtime }} on {{ hardware }}. Final training loss: {{ final_loss }}{% if mean_loss %}
(mean over the run: {{ mean_loss }}){% endif %}.

| hyperparameter | value |
|---|---|
{% for name, value in hyperparameters.items() %}| {{ name }} | {{ value }} |
{% endfor %}
### Training curve

{{ curve_summary }}
{% if curve_rows %}
| {{ curve_columns | join(" | ") }} |
|{% for _ in curve_columns %}---|{% endfor %}
{% for row in curve_rows %}| {{ row | join(" | ") }} |
{% endfor %}{% endif %}
## Usage

The encoder, with {{ library }} alone:

```python
{{ encoder_usage }}
```
{% if ssl_usage %}
The full {{ method }} model ({{ ssl_parts }}), to continue pretraining (e.g. with `hfssl.SSLTrainer`) or use its
heads. It holds the model state, not the optimizer state: for an exact resume, use a Trainer checkpoint.

```python
{{ ssl_usage }}
```
{% endif %}
## Files

| path | content |
|---|---|
| `config.json`, `model.safetensors` | the encoder in the {{ library }} format |
{% if library == "transformers" %}| `preprocessor_config.json` | its image processor (resize to {{ image_size }} px, the training normalisation) |
{% endif %}{% if ssl_usage %}| `{{ subfolder }}/` | the full {{ method }} model (`{{ ssl_class }}`), read by `AutoModel` once `hfssl` is imported |
{% endif %}"""


def _format(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unrecorded time"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def training_curve(
    log_history: Sequence[Mapping[str, Any]], max_rows: int = 10, max_metrics: int = 4
) -> tuple[str, list[str], list[list[Any]]]:
    """Summarise the training entries (those with a `loss`) of `trainer.state.log_history`.

    Args:
        log_history (sequence of `dict`): `trainer.state.log_history`.
        max_rows (`int`, defaults to 10): rows of the table, evenly spaced, first and last included.
        max_metrics (`int`, defaults to 4): logged `"<objective>/<quantity>"` metrics shown as extra columns.

    Returns:
        A one-line summary (first, lowest and last loss with their steps), the column names and the table rows.
    """
    entries = [entry for entry in log_history if "loss" in entry and "step" in entry]
    if not entries:
        return "No training loss was logged (set `logging_steps`).", [], []
    first, last = entries[0], entries[-1]
    lowest = min(entries, key=lambda entry: entry["loss"])
    summary = (
        f"Loss {first['loss']:.4g} at step {first['step']}, lowest {lowest['loss']:.4g} at step {lowest['step']}, "
        f"{last['loss']:.4g} at the last logged step {last['step']} ({len(entries)} logged points)."
    )
    metrics = sorted({key for entry in entries for key in entry if "/" in key})[:max_metrics]
    columns = ["step", "loss", *(["learning_rate"] if "learning_rate" in last else []), *metrics]
    count = min(max_rows, len(entries))
    indices = sorted({round(i * (len(entries) - 1) / max(count - 1, 1)) for i in range(count)})
    rows = [[_format(entries[i].get(column, "")) for column in columns] for i in indices]
    return summary, columns, rows


def encoder_usage(backbone: torch.nn.Module, location: str, hub: bool) -> str:
    """A Python snippet loading the exported encoder with timm or transformers alone and computing the features
    of one image as in training.

    Args:
        backbone (`hfssl.models.backbone.Backbone`): the exported encoder.
        location (`str`): the Hub repository or the local folder of the export.
        hub (`bool`): whether `location` is a Hub repository (timm then reads `hf-hub:`, else `local-dir:`).
    """
    channels = _channels(backbone)
    mode = "L" if channels == 1 else "RGB"
    if backbone.library == "timm":
        prefix = "hf-hub:" if hub else "local-dir:"
        return (
            "import timm\nimport torch\nfrom PIL import Image\n\n"
            f'model = timm.create_model("{prefix}{location}", pretrained=True).eval()  # num_classes=N adds a new head\n'
            "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
            f'image = Image.open("image.png").convert("{mode}")\n'
            "with torch.no_grad():\n"
            f"    features = model(transform(image).unsqueeze(0))  # (1, {backbone.feature_dim})"
        )
    hidden_sizes = getattr(backbone.model.config, "hidden_sizes", None)
    pooled = {
        "cls": "outputs.last_hidden_state[:, 0]  # the first ([CLS]) token, as in training",
        "mean": f"outputs.last_hidden_state.mean(dim={'(2, 3)' if hidden_sizes else '1'})  # mean pooling, as in training",
        "pooler": "outputs.pooler_output.flatten(1)  # the pooler output, as in training",
    }[backbone.pooling]
    return (
        "import torch\nfrom PIL import Image\nfrom transformers import AutoImageProcessor, AutoModel\n\n"
        f'processor = AutoImageProcessor.from_pretrained("{location}")\n'
        f'model = AutoModel.from_pretrained("{location}").eval()\n'
        f'image = Image.open("image.png").convert("{mode}")\n'
        "with torch.no_grad():\n"
        '    outputs = model(**processor(images=image, return_tensors="pt"))\n'
        f"features = {pooled}; shape (1, {backbone.feature_dim})"
    )


def _channels(backbone: torch.nn.Module) -> int:
    if backbone.library == "timm":
        return int(timm.models.get_model_input_config(backbone.model)["input_size"][0])
    return int(getattr(backbone.model.config, "num_channels", 3))


def _architecture(backbone: torch.nn.Module) -> str:
    if backbone.library == "timm":
        return backbone.model.pretrained_cfg.get("architecture") or str(backbone.name)
    return f"{type(backbone.model).__name__} ({backbone.model.config.model_type})"


def _pooling_description(backbone: torch.nn.Module) -> str:
    if backbone.library == "timm":
        return f"timm's global pool, {timm.models.get_model_args(backbone.model).get('global_pool', 'avg')}"
    return {"cls": "the [CLS] token", "mean": "mean pooling", "pooler": "the pooler output"}[backbone.pooling]


def _exported_image_size(folder: Path, backbone: torch.nn.Module) -> int:
    """The image side recorded by `save_backbone` in `folder` (timm's pretrained_cfg or the image processor), else
    the backbone's data config."""
    for name, keys in (("config.json", ("pretrained_cfg", "input_size")), ("preprocessor_config.json", ("size",))):
        path = folder / name
        value: Any = json.loads(path.read_text()) if path.is_file() else None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            return int(value[-1])
        if isinstance(value, dict):
            return int(value.get("height") or value.get("shortest_edge"))
    return int(backbone.data_config["input_size"][-1])


def _method_hyperparameters(config: Any, backbone: torch.nn.Module) -> dict[str, Any]:
    """The backbone, then the fields a method config declares (its own and `SSLBackboneConfig`'s) without the nested
    dicts, the unused `backbone_name` of a backbone built from a config, and `pooling` (stated in the card's intro)."""
    names: list[str] = []
    for cls in reversed(type(config).__mro__):
        if cls.__module__.startswith("hfssl."):
            names += [name for name in vars(cls).get("__annotations__", {}) if name not in names]
    skipped = {"pooling", *(["backbone_name"] if getattr(config, "backbone_model_config", None) else [])}
    values = {name: getattr(config, name, None) for name in names if name not in skipped}
    values = {name: value for name, value in values.items() if value is not None and not isinstance(value, dict)}
    return {"backbone": _architecture(backbone), **values}


def _training_hyperparameters(args: Any) -> dict[str, Any]:
    batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    return {
        "global_batch_size": batch,
        "optimizer": "LARS" if getattr(args, "lars", False) else str(getattr(args.optim, "value", args.optim)),
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "max_steps": args.max_steps if args.max_steps > 0 else f"{args.num_train_epochs} epochs",
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
    }


def write_ssl_model_card(
    save_directory: str | Path,
    trainer: Any,
    *,
    method: str,
    dataset: str,
    evaluation: Mapping[str, float] | None = None,
    repo_id: str | None = None,
    encoder: str = "backbone",
    image_size: int | None = None,
    ssl_model_subfolder: str | None = SSL_MODEL_SUBFOLDER,
    datasets: list[str] | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """Write the card (`README.md` with Hub metadata) of an encoder exported by `hfssl.export.save_backbone`.

    Args:
        save_directory (`str` or `Path`): the export folder.
        trainer (`SSLTrainer`): the trainer after `train()`; its model, arguments and `state.log_history` give the
            hyperparameters, steps, final loss and training curve.
        method (`str`): paper casing, e.g. "SimCLR" or "MoCo v2".
        dataset (`str`): what it was pretrained on, in words.
        evaluation (`Mapping`, *optional*): figures such as `{"kNN top-1 (k=200, T=0.1)": 0.91}`.
        repo_id (`str`, *optional*): the Hub repository the folder is pushed to; the usage snippets load from it
            (from the local folder when omitted).
        encoder (`str`, defaults to `"backbone"`): the method model's attribute holding the exported encoder.
        image_size (`int`, *optional*): the training image side (default: the one the export records).
        ssl_model_subfolder (`str`, *optional*): where `save_backbone` put the full model; None if it did not.
        datasets (`list[str]`, *optional*): Hub dataset ids for the metadata.
        tags (`list[str]`, *optional*): extra Hub tags.
    """
    folder = Path(save_directory)
    model = getattr(trainer.model, "module", trainer.model)
    backbone = getattr(model, encoder)
    log_history = list(trainer.state.log_history)
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    final = next((entry for entry in reversed(log_history) if "train_runtime" in entry), {})
    summary, columns, rows = training_curve(log_history)
    location = repo_id or str(folder.resolve())
    processes = trainer.args.world_size
    ssl_usage = None
    if ssl_model_subfolder:
        ssl_usage = (
            "import hfssl  # registers hfssl's model types with the Auto classes\nfrom transformers import AutoModel\n\n"
            f'ssl_model = AutoModel.from_pretrained("{location}", subfolder="{ssl_model_subfolder}")  # {type(model).__name__}'
        )
    slug = method.lower().split()[0].replace("-", "")
    card_data = ModelCardData(
        library_name=backbone.library, pipeline_tag="image-feature-extraction", datasets=datasets,
        tags=["hfssl", "self-supervised", slug, *(tags or [])],
    )
    card = ModelCard.from_template(
        card_data,
        template_str=_SSL_TEMPLATE,
        model_name=repo_id.split("/")[-1] if repo_id else folder.resolve().name,
        method=method,
        encoder=encoder,
        dataset=dataset,
        library=backbone.library,
        architecture=_architecture(backbone),
        channels=_channels(backbone),
        image_size=image_size or _exported_image_size(folder, backbone),
        feature_dim=backbone.feature_dim,
        pooling=_pooling_description(backbone),
        subfolder=ssl_model_subfolder,
        evaluation={name: _format(float(value)) for name, value in (evaluation or {}).items()},
        steps=trainer.state.global_step,
        runtime=_duration(final.get("train_runtime")),
        hardware=f"{_hardware()}, {processes} process{'es' if processes > 1 else ''}",
        final_loss=_format(float(losses[-1])) if losses else "not logged",
        mean_loss=_format(float(final["train_loss"])) if "train_loss" in final else None,
        hyperparameters={name: _format(value) for name, value in
                         {**_method_hyperparameters(model.config, backbone),
                          **_training_hyperparameters(trainer.args)}.items()},
        curve_summary=summary,
        curve_columns=columns,
        curve_rows=rows,
        encoder_usage=encoder_usage(backbone, location, hub=repo_id is not None),
        ssl_usage=ssl_usage,
        ssl_parts=", ".join([name for name, _ in model.named_children()]
                            + [name for name, _ in model.named_buffers(recurse=False)]),
        ssl_class=type(model).__name__,
    )
    card.save(folder / "README.md")
    return card


def push_folder_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool | None = None,
                       commit_message: str = "Upload with hfssl") -> str:
    """Create `repo_id` if needed and upload `folder` (weights, config, tokenizer, model card, subfolders) as one
    commit through `huggingface_hub.HfApi` (`create_repo`, then `upload_folder`).

    Unlike `Trainer.push_to_hub`, this keeps the card written by `write_model_card` / `write_ssl_model_card`.

    Returns:
        The URL of the commit.
    """
    api = HfApi(token=token, library_name="hfssl")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # with the owner filled in
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.pth", "training_args.bin"],
    )
    return str(info.commit_url)


def write_card_and_push(trainer, folder: str | Path, push_to_hub: bool, **card_kwargs: Any) -> str | None:
    """What a recipe does last, on the main process only: `write_model_card(folder, **card_kwargs)` and, when
    `push_to_hub`, upload `folder` to `trainer.args.hub_model_id` (default: the folder's name) in one commit.

    Recipes turn `TrainingArguments.push_to_hub` off before building the `Trainer` and pass its value here, so
    that Trainer's own push (which writes its own card) does not run.

    Returns:
        The commit URL when pushed, else `None`.
    """
    if not trainer.is_world_process_zero():
        return None
    card_kwargs.setdefault("curve", training_curve(trainer.state.log_history)[0])
    write_model_card(folder, **card_kwargs)
    if not push_to_hub:
        return None
    args = trainer.args
    repo_id = args.hub_model_id or Path(folder).resolve().name
    return push_folder_to_hub(folder, repo_id, args.hub_token, args.hub_private_repo)
