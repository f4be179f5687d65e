"""SwAV: Sinkhorn-Knopp and the swapped-prediction loss against naive loops, the model (prototypes, queue, codes,
gradients, round trip) and SwAVTrainer (frozen prototypes, queue under DDP, exact resume). The 2-process check of
Sinkhorn and of SwAV training is in tests/test_dino.py (tests/dino_distributed_worker.py)."""

import math

import pytest
import torch
from transformers import AutoModel, TrainerCallback

from conftest import TINY_HEAD, TINY_VIT, InterruptAt
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.losses.swav import sinkhorn_knopp, swav_loss
from hfssl.models.swav import SwAVConfig, SwAVModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.swav import SwAVTrainer

HEAD = {**TINY_HEAD, "num_prototypes": 10}


def tiny(**overrides):
    torch.manual_seed(0)
    return SwAVModel(SwAVConfig(backbone_model_config=TINY_VIT, **{**HEAD, **overrides}))


def crops(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=generator) for size in (16, 16, 8, 8)]


# ---- Sinkhorn and the loss -------------------------------------------------------------------------------------------


def naive_sinkhorn(scores, epsilon, iterations):
    """main_swav.py's distributed_sinkhorn on one process, one row and one column at a time."""
    q = torch.exp(scores.double() / epsilon).t()  # (K, B)
    num_prototypes, batch = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        for k in range(num_prototypes):
            q[k] = q[k] / q[k].sum() / num_prototypes
        for b in range(batch):
            q[:, b] = q[:, b] / q[:, b].sum() / batch
    return (q * batch).t()


def test_sinkhorn_matches_the_naive_loop_and_its_marginals():
    scores = torch.nn.functional.normalize(torch.randn(12, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(codes.double(), naive_sinkhorn(scores, 0.05, 3), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(12))  # every sample: an assignment summing to 1
    converged = sinkhorn_knopp(scores, epsilon=0.5, iterations=200)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((5,), 12 / 5), rtol=0, atol=1e-4)  # equipartition
    sharp = sinkhorn_knopp(scores * 5, epsilon=0.05)  # exp(100) overflows float32 without the max shift
    assert torch.isfinite(sharp).all()
    torch.testing.assert_close(sharp.sum(dim=1), torch.ones(12))
    underflow = sinkhorn_knopp(scores * 1000, epsilon=0.05)  # most weights underflow to 0: zeros, not NaN
    assert torch.isfinite(underflow).all()
    with pytest.raises(ValueError, match=r"expects scores of shape \(B, K\); received \(2, 3, 4\)"):
        sinkhorn_knopp(torch.zeros(2, 3, 4))


def naive_swav_loss(scores, codes, temperature):
    """main_swav.py: for each global crop, the mean over the other crops of the batch-mean cross-entropy."""
    loss = 0.0
    for i, q in enumerate(codes):
        subloss = 0.0
        for v in range(len(scores)):
            if v == i:
                continue
            per_sample = [
                -(q[b] * torch.log_softmax(scores[v][b] / temperature, dim=0)).sum() for b in range(q.shape[0])
            ]
            subloss = subloss + torch.stack(per_sample).mean()
        loss = loss + subloss / (len(scores) - 1)
    return loss / len(codes)


def test_swav_loss_matches_the_naive_loop_in_value_and_gradient():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    codes = torch.softmax(torch.randn(2, 3, 5, generator=generator, dtype=torch.float64), dim=-1)
    loss, expected = swav_loss(scores, codes, 0.1), naive_swav_loss(scores, codes, 0.1)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, scores)[0], torch.autograd.grad(expected, scores)[0])
    assert torch.autograd.gradcheck(lambda s: swav_loss(s, codes, 0.1), (scores,))
    uniform = swav_loss(torch.zeros(3, 2, 7), torch.full((2, 2, 7), 1 / 7))  # uniform predictions: ln K
    torch.testing.assert_close(uniform, torch.tensor(math.log(7)))
    # 2 crops, K = 2, one-hot codes on prototype 0, scores (0, 0.1) / 0.1: CE = log(1 + e)
    hand = swav_loss(torch.tensor([0.0, 0.1]).expand(2, 1, 2), torch.tensor([1.0, 0.0]).expand(2, 1, 2))
    torch.testing.assert_close(hand, torch.tensor(math.log(1 + math.e)))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 cross-entropy under mixed precision
        mixed = swav_loss(scores.detach().bfloat16(), codes.bfloat16())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, swav_loss(scores.detach().bfloat16().float(), codes.bfloat16().float()))
    with pytest.raises(ValueError, match="expects scores \\(V, B, K\\) and codes \\(G, B, K\\)"):
        swav_loss(torch.zeros(3, 2, 7), torch.zeros(2, 3, 7))


# ---- the model -------------------------------------------------------------------------------------------------------


def test_config_defaults_and_errors():
    config = SwAVConfig()
    assert (config.num_prototypes, config.projection_dim, config.temperature, config.sinkhorn_epsilon) == (
        3000,
        128,
        0.1,
        0.05,
    )
    assert (config.sinkhorn_iterations, config.freeze_prototypes_steps, config.queue_length) == (3, 313, 0)
    with pytest.raises(ValueError, match="sinkhorn_epsilon=0 must be > 0"):
        SwAVConfig(sinkhorn_epsilon=0)
    with pytest.raises(ValueError, match="queue_length=-1 must be >= 0"):
        SwAVConfig(queue_length=-1)
    with pytest.raises(ValueError, match="SwAV expects pixel_values as a list of at least 2 crops"):
        tiny()(pixel_values=torch.randn(2, 3, 16, 16))


def test_forward_codes_loss_metrics_and_gradients():
    model = tiny()
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1).cpu(), torch.ones(10))
    pixel_values = crops()
    output = model(pixel_values=pixel_values)
    features = torch.cat([model.backbone(torch.cat(pixel_values[:2])), model.backbone(torch.cat(pixel_values[2:]))])
    projections = torch.nn.functional.normalize(model.projector(features), dim=1)
    scores = model.prototypes(projections).unflatten(0, (4, 4))
    codes = torch.stack([sinkhorn_knopp(scores[i].detach()) for i in range(2)])
    torch.testing.assert_close(output.loss, swav_loss(scores, codes, 0.1))
    torch.testing.assert_close(output.metrics["swav/code_entropy"], torch.special.entr(codes).sum(-1).mean())
    gap = (math.log(10) - output.loss.detach()) / math.log(10)
    torch.testing.assert_close(output.metrics["collapse/uniform_loss_gap"], gap)
    assert output.metrics["swav/queue_in_use"] == 0 and 0 < output.metrics["swav/prototype_usage"] <= 1
    torch.testing.assert_close(output.embeddings, projections[:4].detach())
    assert output.state_update["projections"].shape == (2, 4, 8)
    output.loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_queue_fills_newest_first_after_its_start_step_then_joins_sinkhorn():
    model = tiny(queue_length=6, queue_start_step=1)
    batches = [torch.full((2, 4, 8), float(value)) for value in (1, 2, 3)]
    model.update_after_step(None, [{"projections": batches[0]}])  # step 0 < queue_start_step: not queued
    assert model.queue.abs().sum() == 0 and model.step.item() == 1
    model.update_after_step(None, [{"projections": batches[1]}])
    assert not model.queue_in_use() and (model.queue[:, :4] == 2).all() and (model.queue[:, 4:] == 0).all()
    model.update_after_step(None, [{"projections": batches[2]}])
    assert model.queue_in_use()
    assert (model.queue[:, :4] == 3).all() and (model.queue[:, 4:] == 2).all()  # newest first, oldest dropped
    model.queue.copy_(torch.nn.functional.normalize(torch.randn(2, 6, 8), dim=-1))
    model.eval()
    pixel_values = crops()
    output = model(pixel_values=pixel_values)
    features = torch.cat([model.backbone(torch.cat(pixel_values[:2])), model.backbone(torch.cat(pixel_values[2:]))])
    scores = model.prototypes(torch.nn.functional.normalize(model.projector(features), dim=1)).unflatten(0, (4, 4))
    codes = torch.stack([
        sinkhorn_knopp(torch.cat([model.queue[i] @ model.prototypes.weight.t(), scores[i]]).detach())[-4:]
        for i in range(2)
    ])  # fmt: skip
    torch.testing.assert_close(output.loss, swav_loss(scores, codes, 0.1))
    assert output.metrics["swav/queue_in_use"] == 1


def test_update_after_step_renormalises_the_prototypes():
    model = tiny()
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    model.update_after_step(None, [])
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1).cpu(), torch.ones(10))


def test_round_trip_keeps_prototypes_queue_and_step(tmp_path):
    model = tiny(queue_length=4)
    model.update_after_step(None, [model(pixel_values=crops()).state_update])
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, SwAVModel) and loaded.step.item() == 1 and loaded.queue.abs().sum() > 0
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


# ---- SwAVTrainer -----------------------------------------------------------------------------------------------------


class PrototypeRecorder(TrainerCallback):
    def __init__(self, model):
        self.model, self.before_step, self.after_step = model, [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.before_step.append(self.model.prototypes.weight.detach().cpu().clone())

    def on_step_end(self, args, state, control, **kwargs):
        self.after_step.append(self.model.prototypes.weight.detach().cpu().clone())


def collator():
    return DataCollatorForMultiView.swav(global_size=16, local_size=8, num_local_crops=2, seed=0)


def arguments(path, **overrides):
    values = {
        "output_dir": str(path), "max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1e-2,
        "report_to": "none", "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "seed": 0,
        "weight_decay": 1e-6,
    }  # fmt: skip
    return SSLTrainingArguments(**{**values, **overrides})


def test_timm_resnet_takes_multi_crop():
    torch.manual_seed(0)
    model = SwAVModel(SwAVConfig(backbone_name="resnet18", small_image_stem=True, **HEAD))
    output = model(pixel_values=crops(batch=3))
    output.loss.backward()
    assert torch.isfinite(output.loss) and output.embeddings.shape == (3, 8)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_trainer_freezes_the_prototypes_then_trains_them(digits, tmp_path):
    model = tiny(freeze_prototypes_steps=2)
    recorder = PrototypeRecorder(model)
    trainer = SwAVTrainer(model=model, args=arguments(tmp_path), data_collator=collator(), train_dataset=digits,
                          callbacks=[recorder])  # fmt: skip
    assert trainer.args.ddp_broadcast_buffers is None  # no queue: buffers are the same on every process anyway
    trainer.train()
    for step in (0, 1):  # frozen: only the renormalisation after the step runs (a no-op up to rounding)
        torch.testing.assert_close(recorder.after_step[step], recorder.before_step[step], rtol=0, atol=1e-6)
    assert (recorder.after_step[2] - recorder.before_step[2]).abs().max() > 1e-4
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1).cpu(), torch.ones(10))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert {"swav/code_entropy", "swav/prototype_usage", "collapse/uniform_loss_gap", "embedding/std"} <= set(logs[0])
    assert model.step.item() == 4


def test_trainer_keeps_per_process_queues_out_of_ddp_buffer_broadcast(tmp_path):
    trainer = SwAVTrainer(model=tiny(queue_length=8), args=arguments(tmp_path), data_collator=collator())
    assert trainer.args.ddp_broadcast_buffers is False
    with pytest.raises(ValueError, match="ddp_broadcast_buffers=True would copy rank 0's queue"):
        SwAVTrainer(
            model=tiny(queue_length=8), args=arguments(tmp_path, ddp_broadcast_buffers=True), data_collator=collator()
        )
    with pytest.raises(TypeError, match="SwAVTrainer needs a SwAVModel or a backbone name; got Linear"):
        SwAVTrainer(torch.nn.Linear(2, 2))
    default = SwAVTrainer(tiny(), args=arguments(tmp_path))
    assert [view.size for view in default.data_collator.views] == [16, 16] + [8] * 6


def test_resume_from_checkpoint_is_exact(digits, tmp_path):
    """4 steps straight == 2 steps, then resume for 2 more: prototypes, queue (filled from step 1), step, frozen
    prototypes and the collator's generator come back."""
    settings = {"queue_length": 16, "queue_start_step": 1, "freeze_prototypes_steps": 3}
    straight = tiny(**settings)
    args = arguments(tmp_path / "straight", save_strategy="steps", save_steps=2)
    SwAVTrainer(model=straight, args=args, data_collator=collator(), train_dataset=digits).train()
    args = arguments(tmp_path / "interrupted", save_strategy="steps", save_steps=2)
    SwAVTrainer(model=tiny(**settings), args=args, data_collator=collator(), train_dataset=digits,
                callbacks=[InterruptAt(2)]).train()  # fmt: skip
    resumed = tiny(**settings)
    SwAVTrainer(model=resumed, args=args, data_collator=collator(), train_dataset=digits).train(
        resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-2")
    )
    straight_state, resumed_state = straight.state_dict(), resumed.state_dict()
    assert straight.queue_in_use() and resumed_state["step"].item() == 4
    differing = [name for name, tensor in straight_state.items() if not torch.equal(resumed_state[name], tensor)]
    assert differing == [], f"differ after resume: {differing}"
