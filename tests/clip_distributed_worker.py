"""Distributed checks of image-text contrastive training, run by tests/test_clip.py under torchrun on CPU (gloo):

    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 tests/clip_distributed_worker.py OUT

Every process trains each variant of `VARIANTS` (`DualEncoderTrainer`, tiny ViT and BERT without dropout, plain SGD)
for `STEPS` steps on its share of a fixed global batch of `GLOBAL_BATCH` (image, captions) pairs and writes
`OUT/<variant>_rank<r>.pt`: the loss logged at each step, every parameter's gradient at the first optimizer step
(after the all-reduce) and the final weights. Imported, `train(variant, OUT, 1)` trains the same thing in one process
holding the whole global batch: the reference. The towers have no batch statistics, so the reference is exact.
"""

from __future__ import annotations

import os
import sys

import torch
from transformers import BertConfig, TrainerCallback, ViTConfig

from hfssl.models.clip import DualEncoderConfig, DualEncoderModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.clip import DualEncoderTrainer

TINY_VIT = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=16,
                     patch_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).to_dict()  # fmt: skip
TINY_BERT = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).to_dict()  # fmt: skip
GLOBAL_BATCH = 8  # per process: 4 on 2 processes, 2 chunks of CHUNK_SIZE
CHUNK_SIZE = 2
STEPS = 2
# variant: (loss, captions per image, cached gradients)
VARIANTS = {"clip": ("clip", 1, False), "siglip": ("siglip", 2, False), "clip_cached": ("clip", 2, True)}


def make_model(loss: str) -> DualEncoderModel:
    torch.manual_seed(0)
    config = DualEncoderConfig(backbone_model_config=TINY_VIT, text_model_config=TINY_BERT, projection_dim=8, loss=loss)
    return DualEncoderModel(config)


def pairs(count: int, captions_per_image: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [{"pixel_values": torch.randn(3, 16, 16, generator=generator),
             "input_ids": torch.randint(5, 40, (captions_per_image, 6), generator=generator)} for _ in range(count)]


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    input_ids = torch.cat([example["input_ids"] for example in examples])  # image-major
    return {"pixel_values": torch.stack([example["pixel_values"] for example in examples]), "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids)}  # fmt: skip


class FirstStepGradients(TrainerCallback):
    """Keeps every parameter's gradient just before the first optimizer step."""

    def __init__(self) -> None:
        self.trainer, self.gradients = None, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step == 0:
            model = self.trainer.accelerator.unwrap_model(self.trainer.model)
            self.gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def train(variant: str, output_dir: str, world_size: int) -> dict:
    loss, captions_per_image, cached = VARIANTS[variant]
    args = SSLTrainingArguments(
        use_cpu=True,  # gloo on CPU, and the one-process reference in the test process too (no GPU numerics)
        output_dir=os.path.join(output_dir, variant), max_steps=STEPS, report_to="none", disable_tqdm=True,
        per_device_train_batch_size=GLOBAL_BATCH // world_size, learning_rate=0.01, optim="sgd", max_grad_norm=0.0,
        lr_scheduler_type="constant", train_sampling_strategy="sequential", logging_steps=1, seed=0,
        save_strategy="no", gradient_cache_chunk_size=CHUNK_SIZE if cached else None,
    )  # fmt: skip
    gradients = FirstStepGradients()
    trainer = DualEncoderTrainer(model=make_model(loss), args=args, data_collator=collate,
                                 train_dataset=pairs(GLOBAL_BATCH * STEPS, captions_per_image), callbacks=[gradients])
    if trainer.accelerator.num_processes != world_size:
        raise RuntimeError(f"accelerate runs {trainer.accelerator.num_processes} processes, expected {world_size}.")
    gradients.trainer = trainer
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        "gradients": gradients.gradients,
        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
    }


def main(output_dir: str) -> None:
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    for variant in VARIANTS:
        torch.save(train(variant, output_dir, world_size), os.path.join(output_dir, f"{variant}_rank{rank}.pt"))
    if torch.distributed.is_initialized():  # leave together, so no gloo thread is torn down mid-message
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
