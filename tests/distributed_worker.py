"""Distributed training checks, run by tests/test_distributed.py under torchrun on CPU (gloo):

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py OUT

Every process trains each variant of `VARIANTS` for `STEPS` steps on its share of a fixed global batch of
`GLOBAL_BATCH` pairs of views (sequential sampling, plain SGD, no clipping) and writes `OUT/<variant>_rank<r>.pt`:
the loss and metrics logged at each step, every parameter's gradient at the first optimizer step (after the
all-reduce), and the final state dict (weights, teacher, queue). Imported, `run_variant(variant, OUT, 1)` trains the
same thing in one process holding the whole global batch: the reference the files are compared with.
The heads' BatchNorm layers become LayerNorm (torch's SyncBatchNorm has no CPU kernel), so that no layer has batch
statistics and one process on the global batch is the exact reference.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn
from transformers import TrainerCallback

from conftest import TINY_HEAD, TINY_VIT  # this script's folder is on sys.path, under torchrun too
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import MoCoTrainer, SimCLRTrainer, SSLTrainingArguments

GLOBAL_BATCH = 12  # divisible by 2 and 3 processes, and by CHUNK_SIZE per process
CHUNK_SIZE = 2
STEPS = 3
VARIANTS = ("simclr", "moco_v2", "moco_v3", "simclr_cached", "moco_v2_cached", "moco_v3_cached")


def without_batch_statistics(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d by a LayerNorm of the same width and affinity, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.LayerNorm(child.num_features, elementwise_affine=child.affine))
        else:
            without_batch_statistics(child)
    return module


def make_model(method: str) -> nn.Module:
    torch.manual_seed(0)
    if method == "simclr":
        model = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, learnable_temperature=True, **TINY_HEAD))
    elif method == "moco_v2":
        model = MoCoModel(MoCoConfig(variant="v2", backbone_model_config=TINY_VIT, queue_size=16, **TINY_HEAD))
    else:
        model = MoCoModel(MoCoConfig(variant="v3", backbone_model_config=TINY_VIT, predictor_hidden_dim=16, **TINY_HEAD))
    return without_batch_statistics(model)


def pairs_of_views(count: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [{"view1": torch.randn(3, 16, 16, generator=generator), "view2": torch.randn(3, 16, 16, generator=generator)}
            for _ in range(count)]  # fmt: skip


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    return {"pixel_values": [torch.stack([example[view] for example in examples]) for view in ("view1", "view2")]}


class FirstStepGradients(TrainerCallback):
    """Keeps every parameter's gradient just before the first optimizer step."""

    def __init__(self) -> None:
        self.trainer, self.gradients = None, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step == 0:
            model = self.trainer.accelerator.unwrap_model(self.trainer.model)
            parameters = model.named_parameters()
            self.gradients = {name: p.grad.detach().clone() for name, p in parameters if p.grad is not None}


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def train(variant: str, output_dir: str, world_size: int, resume_at: int | None = None) -> dict:
    """Train `variant` for STEPS steps (or to `resume_at`, checkpoint, and resume in a new trainer)."""
    method = variant.removesuffix("_cached")
    args = SSLTrainingArguments(
        use_cpu=True,  # gloo on CPU, and the one-process reference in the test process too (no GPU numerics)
        output_dir=os.path.join(output_dir, f"{variant}_run"), max_steps=STEPS, report_to="none", disable_tqdm=True,
        per_device_train_batch_size=GLOBAL_BATCH // world_size, learning_rate=0.1, optim="sgd", max_grad_norm=0.0,
        lr_scheduler_type="constant", train_sampling_strategy="sequential", logging_steps=1, seed=0,
        ddp_broadcast_buffers=False,  # queues must agree because every process writes the same keys, not by broadcast
        gradient_cache_chunk_size=CHUNK_SIZE if variant.endswith("_cached") else None,
        save_strategy="steps" if resume_at else "no", save_steps=resume_at or 500,
    )  # fmt: skip
    trainer_class = SimCLRTrainer if method == "simclr" else MoCoTrainer
    gradients = FirstStepGradients()
    callbacks = [gradients] + ([StopAt(resume_at)] if resume_at else [])
    data = pairs_of_views(GLOBAL_BATCH * STEPS)
    trainer = trainer_class(model=make_model(method), args=args, data_collator=collate, train_dataset=data,
                            callbacks=callbacks)  # fmt: skip
    if trainer.accelerator.num_processes != world_size:
        raise RuntimeError(f"accelerate runs {trainer.accelerator.num_processes} processes, expected {world_size}.")
    gradients.trainer = trainer
    trainer.train()
    history = trainer.state.log_history
    if resume_at:
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{resume_at}")
        trainer = trainer_class(model=make_model(method), args=args, data_collator=collate, train_dataset=data)
        trainer.train(resume_from_checkpoint=checkpoint)
        history = trainer.state.log_history  # restored from the checkpoint, then continued
    steps = [entry for entry in history if "loss" in entry]
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "losses": [entry["loss"] for entry in steps],
        "positive_cosine": [entry["contrastive/positive_cosine"] for entry in steps],
        "temperature": [entry["contrastive/temperature"] for entry in steps],
        "gradients": gradients.gradients,
        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
    }


def main(output_dir: str) -> None:
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    runs = {variant: (variant, None) for variant in VARIANTS}
    if world_size == 2:
        runs["moco_v2_resumed"] = ("moco_v2", 2)
    for name, (variant, resume_at) in runs.items():
        result = train(variant, os.path.join(output_dir, name), world_size, resume_at)
        torch.save(result, os.path.join(output_dir, f"{name}_rank{rank}.pt"))
    if torch.distributed.is_initialized():  # leave together, so no gloo thread is torn down mid-message
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
