"""Run by tests/test_simcse.py under torchrun (gloo, CPU): one SimCSE step on this process's share of a fixed
global batch; rank 0 saves the process-averaged loss and gradients (what DDP applies) to OUT.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/simcse_distributed_worker.py OUT

Imported, `one_step(0, 1)` is the single-process reference on the whole global batch. Dropout is off so both
runs see the same views (the maths of the gathered negatives is what is compared).
"""

import sys

import torch
import torch.distributed as dist
from transformers import BertConfig, BertModel

from hfssl.models.simcse import SimCSEModel

GLOBAL_BATCH = 12


def one_step(rank: int, world_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    model = SimCSEModel.from_encoder(encoder, temperature=0.05)
    input_ids = torch.randint(5, 50, (GLOBAL_BATCH, 7), generator=torch.Generator().manual_seed(1))
    share = GLOBAL_BATCH // world_size
    local = input_ids[rank * share : (rank + 1) * share]
    loss = model(input_ids=local, attention_mask=torch.ones_like(local)).loss
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    loss = loss.detach().clone()
    if world_size > 1:
        for tensor in (loss, *gradients.values()):
            dist.all_reduce(tensor)
            tensor /= world_size
    return loss, gradients


if __name__ == "__main__":
    dist.init_process_group("gloo")
    loss, gradients = one_step(dist.get_rank(), dist.get_world_size())
    if dist.get_rank() == 0:
        torch.save({"loss": loss, "gradients": gradients}, sys.argv[1])
    dist.destroy_process_group()
