"""`DataCollatorForMultiView`: a batch of images -> several augmented views per image (SimCLR, MoCo, BYOL, DINO).

The whole batch is augmented at once: images are decoded to uint8 and stacked, each crop is resized with
torch's uint8 antialiased kernel (as torchvision's `RandomResizedCrop`), then the photometric ops run batched,
in place on the float batch, with per-sample random parameters. On CPU each view's crops are made in the order
of their colour-jitter op orders, so that jitter runs in place on contiguous rows, in a float buffer the thread
reuses; the finished rows go back to example order in the output (in a DataLoader worker, written in that order
into a fresh shared-memory file, which the DataLoader passes to the main process, and whose pages the worker
frees later, not the main process). Optionally the collator stops
after the geometric part and returns uint8 crops plus the drawn photometric parameters, and `apply_photometric`
finishes the views on the accelerator.

Legend: B batch, C channels, S view side, V views.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import get_worker_info

from hfssl.augmentations.geometric import random_resized_crops
from hfssl.augmentations.image_io import collate_columns, decode_batch
from hfssl.augmentations.normalization import IMAGENET_MEAN, IMAGENET_STD, normalization_from
from hfssl.augmentations.photometric import LUMA, jitter_order
from hfssl.augmentations.presets import ViewAugmentation, byol_views, dino_views, moco_v2_views, simclr_views
from hfssl.augmentations.seeding import WorkerSeededGenerator

logger = logging.getLogger(__name__)
CHUNK_VALUES = 1 << 24  # photometric ops run on chunks of about this many values (64 MB of float32) on CPU


_BUFFERS = threading.local()  # per thread: float work batches reused from call to call, by shape


def _writes_through_memfd(device: torch.device) -> bool:
    """Whether this process is a DataLoader worker that hands batches over by file descriptor (Linux)."""
    return (
        device.type == "cpu"
        and get_worker_info() is not None
        and hasattr(os, "memfd_create")
        and torch.multiprocessing.get_sharing_strategy() == "file_descriptor"
    )


def _work_buffer(shape: torch.Size) -> torch.Tensor:
    """An uninitialised CPU float32 tensor that this thread reuses call after call (its pages stay mapped: no page
    faults), for results that are copied out before the next call. One per shape, a few shapes kept."""
    buffers = _BUFFERS.__dict__.setdefault("by_shape", {})
    key = tuple(shape)
    if key not in buffers:
        if len(buffers) >= 4:  # e.g. a smaller last batch every epoch: keep a few shapes only
            buffers.clear()
        buffers[key] = torch.empty(shape, dtype=torch.float32)
    return buffers[key]


def _new_batch(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """An uninitialised float32 tensor for the collator to work in: in a DataLoader worker, a reused buffer whose
    result `_to_shared_memory` copies out; otherwise a new tensor, which is returned."""
    if _writes_through_memfd(device):
        return _work_buffer(shape)
    return torch.empty(shape, dtype=torch.float32, device=device)


def _to_shared_memory(tensor: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of a contiguous CPU tensor (of its rows in the order `rows`, if given) in a new shared-memory file,
    for the DataLoader to pass to the main process by file descriptor, as it passes the tensors `default_collate`
    makes in shared memory.

    The bytes go in with `pwrite` / `pwritev` into a fresh `memfd`, from a buffer this worker reuses, so this
    process never touches the shared pages through a mapping: writing a view into freshly mapped shared memory
    costs a page fault per 4 kB page (7,000 for a 256 x 3 x 96 x 96 float view, ~14 ms per view on the 2-core VM,
    against ~10 ms for the file write), as does unmapping it after the hand-over. `pwritev` writes the rows in
    the given order, so putting them back in example order costs no extra pass."""
    try:
        return _memfd_copy(tensor, rows)
    except OSError as error:  # e.g. out of file descriptors or memory: a private copy, which the DataLoader shares itself
        logger.warning("could not write the views to a memfd (%s); handing over a private copy instead", error)
        return tensor.clone() if rows is None else tensor.index_select(0, rows)


def _memfd_copy(tensor: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    nbytes = tensor.numel() * tensor.element_size()
    data = memoryview(tensor.numpy()).cast("B")
    if rows is None:
        pieces = [data]
    else:
        row_bytes = nbytes // max(1, tensor.shape[0])
        pieces = [data[row * row_bytes : (row + 1) * row_bytes] for row in rows.tolist()]
    fd = os.memfd_create("hfssl-views", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, nbytes)
        offset = 0
        for start in range(0, len(pieces), 512):  # at most IOV_MAX (1024) buffers a call
            chunk = pieces[start : start + 512]
            written = os.pwritev(fd, chunk, offset)
            for piece in chunk:  # a short write (not expected on tmpfs): finish piece by piece
                done = min(len(piece), max(0, written))
                while done < len(piece):
                    done += os.pwrite(fd, piece[done:], offset + done)
                written -= len(piece)
                offset += len(piece)
        storage = torch.UntypedStorage._new_shared_fd_cpu(fd, nbytes)  # maps the file (and keeps its own descriptor)
    except BaseException:
        os.close(fd)
        raise
    _hold_until_later(fd, nbytes)
    return torch.empty(0, dtype=tensor.dtype).set_(storage, 0, tensor.shape)


_HELD: collections.deque = collections.deque()  # (fd, bytes) of this worker's last memfds, oldest first
HOLD_BYTES, HOLD_COUNT = 1 << 27, 8  # a worker keeps its last memfds open up to this many bytes and files (>= 1)


def _hold_until_later(fd: int, nbytes: int) -> None:
    """Keep `fd` open a while, closing the oldest held ones beyond `HOLD_BYTES` or `HOLD_COUNT`.

    A shared-memory file's pages are freed by whoever closes it last. Once the main process has used a batch
    (a step later), this worker's descriptor is the last one, so the ~7 ms it takes to free a 96 px batch's 14,000
    pages is spent here, in the worker, not in the training process, which waits on nothing else; if the main
    process still holds the batch, it frees the pages when it lets go, as before. The pages stay allocated that
    much longer: at most HOLD_BYTES (128 MB) more per worker, in at most HOLD_COUNT (8) descriptors."""
    _HELD.append((fd, nbytes))
    held = sum(size for _, size in _HELD)
    while len(_HELD) > 1 and (held > HOLD_BYTES or len(_HELD) > HOLD_COUNT):
        old_fd, size = _HELD.popleft()
        os.close(old_fd)
        held -= size


@dataclass
class DataCollatorForMultiView:
    """Collate examples holding an image into V augmented views of each image.

    Build it from a paper preset (`simclr`, `moco_v2`, `byol`, `dino`) or from a list of `ViewAugmentation`.

    Args:
        views (`list[ViewAugmentation]`): one entry per view, in output order. Default: SimCLR at 224 px.
        mean, std (`tuple[float, ...]`, *optional*): normalisation per channel; default ImageNet's (for 1 channel,
            their luma). Use `normalization_from(backbone_or_image_processor)` to take them from a backbone.
        channels (`int`): 3 (default; grayscale images are replicated so timm/HF backbones work) or 1.
        image_column (`str`): the example key holding the image (PIL image, uint8 numpy HWC/HW, CHW tensor, or
            a `datasets` Image dict). Every other column passes through; `label` becomes `labels`.
        output_dtype (`str`): "float32" (normalised) or "uint8" (augmented, not normalised, values 0-255).
        photometric_on_device (`bool`): return uint8 geometric crops and the drawn `photometric_params`;
            call `collator.apply_photometric(batch)` on the accelerator (e.g. in `compute_loss`) to finish.
        skip_invalid_images (`bool`): skip unreadable images (count logged) instead of raising.
        seed (`int`, *optional*): seed of the collator's generator (distinct per DataLoader worker).

    Returns (from `__call__`):
        `dict` with `pixel_values`: list of V tensors of shape (B, C, S_v, S_v), float32 or uint8, in the order
        of `views`. Views of the same resolution are adjacent (DINO: the 2 global views, then the local ones),
        so `torch.cat(pixel_values[:2])` feeds all global views to the backbone in one pass. Plus the
        pass-through columns, e.g. `labels` (B,), and with `photometric_on_device`, `photometric_params`.
    """

    views: list[ViewAugmentation] = field(default_factory=lambda: simclr_views(224))
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3
    image_column: str = "image"
    output_dtype: str = "float32"
    photometric_on_device: bool = False
    skip_invalid_images: bool = False
    seed: int | None = None
    _rng: WorkerSeededGenerator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels} is not supported; use 3 (RGB, default) or 1 (grayscale).")
        if self.output_dtype not in ("float32", "uint8"):
            raise ValueError(f"output_dtype={self.output_dtype!r} is not supported; use 'float32' or 'uint8'.")
        if not self.views or not all(isinstance(view, ViewAugmentation) for view in self.views):
            raise TypeError(f"views must be a non-empty list of ViewAugmentation, got {self.views!r}.")
        if self.mean is None:
            self.mean = IMAGENET_MEAN if self.channels == 3 else (sum(w * m for w, m in zip(LUMA, IMAGENET_MEAN)),)
        if self.std is None:
            self.std = IMAGENET_STD if self.channels == 3 else (sum(w * s for w, s in zip(LUMA, IMAGENET_STD)),)
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise ValueError(
                f"mean={self.mean} and std={self.std} must have 1 or channels={self.channels} values; "
                "pass per-channel statistics matching `channels`."
            )
        self._rng = WorkerSeededGenerator(self.seed)
        self.num_skipped = 0

    @classmethod
    def _preset(cls, views: list[ViewAugmentation], normalization_source: Any, kwargs: dict) -> DataCollatorForMultiView:
        if normalization_source is not None:
            kwargs["mean"], kwargs["std"] = normalization_from(normalization_source)
        return cls(views=views, **kwargs)

    @classmethod
    def simclr(
        cls, image_size: int = 224, strength: float = 1.0, blur_p: float = 0.5, min_scale: float = 0.08,
        normalization_source: Any = None, **kwargs: Any,
    ) -> DataCollatorForMultiView:
        """SimCLR's two views (Chen et al., 2020): crop (0.08, 1), flip, jitter with strength s (0.8s, 0.8s, 0.8s,
        0.2s) p=0.8, grayscale p=0.2, blur p=0.5 (the paper drops blur on CIFAR: `blur_p=0`).
        `normalization_source`: timm model / data config / HF image processor to read mean and std from.
        Other keyword arguments (seed, mean, std, channels, ...) go to the constructor."""
        return cls._preset(simclr_views(image_size, strength, blur_p, min_scale), normalization_source, kwargs)

    @classmethod
    def moco_v2(cls, image_size: int = 224, min_scale: float = 0.2, normalization_source: Any = None, **kwargs: Any) -> DataCollatorForMultiView:
        """MoCo v2's two views (Chen et al., 2020): crop (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale
        p=0.2, blur p=0.5, flip."""
        return cls._preset(moco_v2_views(image_size, min_scale), normalization_source, kwargs)

    @classmethod
    def byol(cls, image_size: int = 224, min_scale: float = 0.08, normalization_source: Any = None, **kwargs: Any) -> DataCollatorForMultiView:
        """BYOL's two asymmetric views (Grill et al., 2020): blur p=1.0 / 0.1, solarisation p=0 / 0.2."""
        return cls._preset(byol_views(image_size, min_scale), normalization_source, kwargs)

    @classmethod
    def dino(
        cls, global_size: int = 224, local_size: int = 96, num_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
        normalization_source: Any = None, **kwargs: Any,
    ) -> DataCollatorForMultiView:
        """DINO multi-crop (Caron et al., 2021): 2 global views (B, C, global_size, global_size) then
        `num_local_crops` local views (B, C, local_size, local_size)."""
        views = dino_views(global_size, local_size, num_local_crops, global_scale, local_scale)
        return cls._preset(views, normalization_source, kwargs)

    def _normalize(self, images: torch.Tensor, white: float = 1.0) -> torch.Tensor:
        """(images / white - mean) / std, as (images - white mean) / (white std), in place (on a tensor the
        collator owns)."""
        mean = images.new_tensor(self.mean).mul_(white).view(1, -1, 1, 1)
        std = images.new_tensor(self.std).mul_(white).view(1, -1, 1, 1)
        return images.sub_(mean).div_(std)

    def _finish(
        self, crops: torch.Tensor, view: ViewAugmentation, params: dict[str, torch.Tensor], row_order: torch.Tensor | None = None
    ) -> torch.Tensor:
        """uint8 crops (or floats holding 0-255) -> photometric -> float32 normalised or uint8.

        The float batch is made once and every op then works in place on it; within the ops, colour-jitter groups
        and `where_rows` pieces are cache-sized. On CPU, very large batches run in chunks of about 2^24 values; the
        parameters are drawn already, so the result does not depend on the chunking.

        `row_order` (CPU): row j of `crops` and `params` is example `row_order[j]`, the rows sorted by jitter op
        order so that colour jitter runs in place on contiguous rows; the work happens in a reused buffer and the
        result comes back in example order (in a DataLoader worker, written to shared memory in that order)."""
        shared = _writes_through_memfd(crops.device)
        # ours, holding 0-255: the division by 255 is folded into the normalisation (ops take `white=255.0`)
        images = (_work_buffer(crops.shape) if row_order is not None else _new_batch(crops.shape, crops.device)).copy_(crops)
        step = max(1, CHUNK_VALUES // max(1, crops[0].numel())) if crops.device.type == "cpu" else crops.shape[0]
        for start in range(0, images.shape[0], step):
            rows = slice(start, start + step)
            view.apply_photometric(images[rows], {key: value[rows] for key, value in params.items()}, inplace=True, white=255.0)
        if self.output_dtype == "uint8":
            images = images.round_().clamp_(0, 255).to(torch.uint8)
        else:
            images = self._normalize(images, white=255.0)
        if row_order is None:
            return _to_shared_memory(images) if shared else images
        inverse = row_order.argsort()
        return _to_shared_memory(images, inverse) if shared else images.index_select(0, inverse)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        generator = self._rng.get()
        batch_images, sizes, kept = decode_batch(examples, self.image_column, self.channels, self.skip_invalid_images)
        if len(kept) < len(examples):
            self.num_skipped += len(examples) - len(kept)
            logger.warning("skipped %d unreadable images in this batch (%d so far)", len(examples) - len(kept), self.num_skipped)
        batch_size = batch_images.shape[0]
        outputs: list[torch.Tensor | None] = [None] * len(self.views)
        all_params: list[dict[str, torch.Tensor] | None] = [None] * len(self.views)
        # identical views (e.g. SimCLR's two) are cropped and augmented together as one (R * B) batch
        groups: dict[ViewAugmentation, list[int]] = {}
        for index, view in enumerate(self.views):
            groups.setdefault(view, []).append(index)
        for view, indices in groups.items():
            repeats = len(indices)
            params = view.draw_photometric(repeats * batch_size, generator)
            orders = None  # finished here: each view's crops are made grouped by jitter op order (see `_finish`)
            if not self.photometric_on_device:
                orders = [jitter_order(params["order"][rows], params["jitter"][rows]) for rows in
                          (slice(p * batch_size, (p + 1) * batch_size) for p in range(repeats))]  # fmt: skip
            row_order = None if orders is None else torch.cat([order + p * batch_size for p, order in enumerate(orders)])
            crops = random_resized_crops(batch_images, sizes, view.size, view.scale, view.ratio, view.flip_p, generator, repeats,
                                         torch.uint8, channels_last=not self.photometric_on_device, row_order=row_order)  # fmt: skip
            for position, index in enumerate(indices):
                rows = slice(position * batch_size, (position + 1) * batch_size)
                all_params[index] = {key: value[rows] for key, value in params.items()}
                if orders is None:
                    outputs[index] = crops[rows]
                else:
                    order = orders[position]
                    sorted_params = {key: value.index_select(0, order) for key, value in all_params[index].items()}
                    outputs[index] = self._finish(crops[rows], view, sorted_params, order)
        batch = collate_columns([examples[i] for i in kept], exclude=(self.image_column,))
        batch["pixel_values"] = outputs
        if self.photometric_on_device:
            batch["photometric_params"] = all_params
        return batch

    def apply_photometric(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Finish a batch made with `photometric_on_device=True`, on the device its tensors are on.

        Args:
            batch (`dict`): the collator's output, with uint8 `pixel_values` and `photometric_params`.

        Returns:
            A new `dict` without `photometric_params`, whose `pixel_values` are what the collator would have
            returned with `photometric_on_device=False` (float32 normalised, or uint8 per `output_dtype`).
        """
        if "photometric_params" not in batch:
            raise ValueError("the batch has no 'photometric_params'; build the collator with photometric_on_device=True.")
        finished = {key: value for key, value in batch.items() if key not in ("photometric_params", "pixel_values")}
        finished["pixel_values"] = [
            self._finish(crops.float(), view, params)
            for crops, view, params in zip(batch["pixel_values"], self.views, batch["photometric_params"])
        ]
        return finished
