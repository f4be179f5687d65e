"""Export what hfssl trains for use without hfssl, write its model card, and upload it to the Hub.

- A **transformers** backbone becomes a plain transformers checkpoint (`config.json`, `model.safetensors`,
  `preprocessor_config.json` with the training resolution and normalisation): `AutoModel.from_pretrained(path)` and
  `AutoImageProcessor.from_pretrained(path)` load it.
- A **timm** backbone becomes timm's Hub layout, written by timm's own `timm.models.save_for_hf` (`config.json`
  with `architecture`, `model_args` and a `pretrained_cfg` holding the training resolution and normalisation;
  `model.safetensors`): `timm.create_model("hf-hub:<repo>", pretrained=True)` (or `"local-dir:<folder>"`) loads
  it, `num_classes=N` adds a fresh classifier for fine-tuning, and transformers' `AutoModel` reads it too (through
  its timm wrapper); a model timm cannot rebuild is refused (`native_export_problem`).
- Given an SSL method model (`SimCLRModel`, `MoCoModel`, ...), the full model (backbone, heads, teacher, queue) goes
  to the `ssl_model/` subfolder as well: `AutoModel.from_pretrained(path, subfolder="ssl_model")`, after
  `import hfssl` (this one needs hfssl), continues pretraining from the same folder or Hub repo.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData
from torch import nn
from transformers import AutoModel, PreTrainedModel, ViTConfig, ViTMAEModel, ViTModel

from hfssl.models.backbone import Backbone

logger = logging.getLogger(__name__)

SSL_MODEL_SUBFOLDER = "ssl_model"

# Entries of timm's pretrained_cfg that describe the weights the architecture was first published with; they do not
# describe the exported weights.
_TIMM_SOURCE_KEYS = ("tag", "hf_hub_id", "hf_hub_filename", "url", "file", "source", "origin_url", "paper_ids",
                     "paper_name", "license", "notes", "label_names", "label_descriptions")
# Never uploaded: checkpoints (optimizer state), hidden folders (SafeTrainer's staging), logs, pickled arguments.
_NOT_UPLOADED = ["checkpoint-*", ".*", "runs/**", "*.pth", "training_args.bin"]
# Trainer's speed figures: they describe the machine, not the model.
_SPEED_METRICS = ("runtime", "samples_per_second", "steps_per_second", "total_flos")
# sentence-transformers' pooling modes other than [CLS] (`1_Pooling/config.json`).
_OTHER_POOLING_MODES = ("mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")


def resolve_backbone(model: nn.Module, encoder: str = "backbone") -> tuple[Backbone, PreTrainedModel | None]:
    """The `Backbone` to export and the SSL method model holding it (None when `model` is a bare `Backbone`).

    Args:
        model (`Backbone` or an hfssl method model): what to export from.
        encoder (`str`, defaults to `"backbone"`): the method model's attribute holding the encoder, e.g.
            `"teacher_backbone"` for MoCo's momentum encoder.
    """
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    if isinstance(model, Backbone):
        return model, None
    backbone = getattr(model, encoder, None)
    if not isinstance(backbone, Backbone):
        encoders = [name for name, module in model.named_children() if isinstance(module, Backbone)]
        raise TypeError(
            f"Cannot take the encoder `{encoder}` from {type(model).__name__}: expected an hfssl `Backbone` or a method "
            f"model whose `{encoder}` attribute is one, got {type(backbone).__name__}. This model's encoders: "
            f"{encoders or 'none'}; name one with `encoder=` (`--export_encoder` in the recipes), or pass the Backbone."
        )
    return backbone, model if isinstance(model, PreTrainedModel) else None


def native_export_problem(backbone: Backbone) -> str | None:
    """Why `backbone` cannot be exported natively, or None when it can.

    A timm model is rebuilt (on the meta device, no memory) from its architecture name and factory arguments, as
    `timm.create_model` would from the export, and compared layer by layer with the trained one: a module replaced
    after creation (hfssl's `small_image_stem`) would otherwise load into a different network or fail to load.
    """
    import timm  # here, not at module level: `import hfssl` stays light
    if backbone.library != "timm":
        return None
    model, architecture = backbone.model, _architecture(backbone)
    factory_args = {**getattr(model, "_model_args", {}), **timm.models.get_model_args(model)}  # recorded, current
    with torch.device("meta"):
        rebuilt = timm.create_model(architecture, pretrained=False, **factory_args)
    expected, actual = str(rebuilt).splitlines(), str(model).splitlines()
    if expected == actual:
        return None
    changes = [f"{line[0]} {line[1:].strip()}" for line in difflib.unified_diff(expected, actual, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return (
        f"The timm backbone {architecture!r} was changed after timm.create_model (e.g. by hfssl's "
        f"small_image_stem=True; timm's ResNet has no 3x3 stride-1 stem option), so timm.create_model("
        f"{architecture!r}) cannot rebuild it and a native timm export would not load. Differences (- timm, "
        f"+ trained): {'; '.join(changes[:4])}. Share the full SSL model instead (model.save_pretrained(path), read "
        "by AutoModel.from_pretrained(path) after `import hfssl`), or pretrain without the change (larger images, "
        "or a ViT with a small patch size through backbone_kwargs) for a plain-timm export."
    )


def _normalisation(backbone: Backbone, image_size: int | None, mean: Sequence[float] | None,
                   std: Sequence[float] | None) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    channels = _channels(backbone)
    size = int(image_size if image_size is not None else backbone.data_config["input_size"][-1])
    mean = tuple(float(value) for value in (mean if mean is not None else backbone.data_config["mean"]))
    std = tuple(float(value) for value in (std if std is not None else backbone.data_config["std"]))
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"The backbone takes {channels} input channel(s) but the normalisation has mean={mean}, std={std}; pass "
            f"`mean` and `std` with {channels} value(s), the ones used in training."
        )
    return size, mean, std


def _save_timm(backbone: Backbone, folder: Path, image_size: int | None, mean: Sequence[float] | None,
               std: Sequence[float] | None) -> None:
    import timm  # here, not at module level: `import hfssl` stays light
    problem = native_export_problem(backbone)
    if problem is not None:
        raise ValueError(problem)
    size, mean, std = _normalisation(backbone, image_size, mean, std)
    data_config = {"input_size": (_channels(backbone), size, size), "mean": mean, "std": std, "crop_pct": 1.0,
                   "interpolation": "bilinear"}
    timm.models.save_for_hf(backbone.model, folder, safe_serialization=True, data_config=data_config)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    for key in _TIMM_SOURCE_KEYS:
        config["pretrained_cfg"].pop(key, None)
    # `num_classes` stays at the top level and in pretrained_cfg, where both timm and transformers' timm wrapper
    # read it; in `model_args` it would clash with the wrapper's own num_classes=0.
    config.get("model_args", {}).pop("num_classes", None)
    config_file.write_text(json.dumps(config, indent=2))


def image_processor_for(backbone: Backbone, image_size: int | None = None, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None) -> Any:
    """The transformers image processor of the backbone's model type, set to the training resolution (square
    resize, no crop) and normalisation; None (with a warning) for a model type that has none."""
    from transformers.models.auto.image_processing_auto import (
        IMAGE_PROCESSOR_MAPPING_NAMES,
        get_image_processor_class_from_name,
    )

    config = backbone.model.config
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(config.model_type)
    if isinstance(names, dict):
        names = (names.get("torchvision"), names.get("pil"), *names.values())
    elif isinstance(names, str):
        names = (names,)
    cls = next(filter(None, (get_image_processor_class_from_name(name) for name in names or () if name)), None)
    if cls is None:
        logger.warning("No transformers image processor is known for model type %r; none exported (pass "
                       "`processor=` to save_backbone to include one).", config.model_type)
        return None
    size, mean, std = _normalisation(backbone, image_size, mean, std)
    default = cls()
    kwargs: dict[str, Any] = {"image_mean": list(mean), "image_std": list(std)}
    shortest_edge = "shortest_edge" in dict(getattr(default, "size", None) or {})
    kwargs["size"] = {"shortest_edge": size} if shortest_edge else {"height": size, "width": size}
    if getattr(default, "crop_size", None):
        kwargs["crop_size"] = {"height": size, "width": size}
    if hasattr(default, "crop_pct"):
        kwargs["crop_pct"] = 1.0
    return cls(**kwargs)


def save_backbone(model: nn.Module, save_directory: str | Path, *, encoder: str = "backbone",
                  image_size: int | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, processor: Any = None,
                  ssl_model_subfolder: str | None = SSL_MODEL_SUBFOLDER) -> Path:
    """Write the encoder of `model` in its native format (see the module docstring) into `save_directory`.

    Args:
        model (`Backbone` or an hfssl method model): what to export.
        save_directory (`str` or `Path`): created if needed; files of the same names are overwritten.
        encoder (`str`, defaults to `"backbone"`): the method model's attribute holding the encoder.
        image_size (`int`, *optional*): the side the images had in training (default: the backbone's data config).
            Recorded in timm's `pretrained_cfg` or the transformers image processor.
        mean, std (sequence of `float`, *optional*): the training normalisation, one value per input channel
            (default: the backbone's data config, which the hfssl recipes normalise with).
        processor (*optional*): a transformers image processor or tokenizer to save instead of the one built from
            the model type (transformers backbones only; timm keeps its preprocessing in `pretrained_cfg`).
        ssl_model_subfolder (`str`, *optional*, defaults to `"ssl_model"`): where the full method model goes
            (`save_pretrained`, safetensors); None to leave it out.

    Returns:
        The folder, as a `Path`.
    """
    backbone, ssl_model = resolve_backbone(model, encoder)
    folder = Path(save_directory)
    if backbone.library == "timm" and processor is not None:
        raise ValueError(
            "processor= applies to transformers backbones; a timm export keeps its preprocessing in pretrained_cfg. "
            "Pass image_size, mean and std instead."
        )
    with tempfile.TemporaryDirectory() as staging:  # nothing is written when the export is refused
        staged = Path(staging)
        if backbone.library == "timm":
            _save_timm(backbone, staged, image_size, mean, std)
        else:
            backbone.model.save_pretrained(staged)
            processor = processor if processor is not None else image_processor_for(backbone, image_size, mean, std)
            if processor is not None:
                processor.save_pretrained(staged)
        folder.mkdir(parents=True, exist_ok=True)
        for path in staged.iterdir():
            shutil.copy2(path, folder / path.name)
    if ssl_model is not None and ssl_model_subfolder:
        ssl_model.save_pretrained(folder / ssl_model_subfolder)
    return folder


def save_towers(model: nn.Module, save_directory: str | os.PathLike, tokenizer: Any = None,
                image_size: int | None = None, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None) -> dict[str, Path]:
    """Export a `DualEncoderModel` (CLIP / SigLIP) under `save_directory`: the image tower in `image_encoder/`
    (`save_backbone`) and the text tower with `tokenizer` in `text_encoder/` (`AutoModel`, `AutoTokenizer`), both
    loading without hfssl, and the full model with `tokenizer` in the folder itself (`AutoModel` after `import hfssl`),
    the only place holding the projections and logit scale (the towers give the pooled features).

    Args:
        model (`DualEncoderModel`): the trained dual encoder.
        save_directory (`str` or `os.PathLike`): created if needed.
        tokenizer (*optional*): saved next to the text encoder and the full model.
        image_size, mean, std (*optional*): the training image side and normalisation (see `save_backbone`).

    Returns:
        `dict` with the paths `"model"`, `"image_encoder"`, `"text_encoder"`.
    """
    folder = Path(save_directory)
    image_dir = save_backbone(model, folder / "image_encoder", encoder="image_encoder", image_size=image_size,
                              mean=mean, std=std, ssl_model_subfolder=None)  # fmt: skip
    text_dir = folder / "text_encoder"
    model.text_encoder.save_pretrained(text_dir)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(text_dir)
        tokenizer.save_pretrained(folder)
    return {"model": folder, "image_encoder": image_dir, "text_encoder": text_dir}


def save_sentence_encoder(model: nn.Module, tokenizer: Any, save_directory: str | os.PathLike, max_seq_length: int,
                          ssl_model_subfolder: str | None = SSL_MODEL_SUBFOLDER) -> Path:
    """Export a sentence encoder with [CLS] pooling (SimCSE's, Gao et al., 2021) for transformers and
    sentence-transformers alone, without hfssl.

    The folder holds the transformers encoder (`config.json`, `model.safetensors`, the tokenizer: `AutoModel`,
    `AutoTokenizer`) and sentence-transformers' layout around it (`modules.json`, `sentence_bert_config.json`,
    `config_sentence_transformers.json`, `1_Pooling/config.json` with `pooling_mode_cls_token`), so that
    `SentenceTransformer(folder).encode(texts)` gives the same embedding as `SimCSEModel.encode`: the unnormalised
    [CLS] state of the last layer, inputs cut at `max_seq_length` tokens (without that layout sentence-transformers
    would fall back to mean pooling). When the encoder's architecture has a dense + tanh pooler (BERT, RoBERTa), it
    holds SimCSE's training MLP, as in the SimCSE authors' exports, so `AutoModel` initialises nothing at random:
    `pooler_output` is the MLP's output, `last_hidden_state[:, 0]` the sentence embedding.

    Args:
        model (`SimCSEModel` or `PreTrainedModel`): the method model, or a bare transformers text encoder.
        tokenizer (`PreTrainedTokenizerBase`): the tokenizer the encoder was trained with.
        save_directory (`str` or `os.PathLike`): created if needed; files of the same names are overwritten.
        max_seq_length (`int`): the longest input in tokens (the training truncation; SimCSE: 32).
        ssl_model_subfolder (`str`, *optional*): where the full `SimCSEModel` goes (None: not saved).

    Returns:
        `Path` of the folder.
    """
    from hfssl.models.simcse import SimCSEModel

    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length={max_seq_length} must be >= 1: pass the truncation used in training.")
    folder = Path(save_directory)
    encoder = model.encoder if isinstance(model, SimCSEModel) else model
    if not isinstance(encoder, PreTrainedModel):
        raise TypeError(f"save_sentence_encoder takes a SimCSEModel or a transformers text encoder, got "
                        f"{type(model).__name__}: pass the SimCSEModel, or its `encoder`.")
    if isinstance(model, SimCSEModel) and getattr(encoder, "pooler", False) is None:  # SimCSEModel dropped it
        encoder = copy.deepcopy(encoder)
        with torch.device("meta"):
            pooler = getattr(AutoModel.from_config(encoder.config), "pooler", None)
        dense = getattr(pooler, "dense", None)
        if isinstance(dense, nn.Linear) and isinstance(getattr(pooler, "activation", None), nn.Tanh):
            pooler = type(pooler)(encoder.config).to(device=encoder.device, dtype=encoder.dtype)
            pooler.dense.load_state_dict(model.mlp[0].state_dict())
            encoder.pooler = pooler
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if isinstance(model, SimCSEModel) and ssl_model_subfolder:
        model.save_pretrained(folder / ssl_model_subfolder)
    pooling = {"word_embedding_dimension": int(encoder.config.hidden_size), "pooling_mode_cls_token": True,
               **{f"pooling_mode_{mode}": False for mode in _OTHER_POOLING_MODES}, "include_prompt": True}
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
        "sentence_bert_config.json": {"max_seq_length": int(max_seq_length), "do_lower_case": False},
        "config_sentence_transformers.json": {"prompts": {}, "default_prompt_name": None,
                                              "similarity_fn_name": "cosine"},
        "1_Pooling/config.json": pooling,
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")
    return folder


def mae_encoder_as_vit(model: nn.Module) -> ViTModel:
    """The MAE encoder (He et al., 2021) as a transformers `ViTModel`, deterministic and with a meaningful pooler.

    `ViTMAEModel` masks and shuffles the patches at random in every forward; the `ViTModel` holds the same weights
    under the same names (the fixed sin-cos position embeddings included, trainable in ViT as in MAE's fine-tuning)
    and sees every patch in image order: its `last_hidden_state` equals ViTMAE's with `mask_ratio=0` and
    `noise=torch.arange(L).expand(B, L)`. Its pooler is the identity (dense layer = identity matrix, zero bias,
    `pooler_act="linear"`), so `pooler_output` is the [CLS] token (MAE's linear-probe feature), `AutoModel` loads the
    saved model without initialising anything at random, and `pipeline("image-feature-extraction", pool=True)`
    returns the [CLS] features.

    Args:
        model (`ViTMAEForPreTraining` or `ViTMAEModel`): the trained MAE (its decoder is left out).

    Returns:
        `ViTModel` on the model's device and dtype; for `(B, C, H, W)` pixels, `last_hidden_state` of shape
        `(B, 1 + L, hidden_size)` (L patches) and `pooler_output` of shape `(B, hidden_size)`.
    """
    model = getattr(model, "module", model)
    mae = getattr(model, "vit", model)
    if not isinstance(mae, ViTMAEModel):
        raise TypeError(f"mae_encoder_as_vit takes a ViTMAEForPreTraining or ViTMAEModel, got {type(model).__name__}.")
    shared = {name: getattr(mae.config, name) for name in ViTConfig.__annotations__ if hasattr(mae.config, name)}
    shared.update(encoder_stride=mae.config.patch_size, pooler_output_size=mae.config.hidden_size, pooler_act="linear")
    encoder = ViTModel(ViTConfig(**shared), add_pooling_layer=True)
    weights, expected = mae.state_dict(), {name: value for name, value in encoder.state_dict().items()
                                           if not name.startswith("pooler.")}  # fmt: skip
    if weights.keys() != expected.keys() or any(weights[name].shape != expected[name].shape for name in weights):
        raise RuntimeError(f"ViTMAE and ViT weights differ: ViTMAE only {sorted(weights.keys() - expected.keys())}, "
                           f"ViT only {sorted(expected.keys() - weights.keys())}; this transformers version changed "
                           "them: update hfssl.export.mae_encoder_as_vit to map the new names.")  # fmt: skip
    encoder.load_state_dict(weights, strict=False)
    with torch.no_grad():
        encoder.pooler.dense.weight.copy_(torch.eye(mae.config.hidden_size))
        encoder.pooler.dense.bias.zero_()
    return encoder.to(device=mae.device, dtype=mae.dtype)

# ---- the Hub ------------------------------------------------------------------------------------------------------


def create_hub_repo(repo_id: str, token: str | None = None, private: bool | None = None,
                    folder: str | os.PathLike | None = None) -> str:
    """Create the Hub repository `repo_id` if needed (`HfApi.create_repo`), as Trainer does before training when
    `push_to_hub` is set, so a push that cannot happen fails before any training.

    Args:
        repo_id (`str`): `"name"` or `"owner/name"`.
        token, private: as for `HfApi.create_repo`.
        folder (*optional*): what would be uploaded, named in the error.

    Returns:
        The repository id with the owner filled in.

    Raises:
        RuntimeError: the Hub cannot be reached or refuses (no network, no or a read-only token, offline mode), with
            the command that uploads the saved folder later.
    """
    try:
        return HfApi(token=token, library_name="hfssl").create_repo(repo_id, private=private, exist_ok=True).repo_id
    except Exception as error:  # HTTP, connection, offline-mode and token errors alike: one message with the fix
        folder = folder or "<folder>"
        raise RuntimeError(
            f"--push_to_hub: cannot create the Hub repository {repo_id!r} ({type(error).__name__}: {error}). Log in "
            "(`hf auth login` or HF_TOKEN with write access) on a machine that reaches huggingface.co, or train "
            f"without --push_to_hub and upload the saved folder later: `hf upload {repo_id} {folder}` or "
            f"`hfssl.push_folder_to_hub({str(folder)!r}, {repo_id!r})` (the image recipes' encoder: {folder}/export)."
        ) from error


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool | None = None,
                       commit_message: str = "Upload with hfssl") -> str:
    """Create `repo_id` if needed (`create_hub_repo`) and upload `folder` (weights, config, tokenizer, model card,
    subfolders; not checkpoints, hidden folders, logs or pickled arguments) as one commit through
    `huggingface_hub.HfApi.upload_folder`.

    Returns:
        The URL of the commit.
    """
    repo_id = create_hub_repo(repo_id, token, private, folder)
    info = HfApi(token=token, library_name="hfssl").upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, ignore_patterns=_NOT_UPLOADED)
    return str(info.commit_url)


def push_backbone_to_hub(model: nn.Module, repo_id: str, *, model_card: ModelCard | str | None = None,
                         token: str | None = None, private: bool | None = None,
                         commit_message: str = "Upload encoder with hfssl", **export_kwargs: Any) -> str:
    """`save_backbone` into a temporary folder, add `model_card` (e.g. from `write_model_card(..., encoder=...)`) as
    `README.md`, and upload it in one commit (`push_folder_to_hub`).

    Args:
        model (`Backbone` or an hfssl method model): what to export.
        repo_id (`str`): the Hub repository, created if needed.
        **export_kwargs: `encoder`, `image_size`, `mean`, `std`, `processor`, `ssl_model_subfolder` of `save_backbone`.

    Returns:
        The URL of the commit.
    """
    with tempfile.TemporaryDirectory() as staging:
        folder = save_backbone(model, staging, **export_kwargs)
        if model_card is not None:
            (folder / "README.md").write_text(str(model_card), encoding="utf-8")
        return push_folder_to_hub(folder, repo_id, token=token, private=private, commit_message=commit_message)


# ---- the model card -----------------------------------------------------------------------------------------------

_TEMPLATE = """{% macro table(header, rows) %}| {{ header | join(" | ") }} |
|{% for _ in header %}---|{% endfor %}
{% for row in rows %}| {{ row | join(" | ") }} |
{% endfor %}{% endmacro %}---
{{ card_data }}
---

# {{ model_name }}

{{ intro }}

## Evaluation

{% if metrics %}{{ table(["metric", "value"], metrics.items()) }}{% else %}No labelled evaluation was run.
{% endif %}
## Training

{{ steps }} optimizer steps in {{ runtime }} on {{ hardware }}. Final training loss: {{ final_loss }}{% if mean_loss %}
(mean over the run: {{ mean_loss }}){% endif %}.

{{ table(["hyperparameter", "value"], hyperparameters.items()) }}
### Training curve

{{ curve_summary }}
{% if curve_rows %}
{{ table(curve_columns, curve_rows) }}{% endif %}
## Usage
{% if location_note %}
{{ location_note }}
{% endif %}{% for title, code in usage %}
{% if title %}{{ title }}

{% endif %}```python
{{ code }}
```
{% endfor %}{% if files %}
## Files

{{ table(["path", "content"], files) }}{% endif %}"""


def _format(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unrecorded time"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(device)}"
    return f"CPU ({platform.processor() or platform.machine()})" if device.type == "cpu" else device.type


def training_curve(
    log_history: Sequence[Mapping[str, Any]], max_rows: int = 10, max_metrics: int = 4
) -> tuple[str, list[str], list[list[Any]]]:
    """Summarise the training entries (those with a `loss`) of `trainer.state.log_history`.

    Args:
        log_history (sequence of `dict`): `trainer.state.log_history`.
        max_rows (`int`, defaults to 10): rows of the table, evenly spaced, first and last included.
        max_metrics (`int`, defaults to 4): logged `"<objective>/<quantity>"` metrics shown as extra columns.

    Returns:
        A one-line summary (the mean loss over the first and the last tenth of the logged points, at least one
        point each), the column names and the table rows.
    """
    entries = [entry for entry in log_history if "loss" in entry and "step" in entry]
    if not entries:
        return "No training loss was logged (set `logging_steps`).", [], []
    tenth = max(1, len(entries) // 10)
    first, last = entries[:tenth], entries[-tenth:]
    start, end = (sum(entry["loss"] for entry in part) / tenth for part in (first, last))
    steps = [f"step {part[0]['step']}" + (f"-{part[-1]['step']}" if tenth > 1 else "") for part in (first, last)]
    trend = "fell" if end < start else "rose" if end > start else "stayed"
    summary = (f"The mean training loss {trend} from {start:.4g} ({steps[0]}) to {end:.4g} ({steps[1]}), over "
               f"{len(entries)} logged points.")
    metrics = sorted({key for entry in entries for key in entry if "/" in key})[:max_metrics]
    columns = ["step", "loss", *(["learning_rate"] if "learning_rate" in entries[-1] else []), *metrics]
    count = min(max_rows, len(entries))
    indices = sorted({round(i * (len(entries) - 1) / max(count - 1, 1)) for i in range(count)})
    return summary, columns, [[_format(entries[i].get(column, "")) for column in columns] for i in indices]


def encoder_usage(backbone: Backbone, location: str, hub: bool) -> str:
    """A Python snippet loading the exported encoder with timm or transformers alone and computing the features
    of one image as in training.

    Args:
        backbone (`Backbone`): the exported encoder.
        location (`str`): the Hub repository or the folder of the export.
        hub (`bool`): whether `location` is a Hub repository (timm then reads `hf-hub:`, else `local-dir:`).
    """
    mode = "L" if _channels(backbone) == 1 else "RGB"
    if backbone.library == "timm":
        return (
            "import timm\nimport torch\nfrom PIL import Image\n\n"
            f'model = timm.create_model("{"hf-hub:" if hub else "local-dir:"}{location}", pretrained=True).eval()'
            "  # num_classes=N adds a new head\n"
            "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
            f'image = Image.open("image.png").convert("{mode}")\n'
            "with torch.no_grad():\n"
            f"    features = model(transform(image).unsqueeze(0))  # (1, {backbone.feature_dim})"
        )
    pooled = {
        "cls": "outputs.last_hidden_state[:, 0]  # the first ([CLS]) token, as in training",
        "mean": f"outputs.last_hidden_state.mean(dim={'(2, 3)' if getattr(backbone.model.config, 'hidden_sizes', None) else '1'})  # mean pooling, as in training",
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


def _channels(backbone: Backbone) -> int:
    import timm  # here, not at module level: `import hfssl` stays light
    if backbone.library == "timm":
        return int(timm.models.get_model_input_config(backbone.model)["input_size"][0])
    return int(getattr(backbone.model.config, "num_channels", 3))


def _architecture(backbone: Backbone) -> str:
    if backbone.library == "timm":
        return backbone.model.pretrained_cfg.get("architecture") or str(backbone.name)
    return f"{type(backbone.model).__name__} ({backbone.model.config.model_type})"


def _pooling_description(backbone: Backbone) -> str:
    import timm  # here, not at module level: `import hfssl` stays light
    if backbone.library == "timm":
        return f"timm's global pool, {timm.models.get_model_args(backbone.model).get('global_pool', 'avg')}"
    return {"cls": "the [CLS] token", "mean": "mean pooling", "pooler": "the pooler output"}[backbone.pooling]


def _exported_image_size(folder: Path, backbone: Backbone) -> int:
    """The image side recorded by `save_backbone` in `folder` (timm's pretrained_cfg or the image processor), else
    the backbone's data config."""
    for name, keys in (("config.json", ("pretrained_cfg", "input_size")), ("preprocessor_config.json", ("size",))):
        value: Any = json.loads((folder / name).read_text()) if (folder / name).is_file() else None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, list):
            return int(value[-1])
        if isinstance(value, dict):
            return int(value.get("height") or value.get("shortest_edge"))
    return int(backbone.data_config["input_size"][-1])


def _method_hyperparameters(config: Any, backbone: Backbone) -> dict[str, Any]:
    """The backbone's architecture, then the fields a method config declares (its own and `SSLBackboneConfig`'s)
    without the nested dicts, `backbone_name` (the architecture, already in the table) and `pooling` (in the intro)."""
    names: list[str] = []
    for cls in reversed(type(config).__mro__):
        if cls.__module__.startswith("hfssl."):
            names += [name for name in vars(cls).get("__annotations__", {}) if name not in names]
    values = {name: getattr(config, name, None) for name in names if name not in ("pooling", "backbone_name")}
    values = {name: value for name, value in values.items() if value is not None and not isinstance(value, dict)}
    return {"backbone": _architecture(backbone), **values}


def _training_hyperparameters(args: Any) -> dict[str, Any]:
    return {
        "global_batch_size": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        "optimizer": "LARS" if getattr(args, "lars", False) else str(getattr(args.optim, "value", args.optim)),
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "max_steps": args.max_steps if args.max_steps > 0 else f"{args.num_train_epochs} epochs",
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
    }


def _data_description(dataset: str | None) -> str:
    """A local file or folder by its name (an absolute path means nothing on the Hub), anything else as given."""
    if not dataset:
        return "data not named by the training script"
    return f"the local data `{Path(dataset).name}`" if os.path.exists(dataset) else dataset


def write_model_card(folder: str | os.PathLike, trainer: Any, *, method: str | None = None, dataset: str | None = None,
                     repo_id: str | None = None, license: str = "other", metrics: Mapping[str, Any] | None = None,
                     hyperparameters: Mapping[str, Any] | None = None, usage: str | None = None,
                     architecture: str | None = None, pipeline_tag: str | None = None, encoder: str | None = None,
                     image_size: int | None = None, ssl_model_subfolder: str | None = SSL_MODEL_SUBFOLDER,
                     datasets: list[str] | None = None, tags: list[str] | None = None) -> ModelCard:
    """Write the model card (`README.md` with Hub metadata) of what `trainer` trained into `folder`, and return it.

    With `encoder`, the card describes an encoder exported by `save_backbone` from the backbone itself (library,
    architecture, sizes, the method config's hyperparameters, usage with timm or transformers alone and of the full
    model); without, a plain transformers model. Both: metrics (without Trainer's speed figures), the training
    arguments, steps, hardware, final loss and the logged training curve.

    Args:
        folder (`str` or `os.PathLike`): where `README.md` goes (the folder that is uploaded).
        trainer (`transformers.Trainer`): after `train()`; its model, arguments and `state.log_history` are read.
        method (`str`, *optional*): paper casing, e.g. "MoCo v2" (default: the model's class name).
        dataset (`str`, *optional*): what it was trained on, in words; a local path is shown by its name only.
        repo_id (`str`, *optional*): the Hub repository the folder goes to; the usage code loads from it. Without
            it, the code names the folder by its name and the card says so.
        license (`str`, defaults to `"other"`): the Hub license id of the weights (`"apache-2.0"`, `"mit"`, ...), as
            `Trainer.create_model_card(license=...)`; "other" when the data's terms are unknown.
        metrics (`Mapping`, *optional*): final figures, e.g. `{"kNN top-1 (k=200, T=0.1)": 0.91}`.
        hyperparameters (`Mapping`, *optional*): settings worth reproducing beyond the training arguments.
        usage (`str`, *optional*): Python code loading the model; `{path}` stands for where it is (plain case).
        architecture (`str`, *optional*): the plain case's model, default its class name.
        pipeline_tag (`str`, *optional*): the Hub task (default "image-feature-extraction" for an encoder).
        encoder (`str`, *optional*): the method model's attribute holding the exported encoder (`"backbone"`,
            `"teacher_backbone"`); selects the exported-encoder case.
        image_size (`int`, *optional*): the training image side (default: the one the export records).
        ssl_model_subfolder (`str`, *optional*): where `save_backbone` put the full model; None if it did not.
        datasets, tags (`list[str]`, *optional*): Hub dataset ids and extra tags for the metadata.
    """
    folder = Path(folder)
    model = getattr(trainer.model, "module", trainer.model)
    method, dataset, name = method or type(model).__name__, _data_description(dataset), folder.resolve().name
    location, args = repo_id or name, trainer.args
    hyperparameters = dict(hyperparameters or {})
    files: list[tuple[str, str]] = []
    if encoder is not None:
        backbone, _ = resolve_backbone(model, encoder)
        library, architecture, size = backbone.library, _architecture(backbone), image_size or _exported_image_size(folder, backbone)
        role = f"`{encoder}` (the EMA teacher's encoder)" if encoder.startswith("teacher") else "encoder"
        intro = (f"The {role} of a {method} model pretrained with hfssl on {dataset}: a {library} `{architecture}` that "
                 f"maps a {_channels(backbone)} x {size} x {size} image to a {backbone.feature_dim}-dimensional feature "
                 f"vector ({_pooling_description(backbone)}). It is saved in the {library} format and loads without hfssl.")
        usages = [(f"The encoder, with {library} alone:", encoder_usage(backbone, location, hub=repo_id is not None))]
        files.append(("`config.json`, `model.safetensors`", f"the encoder in the {library} format"))
        if library == "transformers":
            files.append(("`preprocessor_config.json`", f"its image processor (resize to {size} px, the training normalisation)"))
        if ssl_model_subfolder:
            parts = [part for part, _ in model.named_children()] + [part for part, _ in model.named_buffers(recurse=False)]
            intro += f" The full {method} model is in `{ssl_model_subfolder}/`; it needs hfssl."
            usages.append((
                f"The full {method} model ({', '.join(parts)}), with hfssl, to continue pretraining (e.g. with "
                "`hfssl.SSLTrainer`) or use its heads. It holds the model state, not the optimizer state: for an exact "
                "resume, use a Trainer checkpoint.",
                "import hfssl  # registers hfssl's model types with the Auto classes\nfrom transformers import AutoModel\n\n"
                f'ssl_model = AutoModel.from_pretrained("{location}", subfolder="{ssl_model_subfolder}")  # {type(model).__name__}',
            ))
            files.append((f"`{ssl_model_subfolder}/`", f"the full {method} model (`{type(model).__name__}`), read by `AutoModel` once `hfssl` is imported"))
        hyperparameters = {**_method_hyperparameters(model.config, backbone), **hyperparameters}
        pipeline_tag = pipeline_tag or "image-feature-extraction"
    else:
        library, architecture = "transformers", architecture or type(model).__name__
        intro = f"{method} pretraining of a `{architecture}` with hfssl, on {dataset}."
        registers = "import hfssl  # registers its model types\n" if type(model).__module__.startswith("hfssl.") else ""
        usage = usage or registers + 'from transformers import AutoModel\n\nmodel = AutoModel.from_pretrained("{path}")'
        usages = [("", usage.strip().replace("{path}", location))]
    location_note = None if repo_id else (
        f"Not uploaded when this card was written: `{name}` in the code stands for the path to this folder, or for "
        f"its Hub repository once uploaded (`hf upload <repo_id> {name}`{'; timm then reads `hf-hub:<repo_id>`' if library == 'timm' else ''}).")
    log_history = list(trainer.state.log_history)
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    final = next((entry for entry in reversed(log_history) if "train_runtime" in entry), {})
    summary, columns, rows = training_curve(log_history)
    processes = args.world_size
    slug = method.lower().split()[0].replace("-", "")
    card_data = ModelCardData(library_name=library, license=license, pipeline_tag=pipeline_tag, datasets=datasets,
                              tags=list(dict.fromkeys(["hfssl", "self-supervised", slug, *(tags or [])])))
    card = ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        model_name=repo_id.split("/")[-1] if repo_id else name,
        intro=intro,
        metrics={key: _format(value) for key, value in (metrics or {}).items() if not key.endswith(_SPEED_METRICS)},
        steps=trainer.state.global_step,
        runtime=_duration(final.get("train_runtime")),
        hardware=f"{_hardware(args.device)}, {processes} process{'es' if processes > 1 else ''}",
        final_loss=_format(float(losses[-1])) if losses else "not logged",
        mean_loss=_format(float(final["train_loss"])) if "train_loss" in final else None,
        hyperparameters={key: _format(value) for key, value in {**hyperparameters, **_training_hyperparameters(args)}.items()},
        curve_summary=summary,
        curve_columns=columns,
        curve_rows=rows,
        location_note=location_note,
        usage=usages,
        files=files,
    )
    card.save(folder / "README.md")
    return card
