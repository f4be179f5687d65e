"""Two-view SimCLR augmentation throughput: hfssl's batched DataCollatorForMultiView against lightly's
SimCLRTransform (PIL, per image) and a per-image torchvision.transforms.v2 pipeline, on the same images.

    python bench/views.py                    # Fashion-MNIST (or digits if missing), 32 and 96 px, 1 process and 2 workers

Images: the first 1,024 Fashion-MNIST training images as RGB PIL images resized to the view size; every
pipeline makes two SimCLR views per image (crop (0.08, 1), flip, jitter 0.8 s=1 p=0.8, grayscale 0.2, blur p=0.5,
normalise; the per-image pipelines' views stacked with torch's `default_collate`). hfssl runs two ways: the
photometric half in the collator (`hfssl_in_collator`: in the DataLoader workers, which hand over float32 views)
and with `photometric_on_device=True` (`hfssl_in_main`: the workers hand over uint8 crops, and the loop finishes
them with `apply_photometric` in the main process, as `SSLTrainer.finish_views` does); with no workers both run
in the main process. Figure: images per second (each giving 2 views), median of --repeats epochs after a warm-up epoch,
the pipelines taking turns epoch by epoch so that a slow spell of the shared machine falls on all of them
(workers persist, so their start-up is not timed), all pipelines in the same process. torch runs with 1 intra-op
thread in the main process (--threads), as DataLoader workers do. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hfssl.collators.multi_view import DataCollatorForMultiView  # noqa: E402
from hfssl.data.images import FASHION_MNIST_DIR, load_image_dataset  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PerImageCollator:
    """Apply a per-image two-view transform to every image of the batch and stack the views with torch's
    `default_collate` (which, in a DataLoader worker, stacks straight into shared memory), as a DataLoader over
    a dataset returning the two views would (picklable)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, examples: list[dict]) -> dict:
        views = [self.transform(example["image"]) for example in examples]
        return {"pixel_values": default_collate(views)}


class FinishInMain:
    """hfssl with `photometric_on_device=True`: the collator (in the workers) makes uint8 crops, `finish` (in the
    main process) the views."""

    def __init__(self, collator: DataCollatorForMultiView) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        return self.collator(examples)

    def finish(self, batch: dict) -> dict:
        return self.collator.apply_photometric(batch)


class TwoViews:
    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, image):
        return [self.transform(image), self.transform(image)]


def torchvision_simclr(size: int) -> TwoViews:
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    return TwoViews(v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ]))


def images_per_second(pipelines: dict, examples: list[dict], batch_size: int, workers: int, repeats: int) -> dict[str, float]:
    """Median images/s of each pipeline over `repeats` epochs, after one warm-up epoch each. The pipelines take
    turns epoch by epoch, so a slow spell of the (shared) machine falls on all of them, not on one; workers
    persist, so their start-up is not timed."""
    loaders = {name: DataLoader(examples, batch_size=batch_size, num_workers=workers, collate_fn=collate, persistent_workers=workers > 0)
               for name, collate in pipelines.items()}  # fmt: skip
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for epoch in range(repeats + 1):
        for name, loader in loaders.items():
            finish = getattr(pipelines[name], "finish", lambda batch: batch)
            start = time.perf_counter()
            count = sum(finish(batch)["pixel_values"][0].shape[0] for batch in loader)
            if epoch > 0:
                rates[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main process (workers use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # one core per pipeline, as in a DataLoader worker; avoids oversubscription
    from lightly.transforms import SimCLRTransform

    builtin = "fashion_mnist" if os.path.isdir(FASHION_MNIST_DIR) else "digits"
    dataset = load_image_dataset(builtin=builtin, max_samples=args.num_images)
    result: dict = {"bench": "views", "data": builtin, "num_images": len(dataset), "batch_size": args.batch_size,
                    "torch_threads": torch.get_num_threads(), "unit": "two-view images/s"}
    for size in args.sizes:
        examples = [{"image": image.convert("RGB").resize((size, size))} for image in dataset["image"]]
        pipelines = {
            "hfssl_in_collator": DataCollatorForMultiView.simclr(image_size=size, seed=0, photometric_on_device=False),
            "hfssl_in_main": FinishInMain(DataCollatorForMultiView.simclr(image_size=size, seed=0, photometric_on_device=True)),
            "lightly": PerImageCollator(SimCLRTransform(input_size=size, gaussian_blur=0.5, normalize={"mean": MEAN, "std": STD})),
            "torchvision_v2": PerImageCollator(torchvision_simclr(size)),
        }
        for workers in (0, 2):
            key = f"{size}px_{'1process' if workers == 0 else '2workers'}"
            rates = images_per_second(pipelines, examples, args.batch_size, workers, args.repeats)
            for name, rate in rates.items():
                result[f"{name}_{key}"] = round(rate, 1)
            for where in ("in_collator", "in_main"):
                result[f"ratio_{where}_vs_lightly_{key}"] = round(rates[f"hfssl_{where}"] / rates["lightly"], 2)
                result[f"ratio_{where}_vs_torchvision_{key}"] = round(rates[f"hfssl_{where}"] / rates["torchvision_v2"], 2)
            result[f"ratio_in_main_vs_in_collator_{key}"] = round(rates["hfssl_in_main"] / rates["hfssl_in_collator"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
