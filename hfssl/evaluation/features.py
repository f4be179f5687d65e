"""Extract backbone features of an image dataset for kNN or linear-probe evaluation.

Legend: N images, C channels, S image side, D feature dim.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn

from hfssl.distributed import gather_no_grad, is_distributed, rank, world_size
from hfssl.evaluation.knn import knn_accuracy


def images_to_tensor(images: Sequence, image_size: int, channels: int = 3) -> torch.Tensor:
    """PIL images or uint8 arrays, of any sizes, -> float tensor (N, C, S, S) in [0, 1], each bilinearly resized to
    S x S (antialiased, no augmentation) before they are stacked."""
    arrays = []
    for image in images:
        array = np.asarray(image.convert("L" if channels == 1 else "RGB") if hasattr(image, "convert") else image)
        arrays.append(array if array.ndim == 3 else array[:, :, None])
    if len({array.shape for array in arrays}) == 1:  # one size: one batched resize
        return _resized(np.stack(arrays), image_size, channels)
    return torch.cat([_resized(np.stack([array]), image_size, channels) for array in arrays])


def _resized(arrays: np.ndarray, image_size: int, channels: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, channels, S, S) in [0, 1]."""
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255.0
    if batch.shape[1] == 1 and channels == 3:
        batch = batch.expand(-1, 3, -1, -1)
    if batch.shape[-1] != image_size or batch.shape[-2] != image_size:
        size = (image_size, image_size)
        batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return batch


@torch.no_grad()
def extract_features(
    backbone: nn.Module, images: Sequence | Dataset, image_size: int, mean: Sequence[float], std: Sequence[float],
    channels: int = 3, batch_size: int = 512, device: str | torch.device | None = None,
    shard_across_processes: bool = True,
) -> torch.Tensor:
    """Features (N, D), on CPU, of every image under the backbone in eval mode.

    Under several processes (`torchrun`, `accelerate launch`), each process embeds a contiguous 1/W of the images
    and the shards are all-gathered, so every process returns all N features for 1/W of the work. Every process
    must then call it (it is a collective), as the evaluation callbacks and recipes do.

    Args:
        backbone (`nn.Module`): maps (B, C, S, S) to (B, D), e.g. `SimCLRModel.backbone`.
        images (sequence of PIL images or uint8 arrays, or a `datasets.Dataset` with an "image" column): a dataset
            is read `batch_size` rows at a time, so only one batch of images is decoded at once.
        image_size (`int`): S, the side every image is resized to (the images may have different sizes).
        mean, std (sequence of `float`): the normalisation used in training (one value per channel).
        channels (`int`, defaults to 3): C.
        batch_size (`int`, defaults to 512): images per forward pass.
        device (*optional*): where to run; the backbone's device by default.
        shard_across_processes (`bool`, defaults to `True`): split the work over the processes (see above); `False`
            embeds every image on this process alone (e.g. when only the main process evaluates).
    """
    device = device or next(backbone.parameters()).device
    total, first, last = len(images), 0, len(images)
    shards = world_size() if shard_across_processes and is_distributed() else 1
    if shards > 1:
        per_process = -(-total // shards)
        first, last = min(rank() * per_process, total), min((rank() + 1) * per_process, total)
    was_training = backbone.training
    backbone.eval()
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    features = []
    for start in range(first, last, batch_size):
        rows = images[start : min(start + batch_size, last)]
        batch = images_to_tensor(rows["image"] if isinstance(images, Dataset) else rows, image_size, channels)
        batch = (batch - mean_tensor) / std_tensor
        features.append(backbone(batch.to(device)).float())
    backbone.train(was_training)
    if shards == 1:
        return torch.cat(features).cpu()
    # Every shard padded to the same length for the all-gather, then trimmed back to N rows in image order.
    dim = int(gather_no_grad(torch.tensor([features[0].shape[1] if features else -1], device=device)).max())
    local = torch.cat(features) if features else torch.empty(0, dim, device=device)
    return gather_no_grad(F.pad(local, (0, 0, 0, per_process - local.shape[0])))[:total].cpu()


def knn_evaluate(
    backbone: nn.Module, memory_dataset, query_dataset, image_size: int, mean: Sequence[float], std: Sequence[float],
    channels: int = 3, k: int = 200, temperature: float = 0.1, shard_across_processes: bool = True,
) -> float:
    """Weighted-kNN top-1 (`hfssl.evaluation.knn`) of a backbone: `memory_dataset` (e.g. the train split) labels
    `query_dataset` (the test split). Both are `datasets.Dataset`s with "image" and "label" columns. A collective
    under several processes, as `extract_features` is."""
    options = dict(channels=channels, shard_across_processes=shard_across_processes)
    memory = extract_features(backbone, memory_dataset, image_size, mean, std, **options)
    queries = extract_features(backbone, query_dataset, image_size, mean, std, **options)
    return knn_accuracy(
        memory, torch.tensor(memory_dataset["label"]), queries, torch.tensor(query_dataset["label"]), k, temperature
    )


def feature_extractor(model: nn.Module) -> nn.Module:
    """The `(B, C, S, S) -> (B, D)` encoder to evaluate: the `backbone` of an hfssl method model (`SimCLRModel`,
    `MoCoModel`, ...), or `model` itself (an hfssl `Backbone`, or any module mapping images to features)."""
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    backbone = getattr(model, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else model


def resolve_preprocessing(
    encoder: nn.Module, image_size: int | None, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[int, Sequence[float], Sequence[float]]:
    """`image_size`, `mean` and `std`, those given or else the encoder's `data_config` (the normalisation the hfssl
    recipes train with; an `SSLTrainer` sets its input size to the side it trained at)."""
    data_config = getattr(encoder, "data_config", None) or {}
    image_size = image_size if image_size is not None else int((data_config.get("input_size") or (3, 224, 224))[-1])
    mean = mean if mean is not None else data_config.get("mean")
    std = std if std is not None else data_config.get("std")
    if mean is None or std is None:
        raise ValueError(
            f"{type(encoder).__name__} has no data_config with the normalisation; pass mean= and std= (one value per "
            "input channel, those used in training)."
        )
    return image_size, mean, std


def dataset_features(
    model: nn.Module, dataset, image_size: int | None = None, mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None, batch_size: int = 512, shard_across_processes: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features (N, D) and labels (N,) of a `datasets.Dataset` with "image" (and "label") columns under any hfssl
    model or backbone, in eval mode, without gradient, batch by batch (a collective under several processes, as
    `extract_features` is). `image_size`, `mean`, `std` and the channel count default to the backbone's `data_config`.

    Returns:
        `(torch.Tensor of shape (N, D), torch.Tensor of shape (N,) or None)` on CPU; labels are None without a
        "label" column.
    """
    if "image" not in dataset.column_names:
        raise ValueError(
            f"dataset_features needs an 'image' column; the dataset has {dataset.column_names}. Load it with "
            "hfssl.data.images.load_image_dataset, which renames the image column to 'image'."
        )
    encoder = feature_extractor(model)
    image_size, mean, std = resolve_preprocessing(encoder, image_size, mean, std)
    features = extract_features(encoder, dataset, image_size, mean, std, len(mean), batch_size,
                                shard_across_processes=shard_across_processes)  # fmt: skip
    labels = torch.tensor(dataset["label"]) if "label" in dataset.column_names else None
    return features, labels


def load_encoder(name_or_path: str, pretrained: bool = True) -> nn.Module:
    """The encoder to evaluate, from any of: a saved hfssl method model (`save_pretrained` folder or checkpoint: its
    `backbone`), a backbone folder exported by `hfssl.export.save_backbone` (timm or transformers layout), a timm model
    name, or a transformers checkpoint (folder or Hub id).

    The result is an hfssl `Backbone` (`(B, C, S, S) -> (B, D)`) whose `data_config` holds the input size and the
    normalisation: the training ones when the folder records them (an hfssl model's `training_image_size`, timm's
    `pretrained_cfg`, a transformers `preprocessor_config.json`), otherwise the model's defaults.

    Args:
        name_or_path (`str`): the folder, timm name or Hub id.
        pretrained (`bool`, defaults to `True`): load the weights of a timm name or transformers id (timm names
            offline: pass `False` for random weights). Folders always load their weights.
    """
    from hfssl.models.backbone import Backbone

    folder = Path(name_or_path)
    if not folder.is_dir():
        return Backbone(name_or_path, pretrained=pretrained)
    if not (folder / "config.json").exists():
        raise ValueError(
            f"{name_or_path} is a folder without config.json; pass a folder written by save_pretrained, "
            "hfssl.export.save_backbone or timm's save_for_hf, a timm model name, or a Hub id."
        )
    config = json.loads((folder / "config.json").read_text())
    if str(config.get("model_type", "")).startswith("hfssl_"):
        from transformers import AutoModel

        import hfssl.models  # noqa: F401  registers the hfssl method models with the Auto classes

        return feature_extractor(AutoModel.from_pretrained(name_or_path))
    if "architecture" in config:  # timm's Hub layout
        return Backbone(f"local-dir:{name_or_path}", library="timm", pretrained=True)
    backbone = Backbone(name_or_path, library="transformers", pretrained=True)
    if (folder / "preprocessor_config.json").exists():
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        size = processor.get("size") or {}
        side = size.get("height", size.get("shortest_edge")) if isinstance(size, dict) else size
        channels, default_side = backbone.data_config["input_size"][0], backbone.data_config["input_size"][-1]
        side = int(side or default_side)
        backbone.data_config = {
            "input_size": (channels, side, side),
            "mean": tuple(processor.get("image_mean", backbone.data_config["mean"])),
            "std": tuple(processor.get("image_std", backbone.data_config["std"])),
        }
    return backbone
