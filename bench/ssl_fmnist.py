"""Fashion-MNIST SSL benchmark: hfssl's methods against lightly's SimCLR, same backbone and wall-clock.

    python bench/ssl_fmnist.py                       # raw, random, lightly, SimCLR, MoCo v2: 8 min per method
    python bench/ssl_fmnist.py --methods raw,lightly,byol,simsiam,barlow_twins,vicreg,dino,swav
    python bench/ssl_fmnist.py --budget_seconds 60   # quick development run
    python bench/ssl_fmnist.py --methods raw,random,lightly,byol,simsiam,vicreg,dino,barlow_twins,swav --backbone test_resnet --lightly_backbone test_resnet --backbone_kwargs '{"channels": [32, 48, 96, 192]}'
    # ^ the issue-5 methods as in BENCHMARKS.md (session 12): test_resnet with wider last stages, lightly on the same
    python bench/ssl_fmnist.py --methods moco --backbone resnet10t --budget_seconds 600 --moco_batch_norm_splits 16
    # ^ the best configuration (issue 4, BENCHMARKS.md session 13): MoCo v2 with shuffle BN, 10 minutes

Methods: simclr, moco (v2), byol, simsiam, barlow_twins, vicreg, dino, swav, each through its hfssl trainer with the
settings of `method_settings` (its batch size, crop scale and, for DINO and SwAV, local crops included) and the same
kind of grayscale views (crop, flip, brightness/contrast jitter).
Labels are unused for training. Each method trains for `--budget_seconds` of wall-clock (data, augmentation and
optimisation included; the learning-rate schedule is sized from a short timed calibration inside the budget), then
weighted kNN top-1 (k=200, cosine, temperature 0.1, the 60k train set as memory) is measured on the 10k test set.
Also measured: raw-pixel kNN (plain and per-pixel standardised) and a randomly initialised backbone.
hfssl's runs use `SSLTrainingArguments(channels_last=True)` (`--no-channels_last` turns it off); lightly's runs as its
documentation writes them. Each method also reports its collapse signals at ten logging steps (`signals`). Prints
one JSON line (and each method's result on stderr as soon as it is measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial

import numpy as np
import torch
from torch import nn
from transformers import PrinterCallback, TrainerCallback

from hfssl.augmentations.presets import ViewAugmentation
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.data.images import FASHION_MNIST_DIR, _read_idx
from hfssl.evaluation.features import extract_features
from hfssl.evaluation.knn import knn_accuracy
from hfssl.models.backbone import Backbone
from hfssl.trainers.arguments import SSLTrainingArguments

MEAN, STD = (0.2860,), (0.3530,)
SSL_METHODS = ("simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "dino", "swav")


class ArrayImages(torch.utils.data.Dataset):
    """uint8 images (N, H, W) as {"image": array} examples (what a datasets Image column decodes to)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index]}


class StopAfter(TrainerCallback):
    """Stop training once `seconds` of wall-clock have passed since `start`."""

    def __init__(self, start: float, seconds: float) -> None:
        self.start, self.seconds = start, seconds

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.start >= self.seconds:
            control.should_training_stop = True


class WallClockPlan(TrainerCallback):
    """Fit the schedules to the wall-clock budget. Trainer is given `capacity` steps (headroom for its epoch loop);
    at the start this sets the run's length (`state.max_steps`, which the momentum / weight-decay schedules and the
    stop read, and the cosine learning rate's `num_training_steps`) to the calibrated estimate, then once, at
    `replan_at` of the run, re-estimates it from the pace measured since step 10: a 12-step calibration on this noisy
    machine was off by up to 17%, ending runs 70 s early or cutting their cosine short."""

    def __init__(self, start: float, seconds: float, planned: int, capacity: int, replan_at: float = 0.3) -> None:
        self.start, self.seconds, self.planned, self.capacity, self.replan_at = start, seconds, planned, capacity, replan_at
        self.mark: float | None = None
        self.replanned = False
        self.totals: list[int] = []

    def set_total(self, state, scheduler, total: int) -> None:
        total = int(min(max(total, state.global_step + 1), self.capacity))
        state.max_steps = total
        scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wrapper, if any
        scheduler.lr_lambdas = [partial(fn.func, *fn.args, **{**fn.keywords, "num_training_steps": total})
                                if isinstance(fn, partial) else fn  # a constant group (fixed_predictor_lr) stays
                                for fn in scheduler.lr_lambdas]  # fmt: skip
        self.totals.append(total)

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self.set_total(state, lr_scheduler, self.planned)

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        now = time.perf_counter()
        if state.global_step == 10:
            self.mark = now
        elif self.mark is not None and not self.replanned and state.global_step >= self.replan_at * state.max_steps:
            pace = (now - self.mark) / (state.global_step - 10)
            remaining = self.seconds - (now - self.start) - 2
            self.set_total(state, lr_scheduler, state.global_step + int(remaining / pace))
            self.replanned = True


class StepTimes(TrainerCallback):
    """Record the wall-clock at the end of each step (for the calibration)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(f"{FASHION_MNIST_DIR}/{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(f"{FASHION_MNIST_DIR}/{prefix}-labels-idx1-ubyte.gz")
    return images, torch.from_numpy(labels.astype(np.int64))


def knn_of_backbone(backbone: nn.Module, train, test, image_size: int, channels: int, mean, std) -> float:
    memory = extract_features(backbone, list(train[0]), image_size, mean, std, channels=channels, batch_size=1024)
    queries = extract_features(backbone, list(test[0]), image_size, mean, std, channels=channels, batch_size=1024)
    return knn_accuracy(memory, train[1], queries, test[1], k=200, temperature=0.1)


# Per method: config fields and optimiser (LARS learning rate, or with "optim" a Trainer optimiser's, e.g. AdamW's). SimCLR and
# MoCo use the command-line settings; the others start from the small-data settings of solo-learn / lightly and keep
# what the test_resnet runs of BENCHMARKS.md found best at this budget (batch size, optimiser, clipping, DINO's and
# SwAV's local crops). Keys besides "config": lr, weight_decay, optim, optim_args, max_grad_norm, batch_size,
# min_scale, num_local_crops, fixed_predictor_lr, and for DINO warmup_teacher_temperature_fraction (of the run's steps).
def method_settings(method: str, args) -> dict:
    heads = {"projection_hidden_dim": 512, "projection_dim": 128}
    optimiser = {} if args.lars else {"optim": "sgd", "optim_args": "momentum=0.9"}  # SimCLR and MoCo: --lars
    return {
        "simclr": {"config": {**heads, "temperature": args.temperature}, "lr": args.lr, **optimiser},
        "moco": {"config": {**heads, "variant": "v2", "queue_size": args.queue_size, "temperature": args.moco_temperature,
                            "momentum": args.moco_momentum, "momentum_final": args.moco_momentum, "symmetric": True,
                            "batch_norm_splits": args.moco_batch_norm_splits},
                 "lr": args.lr, **optimiser},
        # BYOL (64), SimSiam (128), DINO (64) and SwAV (64, with a feature queue) train at smaller batches: at this
        # budget 1.7-3x the optimiser steps for 0.7-0.9x the images, which these methods (no negatives to gather) turn
        # into 1-3 points of kNN (BENCHMARKS.md); crops from 0.4 of the image (SimCLR, MoCo, Barlow Twins, VICReg: 0.8)
        "byol": {"config": {"projection_hidden_dim": 1024, "projection_dim": 256, "predictor_hidden_dim": 1024,
                            "momentum": 0.99, "momentum_final": 1.0}, "lr": 1.0, "weight_decay": 1e-5,
                 "max_grad_norm": 1.0, "batch_size": 64, "min_scale": 0.4},
        "simsiam": {"config": {"projection_hidden_dim": 512, "projection_dim": 512, "projection_layers": 2,
                               "predictor_hidden_dim": 128}, "lr": 0.15, "weight_decay": 5e-4, "optim": "sgd",
                    "optim_args": "momentum=0.9", "batch_size": 128, "min_scale": 0.4},
        "barlow_twins": {"config": {"projection_hidden_dim": 1024, "projection_dim": 1024, "lambda_offdiag": 0.0051},
                         "lr": 1e-3, "weight_decay": 1e-4, "optim": "adamw_torch", "max_grad_norm": 1.0},
        "vicreg": {"config": {"projection_hidden_dim": 1024, "projection_dim": 1024}, "lr": 1.0, "weight_decay": 1e-5,
                   "max_grad_norm": 1.0},
        "dino": {"config": {"out_dim": 2048, "head_hidden_dim": 1024, "head_bottleneck_dim": 128, "head_batch_norm": True,
                            "norm_last_layer": False, "momentum": 0.99, "teacher_temperature": 0.07,
                            "warmup_teacher_temperature": 0.04, "freeze_last_layer_steps": 0},
                 "warmup_teacher_temperature_fraction": 0.3, "lr": 0.6, "weight_decay": 1e-6, "max_grad_norm": 3.0,
                 "batch_size": 64, "min_scale": 0.4, "num_local_crops": 0},
        "swav": {"config": {"projection_hidden_dim": 512, "projection_dim": 128, "num_prototypes": 300,
                            "queue_length": 1024, "queue_start_step": 300},
                 "lr": 0.6, "weight_decay": 1e-6, "max_grad_norm": 1.0, "batch_size": 64, "min_scale": 0.4,
                 "num_local_crops": 0},
    }[method]


def merge(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys replaced (nested dicts merged key by key)."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def make_collator(method: str, args, settings: dict) -> DataCollatorForMultiView:
    """Grayscale-friendly views (crop, flip, brightness/contrast jitter) for every method: 2 views, or for DINO and
    SwAV 2 global views plus `num_local_crops` local crops at `--local_size` (`--num_local_crops`, else the
    method's setting)."""
    common = dict(jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.0, hue=0.0, grayscale_p=0.0, blur_p=0.0)
    min_scale = settings.get("min_scale", args.min_scale)
    views = [ViewAugmentation(size=args.image_size, scale=(min_scale, 1.0), **common)] * 2
    if method in ("dino", "swav"):
        local = args.num_local_crops if args.num_local_crops is not None else settings.get("num_local_crops", 4)
        views = views + [ViewAugmentation(size=args.local_size, scale=(0.1, min_scale), **common)] * local
    return DataCollatorForMultiView(views=views, channels=1, mean=MEAN, std=STD, seed=args.seed)


def hfssl_run(method: str, args, train, test) -> dict:
    """Train with the method's trainer for the budget; returns kNN accuracy, throughput and the last collapse signals."""
    from hfssl.trainers.methods import method_named

    torch.manual_seed(args.seed)
    settings, spec = method_settings(method, args), method_named(method)
    settings = merge(settings, json.loads(args.method_overrides).get(method, {}))
    model = spec.model_class(spec.config_class(backbone_name=args.backbone, small_image_stem=args.small_image_stem,
                                               num_channels=1, backbone_kwargs=json.loads(args.backbone_kwargs),
                                               **settings["config"]))  # fmt: skip
    collator = make_collator(method, args, settings)
    dataset = ArrayImages(train[0])
    batch_size = settings.get("batch_size", args.batch_size)  # a method setting like its learning rate
    lars = settings.get("optim", "lars") == "lars"  # no "optim" (or "optim": "lars"): LARS over SGD
    optimiser = {"lars": lars, "learning_rate": settings["lr"],
                 "weight_decay": settings.get("weight_decay", args.weight_decay),
                 "optim": "adamw_torch" if lars else settings["optim"],
                 "optim_args": settings.get("optim_args"), "channels_last": args.channels_last,
                 "max_grad_norm": settings.get("max_grad_norm", 0.0),  # 0: no clipping
                 "fixed_predictor_lr": settings.get("fixed_predictor_lr", False)}
    start = time.perf_counter()
    # Calibration: time a few steps after a warm-up (the first steps are slower) to size the cosine schedules to the
    # budget; its time counts towards the budget, its steps (trained, then discarded) are not reported as training.
    calibration_steps, warmup = 20, 8
    calib_args = SSLTrainingArguments(output_dir="/tmp/hfssl_bench", max_steps=calibration_steps, per_device_train_batch_size=batch_size,
                                      report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1000,
                                      seed=args.seed, collapse_action="none", **optimiser)  # fmt: skip
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    times = StepTimes()
    probe = spec.trainer_class(model=model, args=calib_args, data_collator=collator, train_dataset=dataset, callbacks=[times])
    probe.remove_callback(PrinterCallback)
    probe.train()
    # median step time: robust to a moment of contention from another process during the calibration
    step_seconds = float(np.median(np.diff(times.times[warmup - 1 :])))
    model.load_state_dict(initial)
    remaining = args.budget_seconds - (time.perf_counter() - start) - 5  # 5 s for the trainer's start-up
    max_steps = max(1, int(remaining / step_seconds))
    print(f"calibration: {step_seconds:.3f} s per step, {max_steps} steps", file=sys.stderr, flush=True)
    if method == "swav":  # prototypes frozen for the first 10% of a short run
        model.config.freeze_prototypes_steps = max_steps // 10
    if "warmup_teacher_temperature_fraction" in settings and "warmup_teacher_temperature_steps" not in settings["config"]:
        # DINO: teacher temperature warm-up over part of the run (unless an override gives it in steps)
        model.config.warmup_teacher_temperature_steps = int(max_steps * settings["warmup_teacher_temperature_fraction"])
    plan = WallClockPlan(start, args.budget_seconds, max_steps, capacity=int(max_steps * 2))
    train_args = SSLTrainingArguments(
        output_dir="/tmp/hfssl_bench", max_steps=plan.capacity, per_device_train_batch_size=batch_size,
        lr_scheduler_type="cosine", warmup_steps=max(1, max_steps // 20), report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=max(1, max_steps // 10), seed=args.seed, dataloader_num_workers=args.num_workers,
        **optimiser,
    )
    trainer = spec.trainer_class(model=model, args=train_args, data_collator=collator, train_dataset=dataset,
                                 callbacks=[plan, StopAfter(start, args.budget_seconds)])  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    print(f"planned steps: {plan.totals}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    steps = trainer.state.global_step  # the calibration's steps are discarded with their weights
    accuracy = knn_of_backbone(model.backbone, train, test, args.image_size, 1, MEAN, STD)
    # BYOL, DINO, MoCo: also the EMA teacher's encoder (the one DINO's paper evaluates and releases)
    teacher = getattr(model, "teacher_backbone", None)
    teacher_accuracy = knn_of_backbone(teacher, train, test, args.image_size, 1, MEAN, STD) if teacher is not None else None
    logs = [entry for entry in trainer.state.log_history if "embedding/std" in entry and "loss" in entry]
    signals = {key: [round(entry[key], 4) for entry in logs] for key in
               ("loss", "embedding/std", "embedding/effective_rank", "collapse/uniform_loss_gap") if logs and key in logs[0]}
    result = {"knn_top1": accuracy, **({"knn_top1_teacher": teacher_accuracy} if teacher is not None else {}), "steps": steps, "images_per_second": steps * batch_size / elapsed,
              "epochs": steps * batch_size / len(dataset), "seconds": elapsed, "batch_size": batch_size, "signals": signals}
    print(json.dumps({method: result}), file=sys.stderr, flush=True)  # partial results as they come
    return result


def lightly_run(args, train, test) -> dict:
    """lightly's SimCLR as its documentation writes it: timm backbone, SimCLRTransform, NTXentLoss, SGD."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    torch.manual_seed(args.seed)
    same_model = args.lightly_backbone == args.backbone  # then the same architecture: --backbone_kwargs as well
    backbone = Backbone(args.lightly_backbone, small_image_stem=False, model_kwargs=json.loads(args.backbone_kwargs) if same_model else {})
    head = SimCLRProjectionHead(backbone.feature_dim, backbone.feature_dim, 128)
    transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)

    class Views(torch.utils.data.Dataset):
        def __len__(self):
            return len(train[0])

        def __getitem__(self, index):
            return transform(Image.fromarray(train[0][index]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Views(), batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.num_workers)
    criterion = NTXentLoss(temperature=0.5)
    parameters = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.06)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.budget_seconds:
        for view1, view2 in loader:
            z1, z2 = head(backbone(view1)), head(backbone(view2))
            loss = criterion(z1, z2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= args.budget_seconds:
                break
    elapsed = time.perf_counter() - start
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # SimCLRTransform's normalisation
    accuracy = knn_of_backbone(backbone, train, test, 32, 3, mean, std)
    return {"knn_top1": accuracy, "steps": steps, "images_per_second": steps * args.batch_size / elapsed,
            "epochs": steps * args.batch_size / len(train[0]), "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget_seconds", type=float, default=480)
    parser.add_argument("--methods", default="raw,random,lightly,simclr,moco")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--lightly_backbone", default="resnet18", help="timm name; when it is --backbone, --backbone_kwargs apply to it too")
    parser.add_argument("--backbone_kwargs", default="{}", help='JSON for timm.create_model, e.g. \'{"channels": [32, 64, 128, 256]}\'')
    parser.add_argument("--small_image_stem", action="store_true")
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--lars", action=argparse.BooleanOptionalAction, default=True,
                        help="SimCLR and MoCo: LARS (default), or with --no-lars SGD with momentum 0.9, at --lr")
    parser.add_argument("--weight_decay", type=float, default=1e-6)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--min_scale", type=float, default=0.8)
    parser.add_argument("--queue_size", type=int, default=4096)
    parser.add_argument("--moco_temperature", type=float, default=0.1)
    parser.add_argument("--moco_momentum", type=float, default=0.99)
    parser.add_argument("--moco_batch_norm_splits", type=int, default=1,
                        help="MoCo: shuffle BN, BatchNorm statistics over this many groups of each batch (1: off)")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                        help="hfssl runs: SSLTrainingArguments(channels_last=...) (1.25-1.4x faster steps with timm ResNets here)")
    parser.add_argument("--local_size", type=int, default=12, help="DINO / SwAV local crop side")
    parser.add_argument("--num_local_crops", type=int, default=None, help="DINO / SwAV local crops (default: the method's)")
    parser.add_argument("--method_overrides", default="{}",
                        help='JSON merged into `method_settings` (config fields under "config"; lr, weight_decay, optim, optim_args, '
                             'max_grad_norm, batch_size, min_scale, num_local_crops), e.g. \'{"simsiam": {"lr": 0.05, "optim": "sgd", "optim_args": "momentum=0.9"}}\'')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=0, help="development: train on the first N images only")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train, test = load("train"), load("test")
    if args.subset:  # development runs: the first N train and N // 6 test images
        train, test = (train[0][: args.subset], train[1][: args.subset]), (test[0][: args.subset // 6], test[1][: args.subset // 6])
    methods = args.methods.split(",")
    results: dict = {"budget_seconds": args.budget_seconds, "method_overrides": json.loads(args.method_overrides), "backbone": args.backbone, "backbone_kwargs": args.backbone_kwargs,
                     "small_image_stem": args.small_image_stem, "batch_size": args.batch_size, "channels_last": args.channels_last,
                     "moco_batch_norm_splits": args.moco_batch_norm_splits, "seed": args.seed}
    if "raw" in methods:
        flat_train, flat_test = torch.from_numpy(train[0].reshape(len(train[0]), -1)).float(), torch.from_numpy(test[0].reshape(len(test[0]), -1)).float()
        results["raw_pixels_knn"] = knn_accuracy(flat_train, train[1], flat_test, test[1])
        mean, std = flat_train.mean(0), flat_train.std(0) + 1e-6
        results["standardized_pixels_knn"] = knn_accuracy((flat_train - mean) / std, train[1], (flat_test - mean) / std, test[1])
    if "random" in methods:
        torch.manual_seed(args.seed)
        backbone = Backbone(args.backbone, small_image_stem=args.small_image_stem, in_chans=1,
                            model_kwargs=json.loads(args.backbone_kwargs))
        results["random_backbone_knn"] = knn_of_backbone(backbone, train, test, args.image_size, 1, MEAN, STD)
    if "lightly" in methods:
        results["lightly_simclr"] = lightly_run(args, train, test)
    for method in SSL_METHODS:
        if method in methods:
            results[f"hfssl_{method}"] = hfssl_run(method, args, train, test)
    if "lightly_simclr" in results:
        peer = results["lightly_simclr"]["knn_top1"]
        for method in SSL_METHODS:
            if f"hfssl_{method}" in results:
                results[f"{method}_minus_lightly_points"] = 100 * (results[f"hfssl_{method}"]["knn_top1"] - peer)
                results[f"{method}_ratio_to_lightly"] = results[f"hfssl_{method}"]["knn_top1"] / peer
    print(json.dumps(results))


if __name__ == "__main__":
    main()
