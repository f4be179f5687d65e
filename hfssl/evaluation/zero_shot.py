"""Zero-shot classification and image-text retrieval for dual encoders (CLIP, Radford et al. 2021, sections 3.1.4
and 3.1.5; retrieval as recall@k on Flickr30k / MS-COCO, table 13).

Legend: N images, T texts, K classes, E templates, P embedding dim.

The model is anything with `get_image_features(pixel_values) -> (N, P)` and
`get_text_features(input_ids, attention_mask) -> (T, P)` (`DualEncoderModel`, transformers' `CLIPModel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hfssl.evaluation.features import images_to_tensor


@torch.no_grad()
def encode_images(
    model: Any, images: Sequence, image_size: int, mean: Sequence[float], std: Sequence[float], channels: int = 3,
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised image embeddings (N, P) on CPU, images resized to `image_size` without augmentation.

    Args:
        model: has `get_image_features`.
        images (sequence of PIL images or uint8 arrays): e.g. `dataset["image"]`.
        image_size (`int`), mean, std (sequence of `float`), channels (`int`): the training preprocessing.
        batch_size (`int`, defaults to 256): images per forward pass.
    """
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    embeddings = []
    for start in range(0, len(images), batch_size):
        batch = (images_to_tensor(images[start : start + batch_size], image_size, channels) - mean_tensor) / std_tensor
        embeddings.append(model.get_image_features(batch.to(device)).float().cpu())
    model.train(was_training)
    return F.normalize(torch.cat(embeddings), dim=1)


@torch.no_grad()
def encode_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 77, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings (T, P) on CPU.

    Args:
        model: has `get_text_features`; tokenizer: its transformers tokenizer.
        max_length (`int`, defaults to 77): truncation, as in training.
        batch_size (`int`, defaults to 256): texts per forward pass.
    """
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    embeddings = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        tokens = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        features = model.get_text_features(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        embeddings.append(features.float().cpu())
    model.train(was_training)
    return F.normalize(torch.cat(embeddings), dim=1)


@torch.no_grad()
def zero_shot_classifier(
    model: Any, tokenizer: Any, class_names: Sequence[str], templates: Sequence[str], max_length: int = 77
) -> torch.Tensor:
    """Class embeddings (K, P) from prompts: for each class, the normalised mean of its normalised template embeddings.

    Args:
        model, tokenizer: see `encode_texts`.
        class_names (sequence of `str`): K class names, in label order.
        templates (sequence of `str`): E templates with one `{}` for the class name, e.g. `"a photo of a {}."`.
    """
    if not class_names or not templates:
        raise ValueError(
            f"need at least one class name and one template; got {len(class_names)} and {len(templates)}."
        )
    bad = [template for template in templates if "{}" not in template]
    if bad:
        raise ValueError(f"every template needs a '{{}}' for the class name; these have none: {bad[:3]}.")
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = encode_texts(model, tokenizer, prompts, max_length).view(len(class_names), len(templates), -1)
    return F.normalize(F.normalize(embeddings, dim=2).mean(dim=1), dim=1)


def zero_shot_classification(
    model: Any, tokenizer: Any, images: Sequence, labels: Sequence[int] | torch.Tensor, class_names: Sequence[str],
    templates: Sequence[str], image_size: int, mean: Sequence[float], std: Sequence[float], channels: int = 3,
    max_length: int = 77, batch_size: int = 256,
) -> dict[str, float]:
    """Zero-shot `{"top1": ...}` (and `"top5"` with at least 6 classes) accuracy in [0, 1] of a dual encoder on
    labelled images.

    Args:
        model, tokenizer: see `encode_images` and `encode_texts`.
        images (sequence of PIL images or uint8 arrays), labels (N ints in `range(K)`): the evaluation set.
        class_names (sequence of `str`), templates (sequence of `str`): see `zero_shot_classifier`.
        image_size, mean, std, channels: the training preprocessing.
        max_length, batch_size: see `encode_texts`.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels; pass one label per image.")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must lie in [0, {len(class_names)}) to index class_names; got {labels.min()}..{labels.max()}."
        )
    classifier = zero_shot_classifier(model, tokenizer, class_names, templates, max_length)
    logits = encode_images(model, images, image_size, mean, std, channels, batch_size) @ classifier.T  # (N, K)
    ranked = logits.argsort(dim=1, descending=True)
    scores = {"top1": float((ranked[:, 0] == labels).float().mean())}
    if len(class_names) > 5:
        scores["top5"] = float((ranked[:, :5] == labels[:, None]).any(1).float().mean())
    return scores


def image_text_retrieval(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
    text_to_image: Sequence[int] | torch.Tensor | None = None,
    image_labels: Sequence[int] | torch.Tensor | None = None, text_labels: Sequence[int] | torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k in both directions, by cosine similarity: image -> text recall@k is the fraction of images with a
    matching text among their k most similar texts, and text -> image the reverse.

    Args:
        image_embeddings (`torch.Tensor` of shape `(N, P)`), text_embeddings (`torch.Tensor` of shape `(T, P)`).
        text_to_image (N-indexed ints of length T, *optional*): the image each text describes (COCO: 5 texts per
            image). Instance-level retrieval.
        image_labels (length N), text_labels (length T) (*optional*): class labels; an image and a text match when
            their labels are equal. Class-level retrieval, for captions generated from class templates.
        ks (sequence of `int`, defaults to (1, 5, 10)): the k of recall@k.

    Returns:
        `dict` with `"image_to_text/recall@k"` and `"text_to_image/recall@k"` for each k.
    """
    if (text_to_image is None) == (image_labels is None or text_labels is None):
        raise ValueError(
            "pass either text_to_image (the image index of every text) or both image_labels and text_labels "
            "(class-level matches), not both or neither."
        )
    images = F.normalize(image_embeddings.float(), dim=1)
    texts = F.normalize(text_embeddings.float(), dim=1)
    if text_to_image is not None:
        text_to_image = torch.as_tensor(text_to_image, dtype=torch.long)
        if text_to_image.shape != (texts.shape[0],):
            raise ValueError(f"text_to_image needs one image index per text ({texts.shape[0]}); got shape "
                             f"{tuple(text_to_image.shape)}.")  # fmt: skip
        matches = torch.arange(images.shape[0])[:, None] == text_to_image[None, :]  # (N, T)
    else:
        image_labels, text_labels = torch.as_tensor(image_labels), torch.as_tensor(text_labels)
        if len(image_labels) != images.shape[0] or len(text_labels) != texts.shape[0]:
            raise ValueError(f"got {images.shape[0]} images and {texts.shape[0]} texts but {len(image_labels)} image "
                             f"labels and {len(text_labels)} text labels; pass one label each.")  # fmt: skip
        matches = image_labels[:, None] == text_labels[None, :]
    similarity = images @ texts.T  # (N, T)
    scores = {}
    for k in ks:
        top_texts = similarity.topk(min(k, texts.shape[0]), dim=1).indices  # (N, k)
        top_images = similarity.T.topk(min(k, images.shape[0]), dim=1).indices  # (T, k)
        scores[f"image_to_text/recall@{k}"] = float(matches.gather(1, top_texts).any(1).float().mean())
        scores[f"text_to_image/recall@{k}"] = float(matches.T.gather(1, top_images).any(1).float().mean())
    return scores
