"""Turn any image input into a uint8 (C, H, W) tensor, and stack a list of them into one batch.

Accepted inputs (one image each):
- PIL images of any mode (L, LA, RGB, RGBA, P, CMYK, I;16, I, F, 1, ...),
- numpy arrays, uint8 (H, W) or (H, W, C) with C in {1, 3, 4},
- torch tensors (C, H, W), uint8 or floating point in [0, 1] (other float values raise: divide 0-255 by 255),
- the dicts the `datasets` Image feature yields with `decode=False`: `{"bytes": ..., "path": ...}`.

Legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

# Float tensors may overshoot [0, 1] by rounding error: up to half a uint8 step, they round to 0 or 255 anyway.
FLOAT_TOLERANCE = 0.5 / 255.0
ALLOWED_INPUTS = "a PIL image, a uint8 numpy array (H, W) or (H, W, C), a tensor (C, H, W) or a datasets Image dict"
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
TWELVE_BIT_MAX = 4095  # a 16-bit image whose values all lie in [1, 4095] looks like 12-bit data (medical, microscopy)
logger = logging.getLogger(__name__)
_warned_twelve_bit = False  # the 12-bit warning is logged once per process


def _sixteen_bit_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """0-65535 -> 0-255 by the full 16-bit range: round(value / 257), so 65535 -> 255 and v * 257 -> v exactly."""
    global _warned_twelve_bit
    high = int(array.max()) if array.size else 0
    if 0 < high <= TWELVE_BIT_MAX and not _warned_twelve_bit:
        _warned_twelve_bit = True
        logger.warning(
            "an image of mode %s has values up to %d only: it looks like 12-bit data stored in 16 bits, which "
            "decodes almost black (16-bit images are mapped by their full range, value / 257). If the data is 12-bit, "
            "rescale it to 16 bits first, e.g. Image.fromarray(np.asarray(image).astype(np.uint16) << 4), or re-save "
            "the files scaled by 16. (Logged once.)", mode, high,
        )
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Decode a PIL image into a uint8 array (H, W) or (H, W, 3) without losing high bit depths: "L" and "RGB" as
    they are; "1" and "LA" to "L"; 16-bit modes (16-bit PNG, TIFF) by `_sixteen_bit_to_uint8`, as torchvision's
    `ToDtype(torch.uint8, scale=True)` for uint16; "I" kept within [0, 255] and read as 16-bit within [0, 65535]
    (older Pillow opens 16-bit PNGs as "I"); "F" scaled by 255 within [0, 1] and kept (rounded) within [0, 255];
    other "I" and "F" stretched from [min, max] to [0, 255]; every other mode (RGBA, P, CMYK, ...) to "RGB"."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.array(image)
    if mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_uint8(np.asarray(image), mode)
    if mode in ("I", "F"):
        array = np.asarray(image).astype(np.float64)
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if mode == "F" and low >= 0.0 and high <= 1.0:
            return (array * 255.0 + 0.5).astype(np.uint8)
        if high <= 255.0 and low >= 0.0:
            return (array + 0.5).astype(np.uint8)
        if mode == "I" and low >= 0.0 and high <= 65535.0:
            return _sixteen_bit_to_uint8(array.astype(np.uint32), mode)
        return ((array - low) / max(high - low, 1e-12) * 255.0 + 0.5).astype(np.uint8)
    if mode in ("1", "LA", "La"):
        return np.array(image.convert("L"))
    return np.array(image.convert("RGB"))  # RGBA, P, PA, CMYK, YCbCr, LAB, HSV, RGBX, ...


def _dict_to_pil(example: dict) -> Image.Image:
    if example.get("bytes") is not None:
        return Image.open(io.BytesIO(example["bytes"]))
    if example.get("path") is not None:
        return Image.open(example["path"])
    raise ValueError(f"the image dict has neither 'bytes' nor 'path' (keys: {sorted(example)})")


def to_uint8_chw(image: Any, channels: int = 3) -> torch.Tensor:
    """Decode one image into a uint8 tensor; PIL images of high bit depth by the range of their mode (`_pil_to_array`).

    Args:
        image: one image in any accepted form (see the module docstring).
        channels (`int`): 3 replicates grayscale to RGB (what timm and HF backbones expect);
            1 converts colour to luma (ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B).

    Returns:
        `torch.Tensor` of shape (channels, H, W), dtype uint8. A new tensor: the input is never modified.

    Raises:
        TypeError: for an input of another kind or dtype. ValueError: for a float tensor outside [0, 1], and for an
        empty image (a side of 0 pixels). OSError/ValueError (from PIL) for unreadable data.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} is not supported; use 1 (grayscale) or 3 (RGB).")
    if isinstance(image, dict):
        image = _dict_to_pil(image)
    if isinstance(image, Image.Image):
        image.load()  # surfaces truncated / corrupt files here
        image = _pil_to_array(image)  # uint8 (H, W) or (H, W, 3)
    if isinstance(image, np.ndarray):
        array = image[..., None] if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or array.dtype != np.uint8:
            raise TypeError(
                f"numpy image of shape {image.shape} and dtype {image.dtype} is not supported; use a uint8 (0-255) "
                "array (H, W) or (H, W, C) with C in 1, 3, 4."
            )
        tensor = torch.from_numpy(np.array(array[..., :3], copy=True)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        image = image.unsqueeze(0) if image.ndim == 2 else image
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise TypeError(
                f"tensor image of shape {tuple(image.shape)} is not supported; use (C, H, W) with C in 1, 3, 4."
            )
        image = image[:3]
        if image.dtype == torch.uint8:
            tensor = image.clone()
        elif image.is_floating_point():
            image = image.detach().float()
            if image.numel() and not (image.min() >= -FLOAT_TOLERANCE and image.max() <= 1.0 + FLOAT_TOLERANCE):
                raise ValueError(
                    f"float tensor image has values in [{image.min().item():g}, {image.max().item():g}]; values must "
                    "be in [0, 1]: divide a 0-255 image by 255 (or pass it as uint8), and undo any normalisation."
                )
            tensor = (image.clamp(0, 1) * 255.0).round().to(torch.uint8)
        else:
            raise TypeError(f"tensor image of dtype {image.dtype} is not supported; use uint8 or float in [0, 1].")
    else:
        raise TypeError(f"cannot read an image from {type(image).__name__}; expected {ALLOWED_INPUTS}.")
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        height, width = tensor.shape[1], tensor.shape[2]
        raise ValueError(f"the image is empty ({height} x {width} pixels, H x W); every side must be >= 1")
    if tensor.shape[0] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        tensor = (tensor.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    elif tensor.shape[0] == 1 and channels == 3:
        tensor = tensor.expand(3, -1, -1).contiguous()
    return tensor


def stack_padded(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images of possibly different sizes into one zero-padded batch.

    Args:
        images (`list` of `torch.Tensor` of shape (C, H_i, W_i)): same dtype and channel count.

    Returns:
        batch (`torch.Tensor` of shape (B, C, max H_i, max W_i)): image i sits in the top-left corner; in
            channels-last memory when all sizes agree (decoded PIL and numpy images are HWC already, so that is a
            plain copy, and it is the layout the crop kernel wants).
        sizes (`torch.Tensor` of shape (B, 2)): the (H_i, W_i) of each image, float32.
    """
    heights = [image.shape[1] for image in images]
    widths = [image.shape[2] for image in images]
    sizes = torch.tensor(list(zip(heights, widths)), dtype=torch.float32)
    if len(set(heights)) == 1 and len(set(widths)) == 1:
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2), sizes
    batch = images[0].new_zeros((len(images), images[0].shape[0], max(heights), max(widths)))
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


def image_path(image: Any) -> str | None:
    """The file an image comes from, when known: the 'path' of a `datasets` Image dict, or a PIL image's filename."""
    path = image.get("path") if isinstance(image, dict) else getattr(image, "filename", None)
    return path if isinstance(path, str) and path else None


def _open_lazily(image: Any) -> Any:
    """A `datasets` Image dict opened as a (not yet decoded) PIL image, None if it cannot be opened; else `image`."""
    if not isinstance(image, dict):
        return image
    try:
        return _dict_to_pil(image)
    except (OSError, ValueError, SyntaxError):
        return None


def decode_examples(
    examples: list[dict], image_column: str, channels: int, skip_invalid: bool = False
) -> tuple[list[torch.Tensor], list[int]]:
    """Decode the image of every example, naming the example index (and the file, when known) when one cannot be read
    (`to_uint8_chw` or PIL raises).

    Args:
        examples (`list[dict]`): the batch as the DataLoader hands it to a collator.
        image_column (`str`): key of the image in each example.
        channels (`int`): 1 or 3, see `to_uint8_chw`.
        skip_invalid (`bool`): drop unreadable images instead of raising.

    Returns:
        images (`list` of `torch.Tensor` of shape (C, H_i, W_i), uint8) and the indices of the examples kept.
    """
    if not examples:
        raise ValueError("the collator received an empty batch; pass at least one example.")
    images, kept = [], []
    for index, example in enumerate(examples):
        if not isinstance(example, dict) or image_column not in example:
            keys = sorted(example) if isinstance(example, dict) else type(example).__name__
            raise ValueError(
                f"example {index} has no '{image_column}' column (got {keys}); set image_column= to the name of "
                "the image column, and remove_unused_columns=False in TrainingArguments so Trainer keeps it."
            )
        try:
            images.append(to_uint8_chw(example[image_column], channels))
            kept.append(index)
        # PIL raises OSError/ValueError/SyntaxError for corrupt or truncated files; to_uint8_chw raises TypeError for
        # an unsupported kind, shape or dtype (kept a TypeError) and ValueError for out-of-range floats.
        except (OSError, ValueError, SyntaxError, TypeError) as error:
            if not skip_invalid:
                path = image_path(example[image_column])
                where = f", file {path!r}" if path else ""
                raise (TypeError if isinstance(error, TypeError) else ValueError)(
                    f"could not read the image of example {index} (column '{image_column}'{where}): {error}. Remove "
                    "or repair that image, or pass skip_invalid_images=True to the collator (--skip_invalid_images in "
                    "the recipes) to skip such images (their count is logged)."
                ) from error
    if not images:
        raise ValueError(f"none of the {len(examples)} images in the batch could be read; check the dataset files.")
    return images, kept


def decode_batch(
    examples: list[dict], image_column: str, channels: int, skip_invalid: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """`decode_examples` then `stack_padded`, in one step.

    Batches of same-size 8-bit PIL images ("RGB", or "L" for any `channels`; `datasets` Image dicts are opened first)
    are copied straight into one (B, H, W, C) array, with no tensor per image; any other batch, or an image that fails
    to load, goes through `decode_examples` (which names the example) and `stack_padded`.

    Args:
        examples, image_column, channels, skip_invalid: as for `decode_examples`.

    Returns:
        batch (`torch.Tensor` of shape (B, C, H, W), uint8), sizes (`torch.Tensor` of shape (B, 2), float32) and the
        indices of the examples kept, as `stack_padded` and `decode_examples` return them.
    """
    given = [example.get(image_column) if isinstance(example, dict) else None for example in examples]
    pil_images = [_open_lazily(image) for image in given]  # `datasets` Image dicts (decode=False) opened, not decoded
    modes = ("RGB", "L") if channels == 3 else ("L",)
    size = pil_images[0].size if pil_images and isinstance(pil_images[0], Image.Image) else (0, 0)
    if channels in (1, 3) and min(size) > 0:
        if all(isinstance(image, Image.Image) and image.mode in modes and image.size == size for image in pil_images):
            width, height = size
            array = np.empty((len(examples), height, width, channels), dtype=np.uint8)
            try:
                for index, image in enumerate(pil_images):
                    pixels = np.asarray(image)  # decodes (and raises for a truncated file)
                    array[index] = pixels[..., None] if pixels.ndim == 2 else pixels
            except (OSError, ValueError, SyntaxError):
                pass  # decode again one by one, to name the example (or skip it)
            else:
                sizes = torch.tensor([[float(height), float(width)]]).expand(len(examples), 2).contiguous()
                return torch.from_numpy(array).permute(0, 3, 1, 2), sizes, list(range(len(examples)))
    for image, opened in zip(given, pil_images):  # close the files opened here; decode_examples opens them again
        if isinstance(image, dict) and opened is not None:
            opened.close()
    images, kept = decode_examples(examples, image_column, channels, skip_invalid)
    return (*stack_padded(images), kept)


def collate_columns(examples: list[dict], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Batch the non-image columns: numbers and same-shape arrays become tensors, anything else a list.

    A `label` column is renamed `labels`, as transformers' collators do, unless `labels` already exists. `exclude`
    names the columns to leave out (the image column).

    Returns:
        `dict` mapping column name to a tensor of shape (B, ...) or a list of length B.
    """
    batch: dict[str, Any] = {}
    for key in examples[0]:
        if key in exclude:
            continue
        values = [example[key] for example in examples]
        name = "labels" if key == "label" and "labels" not in examples[0] else key
        if all(isinstance(value, (bool, int, float, np.number)) for value in values):
            batch[name] = torch.tensor(values)
        elif all(isinstance(value, torch.Tensor) for value in values) and len({v.shape for v in values}) == 1:
            batch[name] = torch.stack(values)
        elif all(isinstance(value, np.ndarray) for value in values) and len({v.shape for v in values}) == 1:
            batch[name] = torch.from_numpy(np.stack(values))
        else:
            batch[name] = values
    return batch
