"""DINO / SwAV distributed checks, run by tests/test_dino.py under torchrun on CPU (gloo):

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dino_distributed_worker.py OUT

Every process takes its rows of fixed global tensors and writes `OUT/functions_rank<r>.pt`: its DINO batch centre and
centre update (`teacher_batch_center`, `update_center`) and its Sinkhorn codes. Then it trains DINO and SwAV (no
queue, the projector's BatchNorm made a LayerNorm so no layer has batch statistics) for `STEPS` steps on its share of a
fixed global batch and writes `OUT/<method>_rank<r>.pt` (logged losses, final state dict). Imported,
`global_functions()` and `train(method, OUT, 1)` compute the same on one process holding everything: the reference.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from conftest import TINY_HEAD, TINY_VIT  # this script's folder is on sys.path, under torchrun too
from hfssl.losses.dino import teacher_batch_center, update_center
from hfssl.losses.swav import sinkhorn_knopp
from hfssl.models.dino import DINOConfig, DINOModel
from hfssl.models.swav import SwAVConfig, SwAVModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.dino import DINOTrainer
from hfssl.trainers.swav import SwAVTrainer

GLOBAL_BATCH = 8
STEPS = 3
METHODS = ("dino", "swav")


def global_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "teacher_output": torch.randn(2, GLOBAL_BATCH, 10, generator=generator),  # (G, B, K)
        "center": torch.randn(1, 10, generator=generator),
        "scores": torch.randn(GLOBAL_BATCH, 6, generator=generator),  # (B, K)
    }


def functions(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """This process's results on its rows of the global tensors (all of them on one process)."""
    tensors, rows = global_tensors(), slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    teacher_output = tensors["teacher_output"][:, rows]
    return {
        "batch_center": teacher_batch_center(teacher_output),
        "center": update_center(tensors["center"], teacher_output, momentum=0.9),
        "codes": sinkhorn_knopp(tensors["scores"][rows], epsilon=0.5, iterations=3),
    }


def without_batch_statistics(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d by a LayerNorm of the same width, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.LayerNorm(child.num_features))
        else:
            without_batch_statistics(child)
    return module


def make_model(method: str) -> nn.Module:
    torch.manual_seed(0)
    if method == "dino":
        config = DINOConfig(backbone_model_config=TINY_VIT, out_dim=32, head_hidden_dim=16, head_bottleneck_dim=8,
                            warmup_teacher_temperature=0.02, warmup_teacher_temperature_steps=2,
                            freeze_last_layer_steps=1)  # fmt: skip
        return DINOModel(config)
    config = SwAVConfig(backbone_model_config=TINY_VIT, **TINY_HEAD, num_prototypes=12,
                        freeze_prototypes_steps=1, sinkhorn_epsilon=0.5)  # fmt: skip
    return without_batch_statistics(SwAVModel(config))


def crops_dataset(count: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        {"crops": [torch.randn(3, size, size, generator=generator) for size in (16, 16, 8, 8)]} for _ in range(count)
    ]


def collate(examples: list[dict]) -> dict[str, list[torch.Tensor]]:
    return {"pixel_values": [torch.stack([example["crops"][v] for example in examples]) for v in range(4)]}


def train(method: str, output_dir: str, world_size: int) -> dict:
    args = SSLTrainingArguments(
        use_cpu=True,  # gloo on CPU, and the one-process reference in the test process too (no GPU numerics)
        output_dir=os.path.join(output_dir, f"{method}_run"), max_steps=STEPS, report_to="none", disable_tqdm=True,
        per_device_train_batch_size=GLOBAL_BATCH // world_size, learning_rate=0.1, optim="sgd", max_grad_norm=0.0,
        lr_scheduler_type="constant", train_sampling_strategy="sequential", logging_steps=1, seed=0,
        save_strategy="no",
    )  # fmt: skip
    trainer_class = DINOTrainer if method == "dino" else SwAVTrainer
    trainer = trainer_class(model=make_model(method), args=args, data_collator=collate,
                            train_dataset=crops_dataset(GLOBAL_BATCH * STEPS))  # fmt: skip
    if trainer.accelerator.num_processes != world_size:
        raise RuntimeError(f"accelerate runs {trainer.accelerator.num_processes} processes, expected {world_size}.")
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
    }


def main(output_dir: str) -> None:
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    torch.distributed.init_process_group("gloo")
    torch.save(functions(rank, world_size), os.path.join(output_dir, f"functions_rank{rank}.pt"))
    for method in METHODS:
        torch.save(train(method, output_dir, world_size), os.path.join(output_dir, f"{method}_rank{rank}.pt"))
    torch.distributed.barrier()  # leave together, so no gloo thread is torn down mid-message
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
