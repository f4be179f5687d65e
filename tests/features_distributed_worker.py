"""Run under `torchrun --nproc_per_node W`: every process calls `dataset_features` / `knn_evaluate` on the same
37 digits (not divisible by W) with a fixed linear encoder that counts the images it embeds; rank r saves what it got
to <out>/features_rank{r}.pt."""

import sys

import torch
import torch.distributed as dist
from torch import nn

from hfssl.data.images import load_digits_dataset
from hfssl.evaluation.features import dataset_features, knn_evaluate

IMAGE_SIZE, COUNT = 8, 37


class CountingEncoder(nn.Module):
    """A fixed random linear map of the flattened image, counting the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, 6)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=torch.Generator().manual_seed(0)))
            self.linear.bias.zero_()
        self.seen = 0
        self.data_config = {"input_size": (3, IMAGE_SIZE, IMAGE_SIZE), "mean": (0.5,) * 3, "std": (0.25,) * 3}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return self.linear(images.flatten(1))


def dataset():
    return load_digits_dataset(image_size=IMAGE_SIZE).select(range(COUNT))


def main(out: str) -> None:
    dist.init_process_group("gloo")
    encoder = CountingEncoder()
    features, labels = dataset_features(encoder, dataset(), batch_size=5)
    seen = encoder.seen
    accuracy = knn_evaluate(encoder, dataset(), dataset().select(range(10)), IMAGE_SIZE, (0.5,) * 3, (0.25,) * 3, k=3)
    torch.save({"features": features, "labels": labels, "seen": seen, "knn": accuracy},
               f"{out}/features_rank{dist.get_rank()}.pt")  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
