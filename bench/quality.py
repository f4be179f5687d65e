"""Learning quality against lightly at equal settings: one method, two arms, the same views, backbone and steps.

    python bench/quality.py --method simclr --steps 200 --batch_size 256 --seeds 0,1
    python bench/quality.py --method simclr --steps 2 --batch_size 32 --seeds 0 --max_train_samples 512 \
        --max_eval_samples 256                        # wiring only (tests/test_bench_quality.py)

Both arms train on Fashion-MNIST for the same number of optimizer steps (not wall time, so a busy machine cannot
bias them). Per seed:
- the views come from ONE pipeline (hfssl's `DataCollatorForMultiView` with a seeded generator: random crop of
  scale 0.8-1 at 28 px, horizontal flip, brightness/contrast 0.4 with p 0.8, one channel), made once and fed to both
  arms in the same order, so both see byte-identical batches;
- the backbone (timm resnet18, one input channel, timm's own stem) is built once under `torch.manual_seed(seed)`
  and copied into both arms; each arm builds its own heads, as its library does;
- hfssl's arm is what a user writes: the method's Config and Model, its Trainer and `SSLTrainingArguments`
  (LARS, a cosine schedule with linear warm-up);
- lightly's arm is what lightly's examples write: a plain loop, lightly's head, loss and LARS (biases and norm
  parameters in a group without weight decay, which lightly's LARS also leaves unscaled), and the same cosine
  schedule with warm-up (transformers' `get_cosine_schedule_with_warmup`, the function hfssl's Trainer uses).
The two LARS differ only in the trust ratio's denominator: lightly ||g|| + wd ||w||, hfssl ||g + wd w|| (the
same to well under 1% at weight decay 1e-6).

Reported per arm: kNN top-1 of the backbone (k 200, cosine, temperature 0.1, the 60k train images as memory, the 10k
test images as queries), the mean per-dimension std of the l2-normalised test features (1/sqrt(D) for spread
features, 0 at collapse) and their effective rank (RankMe), training images per second; then the means over seeds,
hfssl - lightly in points and the throughput ratio hfssl / lightly (both measured in this run, interleaved per seed).
Prints one JSON line and appends it to bench/results/quality.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PrinterCallback, get_cosine_schedule_with_warmup

from hfssl.augmentations.presets import ViewAugmentation
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.images import FASHION_MNIST_DIR, _read_idx
from hfssl.evaluation.features import extract_features
from hfssl.evaluation.knn import knn_accuracy
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.collapse import effective_rank
from hfssl.trainers.methods import method_named

MEAN, STD = (0.2860,), (0.3530,)
RESULTS = Path(__file__).parent / "results" / "quality.jsonl"

# Per method, the settings both arms share: head widths, loss settings, optimiser (LARS; biases and norm parameters
# without weight decay or adaptation), schedule, crop scale. The heads follow lightly's example of the method; the
# optimiser is LARS for all, which learns in a few hundred steps (lightly's examples use SGD at lr 0.06 for brevity).
SETTINGS = {
    "simclr": {
        # issue 28 point 16: heads 512 -> 512 -> 128, temperature 0.07, LARS lr 1.0, wd 1e-6, crops from 0.8
        "hidden_dim": 512, "output_dim": 128, "temperature": 0.07, "lr": 1.0, "weight_decay": 1e-6,
        "momentum": 0.9, "min_scale": 0.8, "warmup_fraction": 0.05, "max_grad_norm": 0.0,
    },
    "moco_v2": {
        # lightly's examples/pytorch/moco.py: MoCoProjectionHead(512, 512, 128), a memory bank of 4096, EMA 0.99,
        # one loss direction; temperature 0.2 (MoCo v2's, where lightly's NTXentLoss defaults to 0.5)
        "hidden_dim": 512, "output_dim": 128, "temperature": 0.2, "queue_size": 4096, "ema": 0.99, "lr": 1.0,
        "weight_decay": 1e-6, "momentum": 0.9, "min_scale": 0.8, "warmup_fraction": 0.05, "max_grad_norm": 0.0,
    },
    "byol": {
        # lightly's examples/pytorch/byol.py: projector 512 -> 1024 -> 256, predictor 256 -> 1024 -> 256, EMA 0.99
        "hidden_dim": 1024, "output_dim": 256, "predictor_hidden_dim": 1024, "ema": 0.99, "lr": 1.0,
        "weight_decay": 1e-5, "momentum": 0.9, "min_scale": 0.4, "warmup_fraction": 0.05, "max_grad_norm": 1.0,
    },
    "simsiam": {
        # lightly's examples/pytorch/simsiam.py: SimSiamProjectionHead(512, 512, 128) (3 layers, affine-free last BN),
        # SimSiamPredictionHead(128, 64, 128)
        "hidden_dim": 512, "output_dim": 128, "predictor_hidden_dim": 64, "lr": 1.0, "weight_decay": 1e-5,
        "momentum": 0.9, "min_scale": 0.4, "warmup_fraction": 0.05, "max_grad_norm": 1.0,
    },
    "barlow_twins": {
        # lightly's examples/pytorch/barlowtwins.py: BarlowTwinsProjectionHead(512, 2048, 2048), lambda 0.0051
        "hidden_dim": 2048, "output_dim": 2048, "lambda_offdiag": 0.0051, "lr": 1.0, "weight_decay": 1e-6,
        "momentum": 0.9, "min_scale": 0.8, "warmup_fraction": 0.05, "max_grad_norm": 1.0,
    },
    "vicreg": {
        # lightly's examples/pytorch/vicreg.py: VICRegProjectionHead(512, 2048, 2048, num_layers=2), 25 / 25 / 1
        "hidden_dim": 2048, "output_dim": 2048, "num_layers": 2, "lr": 1.0, "weight_decay": 1e-6,
        "momentum": 0.9, "min_scale": 0.8, "warmup_fraction": 0.05, "max_grad_norm": 1.0,
    },
}


def hfssl_config(method: str, settings: dict) -> dict:
    """The method config's fields for `settings` (beside the backbone's)."""
    if method == "simclr":
        return {"projection_hidden_dim": settings["hidden_dim"], "projection_dim": settings["output_dim"],
                "temperature": settings["temperature"]}
    if method == "moco_v2":
        return {"variant": "v2", "projection_hidden_dim": settings["hidden_dim"],
                "projection_dim": settings["output_dim"], "queue_size": settings["queue_size"],
                "temperature": settings["temperature"], "momentum": settings["ema"], "momentum_final": settings["ema"],
                "symmetric": False}
    head = {"projection_hidden_dim": settings["hidden_dim"], "projection_dim": settings["output_dim"]}
    if method == "byol":
        return {**head, "predictor_hidden_dim": settings["predictor_hidden_dim"], "momentum": settings["ema"],
                "momentum_final": settings["ema"]}
    if method == "simsiam":
        return {**head, "projection_layers": 3, "predictor_hidden_dim": settings["predictor_hidden_dim"]}
    if method == "barlow_twins":
        return {**head, "projection_layers": 3, "lambda_offdiag": settings["lambda_offdiag"]}
    return {**head, "projection_layers": settings["num_layers"]}  # VICReg: 25 / 25 / 1 are hfssl's defaults too


def load(split: str, limit: int | None) -> tuple[np.ndarray, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(f"{FASHION_MNIST_DIR}/{prefix}-images-idx3-ubyte.gz")[:limit]
    labels = _read_idx(f"{FASHION_MNIST_DIR}/{prefix}-labels-idx1-ubyte.gz")[:limit]
    return images, torch.from_numpy(labels.astype(np.int64))


def view_batches(images: np.ndarray, settings: dict, steps: int, batch_size: int, seed: int) -> list:
    """`steps` batches of two float views (B, 1, 28, 28), from a seeded shuffle and a seeded collator."""
    view = ViewAugmentation(size=28, scale=(settings["min_scale"], 1.0), jitter_p=0.8, brightness=0.4, contrast=0.4,
                            saturation=0.0, hue=0.0, grayscale_p=0.0, blur_p=0.0)
    collator = DataCollatorForMultiView(views=[view, view], channels=1, mean=MEAN, std=STD, seed=seed,
                                        photometric_on_device=False)
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(images), generator=generator)
                       for _ in range(math.ceil(steps * batch_size / len(images)))])
    batches = [order[step * batch_size:(step + 1) * batch_size].tolist() for step in range(steps)]
    return [collator([{"image": images[i]} for i in batch])["pixel_values"] for batch in batches]


class ReplayDataset(torch.utils.data.Dataset):
    """`len(batches) * batch_size` placeholder examples; `Replay` turns each batch of them into the next view batch."""

    def __init__(self, num_examples: int) -> None:
        self.num_examples = num_examples

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        return {"index": index}


class Replay:
    """A data collator that returns the precomputed view batches in order, whatever examples it is given."""

    def __init__(self, batches: list[list[torch.Tensor]]) -> None:
        self.batches, self.calls = batches, 0

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.batches[self.calls]
        self.calls += 1
        return {"pixel_values": [view.clone() for view in batch]}


def features_report(backbone: nn.Module, train, test) -> dict:
    memory = extract_features(backbone, list(train[0]), 28, MEAN, STD, channels=1, batch_size=1024)
    queries = extract_features(backbone, list(test[0]), 28, MEAN, STD, channels=1, batch_size=1024)
    normalised = nn.functional.normalize(queries.float(), dim=1)
    return {"knn_top1": knn_accuracy(memory, train[1], queries, test[1], k=200, temperature=0.1),
            "embedding_std": float(normalised.std(dim=0).mean()),
            "effective_rank": float(effective_rank(normalised))}


def hfssl_arm(method: str, model: nn.Module, batches, settings: dict, args) -> float:
    """Train `model` with the method's trainer on the replayed batches; returns images per second."""
    batch_size = batches[0][0].shape[0]
    training_args = SSLTrainingArguments(
        output_dir="/tmp/hfssl_quality", max_steps=len(batches), per_device_train_batch_size=batch_size,
        learning_rate=settings["lr"], weight_decay=settings["weight_decay"], lars=True,
        lars_momentum=settings["momentum"], lr_scheduler_type="cosine",
        warmup_steps=max(1, int(settings["warmup_fraction"] * len(batches))), max_grad_norm=settings["max_grad_norm"],
        remove_unused_columns=False, dataloader_num_workers=0, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=max(1, len(batches) // 4), seed=args.seed_now, collapse_action="none",
    )
    trainer_class = method_named(hfssl_name(method)).trainer_class
    trainer = trainer_class(model=model, args=training_args, data_collator=Replay(batches),
                            train_dataset=ReplayDataset(len(batches) * batch_size))
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    return len(batches) * batch_size / (time.perf_counter() - start)


def lightly_simclr(backbone: nn.Module, settings: dict):
    """lightly's examples/pytorch/simclr.py: SimCLRProjectionHead and NTXentLoss."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    head = SimCLRProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    criterion = NTXentLoss(temperature=settings["temperature"])

    def loss(view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        z = head(backbone(torch.cat([view1, view2])))  # one pass over both views, as in hfssl's arm
        return criterion(*z.chunk(2))

    return [head], loss


def lightly_moco_v2(backbone: nn.Module, settings: dict):
    """lightly's examples/pytorch/moco.py: MoCoProjectionHead, momentum copies updated before each step with
    `update_momentum`, NTXentLoss with a memory bank; the query from the first view, the key from the second."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    head = MoCoProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    backbone_momentum, head_momentum = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    criterion = NTXentLoss(temperature=settings["temperature"],
                           memory_bank_size=(settings["queue_size"], settings["output_dim"]))

    def loss(view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        update_momentum(backbone, backbone_momentum, m=settings["ema"])
        update_momentum(head, head_momentum, m=settings["ema"])
        query = head(backbone(view1))
        key = head_momentum(backbone_momentum(view2)).detach()
        return criterion(query, key)

    return [head], loss


def lightly_byol(backbone: nn.Module, settings: dict):
    """lightly's examples/pytorch/byol.py: BYOL projection and prediction heads, momentum copies updated before each
    step, NegativeCosineSimilarity symmetrised over the two views."""
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    projection = BYOLProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    prediction = BYOLPredictionHead(settings["output_dim"], settings["predictor_hidden_dim"], settings["output_dim"])
    backbone_momentum, projection_momentum = copy.deepcopy(backbone), copy.deepcopy(projection)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(projection_momentum)
    criterion = NegativeCosineSimilarity()

    def loss(view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        update_momentum(backbone, backbone_momentum, m=settings["ema"])
        update_momentum(projection, projection_momentum, m=settings["ema"])
        both = torch.cat([view1, view2])  # one pass over both views, as in hfssl's arm
        p0, p1 = prediction(projection(backbone(both))).chunk(2)
        with torch.no_grad():
            z0, z1 = projection_momentum(backbone_momentum(both)).chunk(2)
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

    return [projection, prediction], loss


def lightly_simsiam(backbone: nn.Module, settings: dict):
    """lightly's examples/pytorch/simsiam.py: SimSiam projection and prediction heads, NegativeCosineSimilarity against
    the other view's detached projection, symmetrised."""
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

    projection = SimSiamProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    prediction = SimSiamPredictionHead(settings["output_dim"], settings["predictor_hidden_dim"],
                                       settings["output_dim"])
    criterion = NegativeCosineSimilarity()

    def loss(view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        z = projection(backbone(torch.cat([view1, view2])))  # one pass over both views, as in hfssl's arm
        p0, p1 = prediction(z).chunk(2)
        z0, z1 = z.detach().chunk(2)
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

    return [projection, prediction], loss


def lightly_redundancy(head_class: str, loss_class: str, head_kwargs: dict, loss_kwargs: dict):
    """lightly's examples/pytorch/barlowtwins.py and vicreg.py: a projection head and a loss of the two projections."""

    def build(backbone: nn.Module, settings: dict):
        import lightly.loss
        import lightly.models.modules.heads

        head = getattr(lightly.models.modules.heads, head_class)(
            backbone.num_features, settings["hidden_dim"], settings["output_dim"], **head_kwargs(settings))
        criterion = getattr(lightly.loss, loss_class)(**loss_kwargs(settings))

        def loss(view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
            return criterion(*head(backbone(torch.cat([view1, view2]))).chunk(2))  # one pass, as in hfssl's arm

        return [head], loss

    return build


LIGHTLY_ARMS = {
    "simclr": lightly_simclr, "moco_v2": lightly_moco_v2, "byol": lightly_byol, "simsiam": lightly_simsiam,
    "barlow_twins": lightly_redundancy("BarlowTwinsProjectionHead", "BarlowTwinsLoss", lambda s: {},
                                       lambda s: {"lambda_param": s["lambda_offdiag"]}),
    "vicreg": lightly_redundancy("VICRegProjectionHead", "VICRegLoss", lambda s: {"num_layers": s["num_layers"]},
                                 lambda s: {}),
}


def lightly_arm(method: str, backbone: nn.Module, batches, settings: dict) -> float:
    """lightly's example loop for `method` on the replayed batches, with LARS as lightly's benchmarks set it up
    (`get_weight_decay_parameters`: no weight decay, hence no LARS scaling, for biases and norms); returns images per
    second."""
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.utils.lars import LARS

    heads, loss_of = LIGHTLY_ARMS[method](backbone, settings)
    decay, no_decay = get_weight_decay_parameters([backbone, *heads])
    optimizer = LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=settings["lr"],
                     momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, int(settings["warmup_fraction"] * len(batches))),
                                                len(batches))
    for module in (backbone, *heads):
        module.train()
    start = time.perf_counter()
    for view1, view2 in batches:
        loss = loss_of(view1, view2)
        optimizer.zero_grad()
        loss.backward()
        if settings["max_grad_norm"]:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                           settings["max_grad_norm"])
        optimizer.step()
        scheduler.step()
    return len(batches) * batches[0][0].shape[0] / (time.perf_counter() - start)


def hfssl_name(method: str) -> str:
    """hfssl's method name (`--method` of recipes/pretrain_ssl.py): MoCo v2 is `moco` with `variant="v2"`."""
    return "moco" if method == "moco_v2" else method


def hfssl_model(method: str, settings: dict, seed: int) -> nn.Module:
    spec = method_named(hfssl_name(method))
    torch.manual_seed(seed)
    config = spec.config_class(backbone_name="resnet18", num_channels=1, **hfssl_config(method, settings))
    return spec.model_class(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="simclr", choices=sorted(SETTINGS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--max_train_samples", type=int, default=None, help="wiring runs: fewer training images")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="wiring runs: fewer kNN memory/queries")
    parser.add_argument("--no_record", action="store_true", help=f"do not append the result to {RESULTS}")
    args = parser.parse_args()
    settings = SETTINGS[args.method]
    train = load("train", args.max_train_samples)
    memory = (train[0][: args.max_eval_samples], train[1][: args.max_eval_samples])
    test = load("test", args.max_eval_samples)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        args.seed_now = seed
        start = time.perf_counter()
        batches = view_batches(train[0], settings, args.steps, args.batch_size, seed)
        print(f"seed {seed}: {len(batches)} view batches in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        model = hfssl_model(args.method, settings, seed)
        lightly_backbone = copy.deepcopy(model.backbone.model)  # the same timm resnet18 and initial weights
        run = {"seed": seed, "initial": features_report(lightly_backbone, memory, test)}
        run["hfssl_images_per_second"] = hfssl_arm(args.method, model, batches, settings, args)
        run["hfssl"] = features_report(model.backbone, memory, test)
        print(json.dumps(run), file=sys.stderr, flush=True)
        run["lightly_images_per_second"] = lightly_arm(args.method, lightly_backbone, batches, settings)
        run["lightly"] = features_report(lightly_backbone, memory, test)
        print(json.dumps(run), file=sys.stderr, flush=True)
        runs.append(run)

    def mean(key: str, arm: str) -> float:
        return float(np.mean([run[arm][key] for run in runs]))

    result = {
        "bench": "quality", "method": args.method, "steps": args.steps, "batch_size": args.batch_size,
        "seeds": [run["seed"] for run in runs], "backbone": "timm resnet18, 1 channel", "settings": settings,
        "hfssl_knn_top1": mean("knn_top1", "hfssl"), "lightly_knn_top1": mean("knn_top1", "lightly"),
        "hfssl_minus_lightly_points": 100 * (mean("knn_top1", "hfssl") - mean("knn_top1", "lightly")),
        "untrained_knn_top1": mean("knn_top1", "initial"),
        "hfssl_embedding_std": mean("embedding_std", "hfssl"),
        "lightly_embedding_std": mean("embedding_std", "lightly"),
        "hfssl_effective_rank": mean("effective_rank", "hfssl"),
        "lightly_effective_rank": mean("effective_rank", "lightly"),
        "throughput_ratio": float(np.mean([run["hfssl_images_per_second"] for run in runs])
                                  / np.mean([run["lightly_images_per_second"] for run in runs])),
        "runs": runs, "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python"] + sys.argv),
    }
    line = json.dumps(result)
    print(line)
    if not args.no_record:
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as results:
            results.write(line + "\n")


if __name__ == "__main__":
    main()
