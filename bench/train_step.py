"""Training steps/s of SimCLRTrainer against a hand-written PyTorch loop: same model, batch, optimiser, process.

    python bench/train_step.py --steps 10 --repeats 3

Both run SimCLR (timm resnet18, 32 px views precomputed, batch 64, SGD) on the same fixed batches; the figure is
the median over repeats of steps per second, and the ratio hfssl / hand-written (target >= 0.95). Prints one JSON line.
"""

import argparse
import json
import statistics
import time

import torch
from torch.utils.data import Dataset

from transformers import PrinterCallback

from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments


class FixedViews(Dataset):
    def __init__(self, size: int, image_size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.views = torch.randn(2, size, 3, image_size, image_size, generator=generator)

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, index: int) -> dict:
        return {"view1": self.views[0, index], "view2": self.views[1, index]}


def collate(examples: list[dict]) -> dict:
    return {"pixel_values": [torch.stack([e["view1"] for e in examples]), torch.stack([e["view2"] for e in examples])]}




def make_model() -> SimCLRModel:
    torch.manual_seed(0)
    return SimCLRModel(SimCLRConfig(backbone_name="resnet18", projection_hidden_dim=512))


def hand_written(steps: int, batch_size: int, dataset: FixedViews) -> float:
    model = make_model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=True)
    batches = iter(loader)
    model(**next(batches)).loss.backward()  # warm-up step, not timed
    optimizer.step(), optimizer.zero_grad()
    start = time.perf_counter()
    for _ in range(steps):
        loss = model(**next(batches)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps / (time.perf_counter() - start)


class Timer:
    """Steps/s of the Trainer after its first (warm-up) step."""

    def __init__(self) -> None:
        self.start = None

    def __call__(self, trainer: SimCLRTrainer) -> float:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 1:
                    timer.start = time.perf_counter()

        trainer.add_callback(Callback())
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        return (trainer.state.global_step - 1) / (time.perf_counter() - self.start)


def with_trainer(steps: int, batch_size: int, dataset: FixedViews) -> float:
    args = SSLTrainingArguments(output_dir="/tmp/hfssl_train_step", max_steps=steps + 1, per_device_train_batch_size=batch_size,
                                learning_rate=0.01, optim="sgd", optim_args="momentum=0.9", lr_scheduler_type="constant",
                                weight_decay=0.0, max_grad_norm=0.0, logging_steps=10_000, save_strategy="no",
                                report_to="none", disable_tqdm=True, exclude_norm_and_bias_from_weight_decay=False)
    trainer = SimCLRTrainer(model=make_model(), args=args, data_collator=collate, train_dataset=dataset)
    return Timer()(trainer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=32)
    args = parser.parse_args()
    dataset = FixedViews(args.batch_size * (args.steps + 2), args.image_size)
    hfssl_runs, torch_runs = [], []
    for _ in range(args.repeats):  # interleaved, so machine load affects both alike
        torch_runs.append(hand_written(args.steps, args.batch_size, dataset))
        hfssl_runs.append(with_trainer(args.steps, args.batch_size, dataset))
    hfssl, peer = statistics.median(hfssl_runs), statistics.median(torch_runs)
    print(json.dumps({"hfssl_simclr_trainer_steps_per_second": hfssl, "hand_written_loop_steps_per_second": peer,
                      "ratio": hfssl / peer, "batch_size": args.batch_size, "image_size": args.image_size,
                      "steps": args.steps, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
