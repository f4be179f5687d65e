"""Distributed correctness: 2 and 3 gloo processes (torchrun, tests/distributed_worker.py) against one process on the
same global batch, for SimCLR, MoCo v2 and v3, plain and with cached gradients; and the single-process helpers."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import TINY_HEAD, TINY_VIT, torch_threads
from hfssl.models.teacher import check_teacher_sharding
from hfssl.distributed import (
    average_across_processes,
    average_gradients,
    convert_sync_batchnorm,
    end_processes,
    gather_no_grad,
    gather_with_grad,
    other_processes,
)
from hfssl.trainers import SimCLRTrainer, SSLTrainingArguments

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
TOLERANCE = 1e-5


# ---- one process: no-ops, refusals, options ---------------------------------------------------------------------


def test_helpers_are_no_ops_on_one_process():
    tensor = torch.randn(4, 3, requires_grad=True)
    assert gather_with_grad(tensor) is tensor and gather_no_grad(tensor) is tensor
    assert other_processes(tensor, 4) is None
    assert average_across_processes({"loss": 2.0}) == {"loss": 2.0}
    layer = nn.Linear(3, 2)
    layer(tensor).sum().backward()
    before = layer.weight.grad.clone()
    average_gradients(layer.parameters())
    assert torch.equal(layer.weight.grad, before)


def test_end_processes_destroys_the_group_and_is_a_no_op_without_one(tmp_path):
    """Recipes end with it: a group left alive can abort a finished gloo process at interpreter exit."""
    import torch.distributed as dist

    end_processes()  # no group: nothing to do, no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_processes()
    assert not dist.is_initialized()


def test_momentum_teachers_are_refused_under_sharded_parameters():
    moco, simclr = worker.make_model("moco_v3"), worker.make_model("simclr")
    message = "MoCoModel has a momentum teacher.*but FSDP shards them.*DDP.*ZeRO stage 1 or 2"
    with pytest.raises(ValueError, match=message):
        check_teacher_sharding(moco, "FSDP")
    with pytest.raises(ValueError, match="but DeepSpeed ZeRO stage 3 shards them.*deepspeed_zero2.yaml"):
        check_teacher_sharding(moco, "DEEPSPEED", zero_stage=3)
    for distributed_type, stage in (("DEEPSPEED", 2), ("MULTI_GPU", None), ("MULTI_CPU", None), ("NO", None)):
        check_teacher_sharding(moco, distributed_type, stage)
    check_teacher_sharding(simclr, "FSDP")  # no teacher: sharding is fine


def test_sync_batchnorm_option_converts_every_batch_norm(tmp_path):
    model = worker.SimCLRModel(worker.SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
    batch_norm = model.projector.layers[1]
    args = SSLTrainingArguments(output_dir=str(tmp_path), sync_batchnorm=True, report_to="none")
    trainer = SimCLRTrainer(model=model, args=args, data_collator=worker.collate)
    converted = trainer.model.projector.layers[1]
    assert isinstance(converted, nn.SyncBatchNorm) and converted.weight is batch_norm.weight
    assert not any(type(m) is nn.BatchNorm1d for m in trainer.model.modules())
    device = next(trainer.model.parameters()).device  # the Trainer may have placed it on a GPU
    output = trainer.model(pixel_values=[torch.randn(4, 3, 16, 16, device=device), torch.randn(4, 3, 16, 16, device=device)])  # one process: plain BN
    assert torch.isfinite(output.loss)


def test_sync_batchnorm_on_cpu_processes_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    message = "sync_batchnorm=True needs GPUs.*2 processes on CPU.*set sync_batchnorm=False"
    with pytest.raises(ValueError, match=message):
        convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3)), "cpu")


# ---- several processes against one ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process on the whole global batch, for each method."""
    methods = ("simclr", "moco_v2", "moco_v3")
    with torch_threads(1):
        return {method: worker.train(method, str(tmp_path_factory.mktemp(method)), 1) for method in methods}


def assert_all_close(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), f"{what}: names differ: {set(got) ^ set(want)}"
    for name, tensor in want.items():
        torch.testing.assert_close(got[name].float(), tensor.float(), rtol=0, atol=TOLERANCE, msg=f"{what}: {name}")


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
def test_processes_match_one_process_on_the_global_batch(world_size, reference, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}", WORKER,
               str(tmp_path)]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU everywhere
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900, env=environment)
    if completed.returncode != 0 and "terminate called without an active exception" in completed.stderr:
        # Seen once in ~10 CI runs: a gloo worker aborting in C++ with no Python error. Such a crash is retried
        # once; a Python error or a wrong number fails at once.
        completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900, env=environment)
    assert completed.returncode == 0, completed.stderr[-5000:]

    names = list(worker.VARIANTS) + (["moco_v2_resumed"] if world_size == 2 else [])
    for name in names:
        want = reference[name.removesuffix("_cached").removesuffix("_resumed")]
        ranks = [torch.load(tmp_path / f"{name}_rank{rank}.pt", weights_only=True) for rank in range(world_size)]
        for rank, got in enumerate(ranks):
            what = f"{name}, rank {rank} of {world_size}"
            # The logged loss and metrics are the means over processes: those of the global batch.
            for key in ("losses", "positive_cosine", "temperature"):
                torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(want[key]), rtol=0, atol=TOLERANCE,
                                           msg=f"{what}: {key}")  # fmt: skip
            assert len(got["losses"]) == worker.STEPS
            assert_all_close(got["gradients"], want["gradients"], f"{what}, first-step gradients")
            assert all(gradient.abs().sum() > 0 for gradient in got["gradients"].values())
            assert_all_close(got["state"], want["state"], f"{what}, weights after {worker.STEPS} steps")
        if "queue" in want["state"]:  # MoCo v2: every process wrote the same gathered keys
            for got in ranks[1:]:
                assert torch.equal(got["state"]["queue"], ranks[0]["state"]["queue"])
                assert got["state"]["queue_pointer"] == ranks[0]["state"]["queue_pointer"] == (3 * 12) % 16

    if world_size == 2:  # checkpoints: weights written once, one RNG state per process; the resumed run matched above
        checkpoint = tmp_path / "moco_v2_resumed" / "moco_v2_run" / "checkpoint-2"
        files = sorted(path.name for path in checkpoint.iterdir())
        assert files.count("model.safetensors") == 1 and {"rng_state_0.pth", "rng_state_1.pth"} <= set(files)
