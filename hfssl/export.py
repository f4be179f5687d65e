"""Export the encoder of an hfssl model in the native format of the library it came from, for use without hfssl.

- A **transformers** backbone becomes a plain transformers checkpoint (`config.json`, `model.safetensors`,
  `preprocessor_config.json` with the training resolution and normalisation): `AutoModel.from_pretrained(path)` and
  `AutoImageProcessor.from_pretrained(path)` load it.
- A **timm** backbone becomes timm's Hub layout, written by timm's own `timm.models.save_for_hf` (`config.json`
  with `architecture`, `model_args` and a `pretrained_cfg` holding the training resolution and normalisation;
  `model.safetensors`): `timm.create_model("hf-hub:<repo>", pretrained=True)` (or `"local-dir:<folder>"`) loads
  it, `num_classes=N` adds a fresh classifier for fine-tuning, and transformers' `AutoModel` reads it too (through
  its timm wrapper). A timm model changed after `timm.create_model` (hfssl's `small_image_stem=True`: timm's
  ResNet has no 3x3 stride-1 stem option) cannot be rebuilt by timm, and is refused with a message saying so.

Given an SSL method model (`SimCLRModel`, `MoCoModel`, ...), the full model (backbone, heads, teacher, queue) goes
to the `ssl_model/` subfolder as well, so `AutoModel.from_pretrained(path, subfolder="ssl_model")` (after
`import hfssl`) continues pretraining from the same folder or Hub repo.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import ModelCard
from torch import nn
from transformers import PreTrainedModel

from hfssl.hub import SSL_MODEL_SUBFOLDER, push_folder_to_hub
from hfssl.models.backbone import Backbone

logger = logging.getLogger(__name__)

# Entries of timm's pretrained_cfg that describe the weights the architecture was first published with; they do not
# describe the exported weights.
_TIMM_SOURCE_KEYS = ("tag", "hf_hub_id", "hf_hub_filename", "url", "file", "source", "origin_url", "paper_ids",
                     "paper_name", "license", "notes", "label_names", "label_descriptions")


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


def _timm_rebuild_args(model: nn.Module) -> dict[str, Any]:
    """The keyword arguments timm needs to rebuild `model`: those recorded by its factory and the current ones."""
    return {**getattr(model, "_model_args", {}), **timm.models.get_model_args(model)}


def native_export_problem(backbone: Backbone) -> str | None:
    """Why `backbone` cannot be exported natively, or None when it can.

    A timm model is rebuilt (on the meta device, no memory) from its architecture name and factory arguments, as
    `timm.create_model` would from the export, and compared layer by layer with the trained one: a module replaced
    after creation (hfssl's `small_image_stem`) would otherwise load into a different network or fail to load.
    """
    if backbone.library != "timm":
        return None
    model = backbone.model
    architecture = model.pretrained_cfg.get("architecture") or backbone.name
    with torch.device("meta"):
        rebuilt = timm.create_model(architecture, pretrained=False, **_timm_rebuild_args(model))
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


def _normalisation(backbone: Backbone, channels: int, image_size: int | None, mean: Sequence[float] | None,
                   std: Sequence[float] | None) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
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
    problem = native_export_problem(backbone)
    if problem is not None:
        raise ValueError(problem)
    model = backbone.model
    channels = int(timm.models.get_model_input_config(model)["input_size"][0])
    size, mean, std = _normalisation(backbone, channels, image_size, mean, std)
    data_config = {"input_size": (channels, size, size), "mean": mean, "std": std, "crop_pct": 1.0,
                   "interpolation": "bilinear"}
    timm.models.save_for_hf(model, folder, safe_serialization=True, data_config=data_config)
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
    classes = [get_image_processor_class_from_name(name) for name in names or () if name]
    classes = [cls for cls in classes if cls is not None]
    if not classes:
        logger.warning("No transformers image processor is known for model type %r; none exported (pass "
                       "`processor=` to save_backbone to include one).", config.model_type)
        return None
    cls = classes[0]
    size, mean, std = _normalisation(backbone, int(getattr(config, "num_channels", 3)), image_size, mean, std)
    default = cls()
    kwargs: dict[str, Any] = {"image_mean": list(mean), "image_std": list(std)}
    default_size = dict(getattr(default, "size", None) or {})
    kwargs["size"] = {"shortest_edge": size} if "shortest_edge" in default_size else {"height": size, "width": size}
    if getattr(default, "crop_size", None):
        kwargs["crop_size"] = {"height": size, "width": size}
    if hasattr(default, "crop_pct"):
        kwargs["crop_pct"] = 1.0
    return cls(**kwargs)


def save_backbone(
    model: nn.Module,
    save_directory: str | Path,
    *,
    encoder: str = "backbone",
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    processor: Any = None,
    ssl_model_subfolder: str | None = SSL_MODEL_SUBFOLDER,
) -> Path:
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


def save_towers(
    model: nn.Module,
    save_directory: str | os.PathLike,
    tokenizer: Any = None,
    image_size: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> dict[str, Path]:
    """Export both towers of a `DualEncoderModel` (CLIP / SigLIP) for use without hfssl, and the whole dual encoder,
    under `save_directory`:

    - `image_encoder/`: the image backbone in its library's format (`hfssl.export.save_backbone`: timm's Hub
      layout or a transformers checkpoint with its image processor);
    - `text_encoder/`: the text encoder (`AutoModel.from_pretrained`) and `tokenizer` (`AutoTokenizer`);
    - the folder itself: the `DualEncoderModel` (`AutoModel.from_pretrained` after `import hfssl`) and tokenizer.
    The projections and logit scale live only in the full model (the towers export the pooled features).

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


def push_backbone_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    model_card: ModelCard | str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload encoder with hfssl",
    **export_kwargs: Any,
) -> str:
    """`save_backbone` into a temporary folder, add the model card as `README.md`, and upload it in one commit
    through `huggingface_hub` (`hfssl.hub.push_folder_to_hub`).

    Args:
        model (`Backbone` or an hfssl method model): what to export.
        repo_id (`str`): the Hub repository, created if needed.
        model_card (`ModelCard` or `str`, *optional*): e.g. from `hfssl.hub.write_ssl_model_card`.
        token, private: as for `HfApi.create_repo`.
        **export_kwargs: `encoder`, `image_size`, `mean`, `std`, `processor`, `ssl_model_subfolder` of `save_backbone`.

    Returns:
        The URL of the commit.
    """
    with tempfile.TemporaryDirectory() as staging:
        folder = save_backbone(model, staging, **export_kwargs)
        if model_card is not None:
            (folder / "README.md").write_text(str(model_card), encoding="utf-8")
        return push_folder_to_hub(folder, repo_id, token=token, private=private, commit_message=commit_message)
