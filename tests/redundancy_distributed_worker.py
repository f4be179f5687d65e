"""Distributed checks of Barlow Twins and VICReg, run by tests/test_redundancy_reduction.py under torchrun (gloo):

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 \
        tests/redundancy_distributed_worker.py OUT

1. The losses alone (float64): a linear layer shared by every process embeds this process's rows of a fixed global
   batch; the loss is back-propagated and the weight's gradient averaged over processes (what DDP does). Written to
   `OUT/loss_<method>_rank<r>.pt`: loss, its terms and that gradient.
2. Training: `BarlowTwinsTrainer` / `VICRegTrainer` for `STEPS` steps on this process's share of a fixed global batch
   (the tiny ViT and heads of tests/distributed_worker.py, BatchNorm swapped for LayerNorm so that only the loss has
   batch statistics). Written to `OUT/train_<method>_rank<r>.pt`: logged losses and metrics, first-step gradients,
   final state dict.
Imported, `loss_run(method, 1)` and `train(method, OUT, 1)` compute the same things in one process holding the whole
global batch: the references.
"""

from __future__ import annotations

import os
import sys

import torch
from conftest import TINY_HEAD, TINY_VIT  # this script's folder is on sys.path, under torchrun too
from distributed_worker import (
    FirstStepGradients,
    collate,
    pairs_of_views,
    without_batch_statistics,
)

from hfssl.distributed import rank as process_rank
from hfssl.distributed import world_size as process_count
from hfssl.losses.barlow_twins import barlow_twins_loss
from hfssl.losses.vicreg import vicreg_loss
from hfssl.models.barlow_twins import BarlowTwinsConfig, BarlowTwinsModel
from hfssl.models.vicreg import VICRegConfig, VICRegModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.redundancy import BarlowTwinsTrainer, VICRegTrainer

METHODS = ("barlow_twins", "vicreg")
GLOBAL_BATCH = 8  # divisible by 2 processes
STEPS = 2
METRICS = {"barlow_twins": ("barlow/on_diagonal", "barlow/off_diagonal"),
           "vicreg": ("vicreg/invariance", "vicreg/variance", "vicreg/covariance")}  # fmt: skip


def loss_run(method: str, world_size: int) -> dict:
    """The loss of this process's rows and the process-averaged gradient of the shared linear layer (float64)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, GLOBAL_BATCH, 5, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 6, generator=generator, dtype=torch.float64).requires_grad_()
    local = GLOBAL_BATCH // world_size
    x1, x2 = inputs[:, process_rank() * local : (process_rank() + 1) * local]
    loss_function = barlow_twins_loss if method == "barlow_twins" else vicreg_loss
    terms = loss_function(x1 @ weight, x2 @ weight)
    terms.loss.backward()
    if world_size > 1:
        torch.distributed.all_reduce(weight.grad)
        weight.grad /= world_size
    return {"terms": torch.stack(list(terms)).detach(), "gradient": weight.grad}


def make_model(method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    head = {**TINY_HEAD, "backbone_model_config": TINY_VIT}
    model = BarlowTwinsModel(BarlowTwinsConfig(**head)) if method == "barlow_twins" else VICRegModel(VICRegConfig(**head))
    return without_batch_statistics(model)


# Barlow Twins' gradients here are ~1e3 (a sum over D^2 correlations): at 0.05 a step is so large that rounding
# differences (thread count, reduction order) grow past any fixed tolerance within a few steps.
LEARNING_RATE = {"barlow_twins": 1e-4, "vicreg": 0.05}


def train(method: str, output_dir: str, world_size: int) -> dict:
    """Train `method` for STEPS steps on this process's share of the global batch (plain SGD, sequential)."""
    args = SSLTrainingArguments(
        output_dir=os.path.join(output_dir, f"{method}_run"), max_steps=STEPS, report_to="none", disable_tqdm=True,
        per_device_train_batch_size=GLOBAL_BATCH // world_size, learning_rate=LEARNING_RATE[method], optim="sgd", max_grad_norm=0.0,
        lr_scheduler_type="constant", train_sampling_strategy="sequential", logging_steps=1, seed=0, save_strategy="no",
        use_cpu=True,  # gloo processes and the one-process reference on the same device, also on GPU machines
    )  # fmt: skip
    gradients = FirstStepGradients()
    trainer_class = BarlowTwinsTrainer if method == "barlow_twins" else VICRegTrainer
    trainer = trainer_class(model=make_model(method), args=args, data_collator=collate,
                            train_dataset=pairs_of_views(GLOBAL_BATCH * STEPS), callbacks=[gradients])  # fmt: skip
    if trainer.accelerator.num_processes != world_size:
        raise RuntimeError(f"accelerate runs {trainer.accelerator.num_processes} processes, expected {world_size}.")
    gradients.trainer = trainer
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry]
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "losses": [entry["loss"] for entry in steps],
        "metrics": {name: [entry[name] for entry in steps] for name in METRICS[method]},
        "gradients": gradients.gradients,
        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
    }


def main(output_dir: str) -> None:
    torch.distributed.init_process_group("gloo")
    world_size, rank = process_count(), process_rank()
    for method in METHODS:
        torch.save(loss_run(method, world_size), os.path.join(output_dir, f"loss_{method}_rank{rank}.pt"))
    for method in METHODS:
        torch.save(train(method, output_dir, world_size), os.path.join(output_dir, f"train_{method}_rank{rank}.pt"))
    torch.distributed.barrier()  # leave together, so no gloo thread is torn down mid-message
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
