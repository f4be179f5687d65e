"""Learning quality against lightly at equal settings: one method, two arms, the same views, backbone and steps.

    python bench/quality.py --method simclr --steps 200 --batch_size 256 --seeds 0,1
    python bench/quality.py --method byol --steps 2 --batch_size 16 --seeds 0 --max_train_samples 256 \
        --max_eval_samples 128 --no_record           # wiring only (tests/test_bench_quality.py)

Both arms train on Fashion-MNIST for the same number of optimizer steps (not wall time, so a busy machine cannot
bias them). Per seed:
- the views come from ONE pipeline (hfssl's `DataCollatorForMultiView` with a seeded generator: random crop of
  scale `min_scale`-1 at 28 px, horizontal flip, brightness/contrast 0.4 with p 0.8, one channel), made once and fed
  to both arms in the same order, so both see byte-identical batches of two views;
- the backbone (timm resnet18, one input channel) is built once under `torch.manual_seed(seed)` and copied into
  both arms; each arm builds its own heads, as its library does, at the widths of `SETTINGS`;
- hfssl's arm is what a user writes: the method's Config and Model, its Trainer and `SSLTrainingArguments`;
- lightly's arm is what lightly's examples/pytorch/<method>.py write: a plain loop, lightly's heads and loss, one
  forward pass per view, `update_momentum` before each step with `cosine_schedule` for the momentum;
- both arms: the optimiser of `SETTINGS` (LARS: hfssl's in hfssl's arm, lightly's in lightly's, with biases and
  norm parameters without weight decay nor adaptation in both; `lars_max_relative_difference` measures how far the
  two drift apart; SGD and Adam: torch's class in both), the same warm-up and cosine decay of the learning rate
  (transformers' `get_cosine_schedule_with_warmup`, the function hfssl's Trainer uses), no gradient clipping.

Reported per arm and seed: kNN top-1 of the backbone (k 200, cosine, temperature 0.1, the 60k train images as
memory, the 10k test images as queries), the mean per-dimension std of the l2-normalised test features (1/sqrt(D)
for spread features, 0 at collapse) and their effective rank (RankMe), training images per second; then the means
over seeds, hfssl - lightly in points and the throughput ratio hfssl / lightly (both measured in this run,
interleaved per seed). Prints one JSON line and appends it to bench/results/quality.jsonl.
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
from hfssl.optim import LARS
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.collapse import effective_rank
from hfssl.trainers.methods import method_named

MEAN, STD = (0.2860,), (0.3530,)
RESULTS = Path(__file__).parent / "results" / "quality.jsonl"
TEACHER_MOMENTUM = {"ema_start": 0.996, "ema_end": 1.0}  # lightly's examples: cosine_schedule(step, steps, 0.996, 1)
SGD = {"optimizer": "sgd", "lr": 0.06, "momentum": 0.0, "weight_decay": 0.0}  # torch.optim.SGD(params, lr=0.06)
ADAM = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}  # torch.optim.Adam(params, lr=0.001)
# every method: the views of issue 28 point 16 (crops of scale 0.8-1), 5% of the steps of linear warm-up
SHARED = {"min_scale": 0.8, "warmup_fraction": 0.05}

# Per method, what both arms share. Heads, loss settings and teacher momentum: lightly's examples/pytorch/<method>.py
# (SwAV and DINO without their low-resolution crops: two 28-px views for every method). Optimiser: the example's
# (SGD at lr 0.06, or Adam at 1e-3), except SimCLR's, which issue 28 point 16 fixes (LARS lr 1.0, wd 1e-6).
SETTINGS = {
    # SimCLRProjectionHead(512, 512, 128); issue 28 point 16: temperature 0.07, LARS
    "simclr": {"hidden_dim": 512, "output_dim": 128, "temperature": 0.07, "optimizer": "lars", "lr": 1.0,
               "weight_decay": 1e-6, "momentum": 0.9, **SHARED},
    # MoCoProjectionHead(512, 512, 128), NTXentLoss(memory_bank_size=(4096, 128)) at its default temperature 0.5
    "moco_v2": {"hidden_dim": 512, "output_dim": 128, "temperature": 0.5, "queue_size": 4096, **TEACHER_MOMENTUM,
                **SGD, **SHARED},
    # BYOLProjectionHead(512, 1024, 256), BYOLPredictionHead(256, 1024, 256)
    "byol": {"hidden_dim": 1024, "output_dim": 256, "predictor_hidden_dim": 1024, **TEACHER_MOMENTUM, **SGD,
             **SHARED},
    # SimSiamProjectionHead(512, 512, 128), SimSiamPredictionHead(128, 64, 128)
    "simsiam": {"hidden_dim": 512, "output_dim": 128, "predictor_hidden_dim": 64, **SGD, **SHARED},
    # BarlowTwinsProjectionHead(512, 2048, 2048), BarlowTwinsLoss(): lambda 5e-3
    "barlow_twins": {"hidden_dim": 2048, "output_dim": 2048, "lambda_offdiag": 5e-3, **SGD, **SHARED},
    # VICRegProjectionHead(512, 2048, 2048, num_layers=2), VICRegLoss(): 25 / 25 / 1
    "vicreg": {"hidden_dim": 2048, "output_dim": 2048, "num_layers": 2, **SGD, **SHARED},
    # SwaVProjectionHead(512, 512, 128), SwaVPrototypes(128, 512) never frozen, SwaVLoss(): 0.1, 3 iterations, 0.05
    "swav": {"hidden_dim": 512, "output_dim": 128, "num_prototypes": 512, "temperature": 0.1, **ADAM, **SHARED},
    # DINOProjectionHead(512, 512, 64, 2048, freeze_last_layer=1 epoch), DINOLoss(output_dim=2048): 0.04, 0.1, 0.9
    "dino": {"hidden_dim": 512, "bottleneck_dim": 64, "output_dim": 2048, "freeze_last_layer_epochs": 1,
             "teacher_temperature": 0.04, "student_temperature": 0.1, "center_momentum": 0.9, **TEACHER_MOMENTUM,
             **ADAM, **SHARED},
}


def hfssl_config(method: str, settings: dict, steps_per_epoch: int) -> dict:
    """The method config's fields for `settings` (beside the backbone's)."""
    head = {"projection_hidden_dim": settings["hidden_dim"], "projection_dim": settings["output_dim"]}
    ema = {"momentum": settings.get("ema_start"), "momentum_final": settings.get("ema_end")}
    if method == "simclr":
        return {**head, "projection_layers": 2, "projection_last_batch_norm": True,
                "temperature": settings["temperature"]}
    if method == "moco_v2":  # lightly's example: one loss direction, query from view 1, key from view 2
        return {**head, **ema, "variant": "v2", "projection_layers": 2, "queue_size": settings["queue_size"],
                "temperature": settings["temperature"], "symmetric": False}
    if method == "byol":
        return {**head, **ema, "predictor_hidden_dim": settings["predictor_hidden_dim"]}
    if method == "simsiam":
        return {**head, "projection_layers": 3, "predictor_hidden_dim": settings["predictor_hidden_dim"]}
    if method == "barlow_twins":
        return {**head, "projection_layers": 3, "lambda_offdiag": settings["lambda_offdiag"]}
    if method == "vicreg":
        return {**head, "projection_layers": settings["num_layers"]}  # 25 / 25 / 1 are hfssl's defaults too
    if method == "swav":
        return {**head, "num_prototypes": settings["num_prototypes"], "temperature": settings["temperature"],
                "freeze_prototypes_steps": 0}
    return {**ema, "head_hidden_dim": settings["hidden_dim"], "head_bottleneck_dim": settings["bottleneck_dim"],
            "out_dim": settings["output_dim"], "head_layers": 3,
            "student_temperature": settings["student_temperature"],
            "teacher_temperature": settings["teacher_temperature"],
            "warmup_teacher_temperature": settings["teacher_temperature"],
            "center_momentum": settings["center_momentum"],
            "freeze_last_layer_steps": settings["freeze_last_layer_epochs"] * steps_per_epoch}


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


def warmup_steps(settings: dict, steps: int) -> int:
    return max(1, int(settings["warmup_fraction"] * steps))


def hfssl_arm(method: str, model: nn.Module, batches, settings: dict, seed: int) -> float:
    """Train `model` with the method's trainer on the replayed batches; returns images per second."""
    batch_size = batches[0][0].shape[0]
    optimizer = {"lars": {"lars": True, "lars_momentum": settings.get("momentum", 0.0)},
                 "sgd": {"optim": "sgd", "optim_args": f"momentum={settings.get('momentum', 0.0)}"},
                 "adam": {"optim": "adamw_torch"}}[settings["optimizer"]]  # AdamW at weight decay 0 is Adam
    training_args = SSLTrainingArguments(
        output_dir="/tmp/hfssl_quality", max_steps=len(batches), per_device_train_batch_size=batch_size,
        learning_rate=settings["lr"], weight_decay=settings["weight_decay"], **optimizer, lr_scheduler_type="cosine",
        warmup_steps=warmup_steps(settings, len(batches)), max_grad_norm=0.0, dataloader_num_workers=0,
        report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=max(1, len(batches) // 4), seed=seed,
        collapse_action="none",
    )
    trainer_class = method_named(hfssl_name(method)).trainer_class
    trainer = trainer_class(model=model, args=training_args, data_collator=Replay(batches),
                            train_dataset=ReplayDataset(len(batches) * batch_size))
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    return len(batches) * batch_size / (time.perf_counter() - start)


# lightly's arm: one builder per method, written after lightly's examples/pytorch/<method>.py. Each returns the
# trained modules beside the backbone and `step_loss(views, step)`, which does what the example's loop body does
# before `loss.backward()`; `after_backward(step)`, where there is one, what it does after (DINO).


def lightly_simclr(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    head = SimCLRProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    criterion = NTXentLoss(temperature=settings["temperature"])

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        z0, z1 = (head(backbone(view)) for view in views)
        return criterion(z0, z1)

    return [head], step_loss, None


def lightly_moco_v2(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    head = MoCoProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    backbone_momentum, head_momentum = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    criterion = NTXentLoss(temperature=settings["temperature"],
                           memory_bank_size=(settings["queue_size"], settings["output_dim"]))

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        momentum = cosine_schedule(step, steps, settings["ema_start"], settings["ema_end"])
        update_momentum(backbone, backbone_momentum, m=momentum)
        update_momentum(head, head_momentum, m=momentum)
        query = head(backbone(views[0]))
        key = head_momentum(backbone_momentum(views[1])).detach()
        return criterion(query, key)

    return [head], step_loss, None


def lightly_byol(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    projection = BYOLProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    prediction = BYOLPredictionHead(settings["output_dim"], settings["predictor_hidden_dim"], settings["output_dim"])
    backbone_momentum, projection_momentum = copy.deepcopy(backbone), copy.deepcopy(projection)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(projection_momentum)
    criterion = NegativeCosineSimilarity()

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        momentum = cosine_schedule(step, steps, settings["ema_start"], settings["ema_end"])
        update_momentum(backbone, backbone_momentum, m=momentum)
        update_momentum(projection, projection_momentum, m=momentum)
        p0, p1 = (prediction(projection(backbone(view))) for view in views)
        z0, z1 = (projection_momentum(backbone_momentum(view)).detach() for view in views)
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

    return [projection, prediction], step_loss, None


def lightly_simsiam(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

    projection = SimSiamProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    prediction = SimSiamPredictionHead(settings["output_dim"], settings["predictor_hidden_dim"],
                                       settings["output_dim"])
    criterion = NegativeCosineSimilarity()

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        z0, z1 = (projection(backbone(view)) for view in views)
        p0, p1 = prediction(z0), prediction(z1)
        return 0.5 * (criterion(z0.detach(), p1) + criterion(z1.detach(), p0))

    return [projection, prediction], step_loss, None


def lightly_barlow_twins(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import BarlowTwinsLoss
    from lightly.models.modules import BarlowTwinsProjectionHead

    head = BarlowTwinsProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    criterion = BarlowTwinsLoss(lambda_param=settings["lambda_offdiag"])

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        return criterion(*(head(backbone(view)) for view in views))

    return [head], step_loss, None


def lightly_vicreg(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import VICRegLoss
    from lightly.models.modules.heads import VICRegProjectionHead

    head = VICRegProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"],
                                num_layers=settings["num_layers"])
    criterion = VICRegLoss()

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        return criterion(*(head(backbone(view)) for view in views))

    return [head], step_loss, None


def lightly_swav(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import SwaVLoss
    from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

    head = SwaVProjectionHead(backbone.num_features, settings["hidden_dim"], settings["output_dim"])
    prototypes = SwaVPrototypes(settings["output_dim"], n_prototypes=settings["num_prototypes"])
    criterion = SwaVLoss(temperature=settings["temperature"])

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        prototypes.normalize()
        outputs = [prototypes(nn.functional.normalize(head(backbone(view)), dim=1, p=2)) for view in views]
        return criterion(outputs, [])  # the two views are the high-resolution crops; no low-resolution ones

    return [head, prototypes], step_loss, None


def lightly_dino(backbone: nn.Module, settings: dict, steps: int, steps_per_epoch: int):
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    dims = (backbone.num_features, settings["hidden_dim"], settings["bottleneck_dim"], settings["output_dim"])
    student_head = DINOProjectionHead(*dims, freeze_last_layer=settings["freeze_last_layer_epochs"])
    teacher_backbone, teacher_head = copy.deepcopy(backbone), DINOProjectionHead(*dims)
    deactivate_requires_grad(teacher_backbone)
    deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(output_dim=settings["output_dim"], warmup_teacher_temp=settings["teacher_temperature"],
                         teacher_temp=settings["teacher_temperature"], student_temp=settings["student_temperature"],
                         center_momentum=settings["center_momentum"])

    def step_loss(views: list[torch.Tensor], step: int) -> torch.Tensor:
        momentum = cosine_schedule(step, steps, settings["ema_start"], settings["ema_end"])
        update_momentum(backbone, teacher_backbone, m=momentum)
        update_momentum(student_head, teacher_head, m=momentum)
        teacher_out = [teacher_head(teacher_backbone(view)) for view in views]
        student_out = [student_head(backbone(view)) for view in views]
        return criterion(teacher_out, student_out, epoch=step // steps_per_epoch)

    def after_backward(step: int) -> None:
        student_head.cancel_last_layer_gradients(current_epoch=step // steps_per_epoch)

    return [student_head], step_loss, after_backward


LIGHTLY_ARMS = {"simclr": lightly_simclr, "moco_v2": lightly_moco_v2, "byol": lightly_byol,
                "simsiam": lightly_simsiam, "barlow_twins": lightly_barlow_twins, "vicreg": lightly_vicreg,
                "swav": lightly_swav, "dino": lightly_dino}


def lightly_optimizer(modules: list[nn.Module], settings: dict) -> torch.optim.Optimizer:
    """LARS as lightly's benchmarks set it up (`get_weight_decay_parameters`: biases and norms without weight decay,
    which lightly's LARS then also leaves unscaled); SGD and Adam over all parameters, as lightly's examples."""
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.utils.lars import LARS as LightlyLARS

    if settings["optimizer"] == "lars":
        decay, no_decay = get_weight_decay_parameters(modules)
        return LightlyLARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=settings["lr"],
                           momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    parameters = [parameter for module in modules for parameter in module.parameters()]
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(parameters, lr=settings["lr"], momentum=settings["momentum"],
                               weight_decay=settings["weight_decay"])
    return torch.optim.Adam(parameters, lr=settings["lr"], weight_decay=settings["weight_decay"])


def lightly_arm(method: str, backbone: nn.Module, batches, settings: dict, steps_per_epoch: int) -> float:
    """lightly's example loop for `method` on the replayed batches; returns images per second."""
    heads, step_loss, after_backward = LIGHTLY_ARMS[method](backbone, settings, len(batches), steps_per_epoch)
    optimizer = lightly_optimizer([backbone, *heads], settings)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps(settings, len(batches)), len(batches))
    for module in (backbone, *heads):
        module.train()
    start = time.perf_counter()
    for step, views in enumerate(batches):
        loss = step_loss(views, step)
        loss.backward()
        if after_backward is not None:
            after_backward(step)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return len(batches) * batches[0][0].shape[0] / (time.perf_counter() - start)


def lars_max_relative_difference(backbone: nn.Module, views: torch.Tensor, settings: dict, steps: int = 5) -> float:
    """How far hfssl's and lightly's LARS lead apart from the same start: one gradient of `backbone` on `views` (of a
    fixed random direction of the features), `steps` updates of two copies of the weights with it, one optimiser each
    with their arm's parameter groups; returns the largest relative difference of a parameter's displacement,
    ||d_hfssl - d_lightly|| / ||d_lightly||. The two differ only in the trust ratio's denominator (hfssl
    ||g + wd w||, lightly ||g|| + wd ||w||)."""
    from lightly.models.utils import get_weight_decay_parameters
    from lightly.utils.lars import LARS as LightlyLARS

    model = copy.deepcopy(backbone).train()
    direction = torch.randn(views.shape[0], backbone.num_features, generator=torch.Generator().manual_seed(0))
    (model(views) * direction).sum().backward()
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    for parameter, *copies in zip(model.parameters(), ours.parameters(), theirs.parameters()):
        for copied in copies:
            copied.grad = parameter.grad.clone()
    hfssl_groups = [{"params": [p for p in ours.parameters() if p.ndim > 1], "weight_decay": settings["weight_decay"]},
                    {"params": [p for p in ours.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    decay, no_decay = get_weight_decay_parameters([theirs])
    optimizers = [LARS(hfssl_groups, lr=settings["lr"], momentum=settings["momentum"]),
                  LightlyLARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=settings["lr"],
                              momentum=settings["momentum"], weight_decay=settings["weight_decay"])]
    for _ in range(steps):
        for optimizer in optimizers:
            optimizer.step()
    differences = []
    for start, a, b in zip(model.parameters(), ours.parameters(), theirs.parameters()):
        moved = (b.detach() - start.detach()).norm()
        if moved > 0:
            differences.append(float((a.detach() - b.detach()).norm() / moved))
    return max(differences)


def hfssl_name(method: str) -> str:
    """hfssl's method name (`--method` of recipes/pretrain_ssl.py): MoCo v2 is `moco` with `variant="v2"`."""
    return "moco" if method == "moco_v2" else method


def hfssl_model(method: str, settings: dict, seed: int, steps_per_epoch: int) -> nn.Module:
    spec = method_named(hfssl_name(method))
    torch.manual_seed(seed)
    config = spec.config_class(backbone_name="resnet18", num_channels=1,
                               **hfssl_config(method, settings, steps_per_epoch))
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
    steps_per_epoch = max(1, len(train[0]) // args.batch_size)  # lightly's examples count epochs (drop_last=True)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        start = time.perf_counter()
        batches = view_batches(train[0], settings, args.steps, args.batch_size, seed)
        print(f"seed {seed}: {len(batches)} view batches in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        model = hfssl_model(args.method, settings, seed, steps_per_epoch)
        lightly_backbone = copy.deepcopy(model.backbone.model)  # the same timm resnet18 and initial weights
        run = {"seed": seed, "initial": features_report(lightly_backbone, memory, test)}
        if settings["optimizer"] == "lars":
            run["lars_max_relative_difference"] = lars_max_relative_difference(
                lightly_backbone, batches[0][0], settings)
        run["hfssl_images_per_second"] = hfssl_arm(args.method, model, batches, settings, seed)
        run["hfssl"] = features_report(model.backbone, memory, test)
        print(json.dumps(run), file=sys.stderr, flush=True)
        run["lightly_images_per_second"] = lightly_arm(
            args.method, lightly_backbone, batches, settings, steps_per_epoch)
        run["lightly"] = features_report(lightly_backbone, memory, test)
        print(json.dumps(run), file=sys.stderr, flush=True)
        runs.append(run)

    def mean(key: str, arm: str) -> float:
        return float(np.mean([run[arm][key] for run in runs]))

    result = {
        "bench": "quality", "method": args.method, "steps": args.steps, "batch_size": args.batch_size,
        "seeds": [run["seed"] for run in runs], "backbone": "timm resnet18, 1 channel", "settings": settings,
        "train_images": len(train[0]), "eval_images": [len(memory[0]), len(test[0])],
        "hfssl_knn_top1": mean("knn_top1", "hfssl"), "lightly_knn_top1": mean("knn_top1", "lightly"),
        "hfssl_minus_lightly_points": 100 * (mean("knn_top1", "hfssl") - mean("knn_top1", "lightly")),
        "untrained_knn_top1": mean("knn_top1", "initial"),
        "hfssl_embedding_std": mean("embedding_std", "hfssl"),
        "lightly_embedding_std": mean("embedding_std", "lightly"),
        "hfssl_effective_rank": mean("effective_rank", "hfssl"),
        "lightly_effective_rank": mean("effective_rank", "lightly"),
        "hfssl_images_per_second": float(np.mean([run["hfssl_images_per_second"] for run in runs])),
        "lightly_images_per_second": float(np.mean([run["lightly_images_per_second"] for run in runs])),
        "runs": runs, "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python"] + sys.argv),
    }
    result["throughput_ratio"] = result["hfssl_images_per_second"] / result["lightly_images_per_second"]
    line = json.dumps(result)
    print(line)
    if not args.no_record:
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as results:
            results.write(line + "\n")


if __name__ == "__main__":
    main()
