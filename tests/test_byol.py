"""BYOL and SimSiam: losses against naive per-sample references and hand-computed cases, the target network (no
gradient, exact EMA on the cosine schedule), the stop-gradient, trainers, exact resume, round trip."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, TrainerCallback

from conftest import TINY_HEAD, TINY_VIT, InterruptAt
from hfssl.collators.multi_view import DataCollatorForMultiView
from hfssl.losses.byol import byol_loss, simsiam_loss
from hfssl.models.byol import BYOLConfig, BYOLModel
from hfssl.models.simsiam import SimSiamConfig, SimSiamModel
from hfssl.trainers.arguments import SSLTrainingArguments
from hfssl.trainers.byol import BYOLTrainer, SimSiamTrainer
from hfssl.trainers.callbacks import cosine_schedule


def leaf(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


def reference_byol(predictions, targets):
    """Per sample: || p / |p| - z / |z| ||^2, then the mean."""
    losses = []
    for p, z in zip(predictions, targets):
        difference = p / torch.sqrt((p * p).sum()) - z / torch.sqrt((z * z).sum())
        losses.append((difference * difference).sum())
    return sum(losses) / len(losses)


def reference_simsiam(predictions, projections):
    """Per sample: -p.z / (|p| |z|) with z a constant, then the mean."""
    losses = []
    for p, z in zip(predictions, projections.detach()):
        losses.append(-(p * z).sum() / (torch.sqrt((p * p).sum()) * torch.sqrt((z * z).sum())))
    return sum(losses) / len(losses)


# ---- losses ---------------------------------------------------------------------------------------------------


def test_byol_loss_matches_the_per_sample_reference_and_gradcheck():
    p, z = leaf(5, 4, seed=0), leaf(5, 4, seed=1)
    loss, expected = byol_loss(p, z), reference_byol(p, z)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, [p, z]), torch.autograd.grad(expected, [p, z])):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(byol_loss, (leaf(3, 4, seed=2), leaf(3, 4, seed=3)))


def test_byol_loss_hand_computed():
    # cosines 0, 1 (scale does not matter) and -1 -> 2 - 2 cos = 2, 0, 4 -> mean 2.
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 3.0], [2.0, 0.0], [-1.0, 0.0]])
    assert byol_loss(p, z).item() == pytest.approx(2.0)
    assert byol_loss(p[1:2], z[1:2]).item() == pytest.approx(0.0)


def test_simsiam_loss_matches_reference_and_stops_the_gradient_of_z():
    p, z = leaf(5, 4, seed=4), leaf(5, 4, seed=5)
    loss = simsiam_loss(p, z)
    torch.testing.assert_close(loss, reference_simsiam(p, z))
    loss.backward()
    assert z.grad is None  # stop-gradient: the projections receive nothing
    expected_grad = torch.autograd.grad(reference_simsiam(p, z), p)[0]
    torch.testing.assert_close(p.grad, expected_grad)
    assert torch.autograd.gradcheck(lambda a: simsiam_loss(a, z), (leaf(5, 4, seed=6),))
    hand = simsiam_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))  # cos 45 degrees
    assert hand.item() == pytest.approx(-1 / math.sqrt(2))


def test_loss_errors_say_what_and_how():
    with pytest.raises(ValueError, match=r"byol_loss expects predictions and targets of the same shape \(N, D\); got \(4, 3\) and \(4, 2\)"):
        byol_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"simsiam_loss expects predictions and projections.*got \(3,\) and \(3,\)"):
        simsiam_loss(torch.randn(3), torch.randn(3))


# ---- models ---------------------------------------------------------------------------------------------------


def tiny_byol(**overrides):
    torch.manual_seed(0)
    sizes = {**TINY_HEAD, "predictor_hidden_dim": 16}
    return BYOLModel(BYOLConfig(backbone_model_config=TINY_VIT, **{**sizes, **overrides}))


def tiny_simsiam(**overrides):
    torch.manual_seed(0)
    sizes = {**TINY_HEAD, "predictor_hidden_dim": 4}
    return SimSiamModel(SimSiamConfig(backbone_model_config=TINY_VIT, **{**sizes, **overrides}))


def views(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=generator) for _ in range(2)]


def test_paper_defaults_and_config_errors():
    byol, simsiam = BYOLConfig(), SimSiamConfig()
    assert (byol.projection_hidden_dim, byol.projection_dim, byol.predictor_hidden_dim) == (4096, 256, 4096)
    assert (byol.momentum, byol.momentum_final) == (0.996, 1.0)
    assert (simsiam.projection_dim, simsiam.projection_layers, simsiam.predictor_hidden_dim) == (2048, 3, 512)
    with pytest.raises(ValueError, match=r"momentum=1.5 and momentum_final=1.0 must lie in \[0, 1\] \(BYOL: 0.996 -> 1.0\)"):
        BYOLConfig(momentum=1.5)
    with pytest.raises(ValueError, match=r"SimSiam head sizes must be positive integers; got \{'predictor_hidden_dim': 0\}"):
        SimSiamConfig(predictor_hidden_dim=0)
    with pytest.raises(ValueError, match=r"SimSiam expects pixel_values as a list of 2 views.*DataCollatorForMultiView.moco_v2\(\)"):
        tiny_simsiam()(pixel_values=views()[0])


def test_byol_loss_is_symmetric_and_the_target_gets_no_gradient():
    model = tiny_byol().eval()
    for student, teacher in model.student_teacher_pairs():
        assert torch.equal(student, teacher) and not teacher.requires_grad
    with torch.no_grad():  # make the target differ from the online network
        for _, teacher in model.student_teacher_pairs():
            teacher.mul_(0.9)
    pixel_values = views()
    output = model(pixel_values=pixel_values)
    z = model.projector(model.backbone(torch.cat(pixel_values)))
    q = model.predictor(z)
    t = model.teacher_projector(model.teacher_backbone(torch.cat(pixel_values)))
    expected = byol_loss(q[:4], t[4:]) + byol_loss(q[4:], t[:4])
    torch.testing.assert_close(output.loss, expected)
    torch.testing.assert_close(output.embeddings, z[:4])
    output.loss.backward()
    assert all(teacher.grad is None for _, teacher in model.student_teacher_pairs())
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "pooler" not in n)


def test_momentum_update_is_the_ema():
    model = tiny_byol()
    before = [(s.detach().clone(), t.detach().clone()) for s, t in model.student_teacher_pairs()]
    with torch.no_grad():
        for student, _ in model.student_teacher_pairs():
            student.add_(1.0)
    model.update_after_step(0.9, [])
    for (student, teacher), (s0, t0) in zip(model.student_teacher_pairs(), before):
        torch.testing.assert_close(teacher, 0.9 * t0 + 0.1 * (s0 + 1.0))
    model.update_after_step(None, [])  # None: config.momentum
    assert model.config.momentum == 0.996


def test_simsiam_stops_the_gradient_of_each_projection_in_its_target_role():
    """The model's gradient is that of D(p1, z2.detach()) / 2 + D(p2, z1.detach()) / 2, and differs from the gradient
    without the stop-gradient (so the check has teeth)."""
    model = tiny_simsiam().eval()
    pixel_values = views()

    def gradients(loss):
        parameters = [p for p in model.parameters() if p.requires_grad]
        return torch.autograd.grad(loss, parameters, allow_unused=True, retain_graph=True)

    output = model(pixel_values=pixel_values)
    z = model.projector(model.backbone(torch.cat(pixel_values)))
    p = model.predictor(z)
    stopped = -(F.cosine_similarity(p[:4], z[4:].detach()).mean() + F.cosine_similarity(p[4:], z[:4].detach()).mean()) / 2
    flowing = -(F.cosine_similarity(p[:4], z[4:]).mean() + F.cosine_similarity(p[4:], z[:4]).mean()) / 2
    torch.testing.assert_close(output.loss, stopped)
    got, want, without = gradients(output.loss), gradients(stopped), gradients(flowing)
    used = [(g, w, o) for g, w, o in zip(got, want, without) if w is not None]
    assert used
    for g, w, _ in used:
        torch.testing.assert_close(g, w)
    assert any(not torch.allclose(w, o) for _, w, o in used)


def test_round_trip_keeps_the_target(tmp_path):
    model = tiny_byol()
    with torch.no_grad():
        for student, _ in model.student_teacher_pairs():
            student.add_(0.5)
    model.update_after_step(0.5, [])
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, BYOLModel)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)
    simsiam = tiny_simsiam()
    simsiam.save_pretrained(tmp_path / "simsiam")
    assert isinstance(AutoModel.from_pretrained(tmp_path / "simsiam"), SimSiamModel)


# ---- trainers ---------------------------------------------------------------------------------------------------


def arguments(tmp_path, **overrides):
    values = {"output_dir": str(tmp_path), "max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
              "report_to": "none", "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "seed": 0}  # fmt: skip
    values.update(overrides)
    return SSLTrainingArguments(**values)


class Snapshots(TrainerCallback):
    """Online and target parameters after each optimizer step (after SSLStateUpdateCallback's EMA)."""

    def __init__(self, model):
        self.model = model
        self.steps = [self.take()]

    def take(self):
        return [(s.detach().cpu().clone(), t.detach().cpu().clone()) for s, t in self.model.student_teacher_pairs()]

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(self.take())


def test_byol_trainer_moves_everything_and_the_target_follows_the_cosine_ema(digits, tmp_path):
    model = tiny_byol(momentum=0.5, momentum_final=0.9)  # far from 1, so a wrong momentum shows
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    snapshots = Snapshots(model)
    trainer = BYOLTrainer(model=model, args=arguments(tmp_path), train_dataset=digits, callbacks=[snapshots],
                          data_collator=DataCollatorForMultiView.byol(image_size=16, seed=0))  # fmt: skip
    trainer.train()
    for step in (1, 2, 3):
        momentum = cosine_schedule(step - 1, 3, 0.5, 0.9)  # the update after step k (0-based) uses tau_k: 0.5 first
        assert trainer.state.log_history[step - 1]["teacher/momentum"] == pytest.approx(momentum)
        for (student, teacher), (_, previous) in zip(snapshots.steps[step], snapshots.steps[step - 1]):
            torch.testing.assert_close(teacher, momentum * previous + (1 - momentum) * student)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert not torch.equal(before[name], parameter.detach().cpu()), f"{name} did not move"
    for (student0, teacher0), (student, teacher) in zip(snapshots.steps[0], snapshots.steps[-1]):
        assert not torch.equal(teacher0, teacher) or torch.equal(student0, student)  # the target moved with the online
    logs = trainer.state.log_history[0]
    assert {"loss", "byol/positive_cosine", "embedding/std", "teacher/momentum"} <= set(logs)
    assert 0 < logs["embedding/std"] < 1 and 0 <= logs["loss"] <= 8


def test_a_one_step_run_moves_the_target_with_the_first_momentum(digits, tmp_path):
    model = tiny_byol(momentum=0.5, momentum_final=1.0)  # the update after the only step uses tau_0 = 0.5, not 1.0
    snapshots = Snapshots(model)
    trainer = BYOLTrainer(model=model, args=arguments(tmp_path, max_steps=1), train_dataset=digits, callbacks=[snapshots],
                          data_collator=DataCollatorForMultiView.byol(image_size=16, seed=0))  # fmt: skip
    trainer.train()
    assert trainer.state.log_history[0]["teacher/momentum"] == pytest.approx(0.5)
    for (student, teacher), (_, previous) in zip(snapshots.steps[1], snapshots.steps[0]):
        torch.testing.assert_close(teacher, 0.5 * previous + 0.5 * student)


def test_simsiam_trainer_moves_every_parameter(digits, tmp_path):
    model = tiny_simsiam()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = SimSiamTrainer(model=model, args=arguments(tmp_path, learning_rate=0.05, optim="sgd"), train_dataset=digits,
                             data_collator=DataCollatorForMultiView.moco_v2(image_size=16, seed=0))  # fmt: skip
    trainer.train()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert not torch.equal(before[name], parameter.detach().cpu()), f"{name} did not move"
    logs = trainer.state.log_history[0]
    assert {"loss", "simsiam/projection_cosine", "embedding/std"} <= set(logs) and "teacher/momentum" not in logs
    assert -1 <= logs["loss"] <= 1 and 0 < logs["embedding/std"] < 1


def test_byol_resume_from_checkpoint_is_exact(digits, tmp_path):
    """4 steps straight == 2 steps, checkpoint, then 2 more in a fresh trainer (LARS, target, momentum schedule and
    the collator's generator all come back)."""

    def run(directory, callbacks=(), resume=None):
        model = tiny_byol()
        args = arguments(tmp_path / directory, max_steps=4, lars=True, learning_rate=0.1, save_strategy="steps",
                         save_steps=2)  # fmt: skip
        trainer = BYOLTrainer(model=model, args=args, train_dataset=digits, callbacks=list(callbacks),
                              data_collator=DataCollatorForMultiView.byol(image_size=16, seed=0))  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return model

    straight = run("straight")
    run("interrupted", callbacks=[InterruptAt(2)])
    resumed = run("interrupted", resume=str(tmp_path / "interrupted" / "checkpoint-2"))
    straight_state, resumed_state = straight.state_dict(), resumed.state_dict()
    assert any(name.startswith("teacher_") for name in straight_state)
    differing = [name for name, tensor in straight_state.items() if not torch.equal(resumed_state[name], tensor)]
    assert differing == [], f"differ after resume: {differing}"


class GroupRates(TrainerCallback):
    """Each optimizer group's learning rate and fixed_lr mark after every step."""

    def __init__(self):
        self.rates = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append([(group["lr"], group["fixed_lr"]) for group in optimizer.param_groups])


def test_fixed_predictor_lr_keeps_the_predictor_at_the_base_rate_and_resumes_exactly(digits, tmp_path):
    """SimSiam's --fix-pred-lr: the predictor's groups stay at learning_rate through warm-up and cosine decay, the
    others follow the schedule; the same parameters and weight-decay split as without the flag; exact resume."""

    def run(directory, callbacks=(), resume=None, **overrides):
        model = tiny_simsiam()
        args = arguments(tmp_path / directory, max_steps=4, learning_rate=0.05, optim="sgd", weight_decay=1e-4,
                         lr_scheduler_type="cosine", warmup_steps=1, save_strategy="steps", save_steps=2,
                         **{"fixed_predictor_lr": True, **overrides})  # fmt: skip
        trainer = SimSiamTrainer(model=model, args=args, train_dataset=digits, callbacks=list(callbacks),
                                 data_collator=DataCollatorForMultiView.moco_v2(image_size=16, seed=0))  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return model, trainer

    rates = GroupRates()
    straight, trainer = run("straight", callbacks=[rates])
    groups = trainer.optimizer.param_groups
    predictor = {id(p) for p in straight.predictor.parameters()}
    assert [group["fixed_lr"] for group in groups] == [False, True, False, True]  # (decay, no decay) x (rest, predictor)
    for group in groups:
        assert all((id(p) in predictor) == group["fixed_lr"] for p in group["params"])
        assert group["weight_decay"] == (1e-4 if all(p.ndim > 1 for p in group["params"]) else 0.0)
    assert sum(len(group["params"]) for group in groups) == len([p for p in straight.parameters() if p.requires_grad])
    # after step s (1-based) the schedule's factor is that of step s: warm-up to 1 at step 1, then cosine to 0 at 4
    expected = [0.05 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 3)) for step in range(1, 5)]
    for step, row in enumerate(rates.rates):
        for rate, fixed in row:
            assert rate == pytest.approx(0.05 if fixed else expected[step]), (step, fixed)
    # Trainer logs the rate each step used (the group of the first, scheduled, group): 0 at the warm-up's first step
    assert [entry["learning_rate"] for entry in trainer.state.log_history if "loss" in entry] == pytest.approx([0.0, *expected[:3]])

    run("interrupted", callbacks=[InterruptAt(2)])
    resumed, _ = run("interrupted", resume=str(tmp_path / "interrupted" / "checkpoint-2"))
    differing = [name for name, tensor in straight.state_dict().items() if not torch.equal(resumed.state_dict()[name], tensor)]
    assert differing == [], f"differ after resume: {differing}"
    without, _ = run("without", fixed_predictor_lr=False)
    assert any(not torch.equal(a, b) for a, b in zip(without.predictor.parameters(), straight.predictor.parameters()))


def test_fixed_predictor_lr_refuses_a_model_without_a_predictor_and_given_optimizers(tmp_path):
    from hfssl.models.simclr import SimCLRConfig, SimCLRModel
    from hfssl.trainers.simclr import SimCLRTrainer

    model = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
    trainer = SimCLRTrainer(model=model, args=arguments(tmp_path, fixed_predictor_lr=True))
    with pytest.raises(ValueError, match="fixed_predictor_lr=True needs a model with a `predictor`"):
        trainer.create_optimizer()
    simsiam = tiny_simsiam()
    optimizer = torch.optim.SGD(simsiam.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="`optimizers` were given; give the predictor its own parameter group"):
        SimSiamTrainer(model=simsiam, args=arguments(tmp_path, fixed_predictor_lr=True), optimizers=(optimizer, None),
                       data_collator=DataCollatorForMultiView.moco_v2(image_size=16, seed=0))  # fmt: skip


def test_trainers_build_from_a_backbone_name_and_refuse_other_models(tmp_path):
    trainer = BYOLTrainer("resnet18", args=SSLTrainingArguments(output_dir=str(tmp_path), report_to="none"))
    assert isinstance(trainer.model, BYOLModel) and trainer.model.predictor.output_dim == 256
    assert [view.size for view in trainer.data_collator.views] == [224, 224]
    assert [view.blur_p for view in trainer.data_collator.views] == [1.0, 0.1]
    simsiam = SimSiamTrainer("resnet18", args=SSLTrainingArguments(output_dir=str(tmp_path), report_to="none"))
    assert simsiam.data_collator.views[0].scale == (0.2, 1.0)  # MoCo v2's augmentations
    with pytest.raises(TypeError, match="BYOLTrainer needs a BYOLModel or a backbone name; got SimSiamModel"):
        BYOLTrainer(tiny_simsiam())
    with pytest.raises(TypeError, match="SimSiamTrainer needs a SimSiamModel or a backbone name; got BYOLModel"):
        SimSiamTrainer(tiny_byol())
    # A per-sample loss: gradient accumulation is exact, so there is no cached-gradient path to take.
    cached = SSLTrainingArguments(output_dir=str(tmp_path), report_to="none", gradient_cache_chunk_size=2)
    with pytest.raises(TypeError, match="BYOLModel has not both. Use gradient accumulation instead"):
        BYOLTrainer(tiny_byol(), args=cached)
