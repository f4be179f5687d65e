"""The momentum teacher (`hfssl.models.teacher`): the fused EMA against a naive per-parameter loop, the cosine momentum
schedule against its formula, no gradient into the teacher, its state through save_pretrained / from_pretrained under
the same names, and the FSDP / ZeRO-3 refusal. Run on every method that uses it (BYOL, MoCo v2 / v3, DINO) and on a
minimal model, the pattern a new teacher method follows."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoModel

import hfssl
from conftest import TINY_HEAD, TINY_VIT
from hfssl.models.byol import BYOLConfig, BYOLModel
from hfssl.models.dino import DINOConfig, DINOModel
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.models.simclr import SimCLRConfig, SimCLRModel
from hfssl.models.teacher import MomentumTeacher, check_teacher_sharding, cosine_schedule

TEACHERS = {  # method: (build the tiny model, the names of its teacher modules)
    "byol": (lambda: BYOLModel(BYOLConfig(backbone_model_config=TINY_VIT, predictor_hidden_dim=16, **TINY_HEAD)),
             ("teacher_backbone", "teacher_projector")),
    "moco_v2": (lambda: MoCoModel(MoCoConfig(variant="v2", backbone_model_config=TINY_VIT, queue_size=10,
                                             **TINY_HEAD)),
                ("teacher_backbone", "teacher_projector")),
    "moco_v3": (lambda: MoCoModel(MoCoConfig(variant="v3", backbone_model_config=TINY_VIT, predictor_hidden_dim=16,
                                             **TINY_HEAD)),
                ("teacher_backbone", "teacher_projector")),
    "dino": (lambda: DINOModel(DINOConfig(backbone_model_config=TINY_VIT, out_dim=64, head_hidden_dim=32,
                                          head_bottleneck_dim=16)),
             ("teacher_backbone", "teacher_head")),
}  # fmt: skip


def tiny(method):
    torch.manual_seed(0)
    return TEACHERS[method][0]()


def views(method, batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sizes = [16, 16, 8, 8] if method == "dino" else [16, 16]
    return [torch.randn(batch, 3, size, size, generator=generator) for size in sizes]


def perturb_students(model, seed=1):
    """Move every student parameter, so the EMA has something to average."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for student, _ in model.student_teacher_pairs():
            student.add_(torch.randn(student.shape, generator=generator, dtype=student.dtype))


class Minimal(MomentumTeacher, nn.Module):
    """The smallest user of the mixin: an encoder and a head with their teachers, momentum 0.9 by default."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.config = SimpleNamespace(momentum=0.9)
        self.encoder = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 4)).to(dtype)
        self.head = nn.Linear(4, 2).to(dtype)
        self.add_teacher("encoder")
        self.add_teacher("head")


# ---- the pairs and the EMA ------------------------------------------------------------------------------------------


def test_add_teacher_registers_a_frozen_copy_under_teacher_name():
    torch.manual_seed(0)
    model = Minimal()
    assert model.teacher_module_names == (("encoder", "teacher_encoder"), ("head", "teacher_head"))
    assert MomentumTeacher.teacher_module_names == ()  # the class default is not shared state
    names = [name for name, _ in model.named_parameters()]
    assert names == [
        "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
        "encoder.2.weight", "encoder.2.bias",
        "head.weight", "head.bias",
        "teacher_encoder.0.weight", "teacher_encoder.0.bias", "teacher_encoder.1.weight", "teacher_encoder.1.bias",
        "teacher_encoder.2.weight", "teacher_encoder.2.bias",
        "teacher_head.weight", "teacher_head.bias",
    ]  # fmt: skip
    pairs = model.student_teacher_pairs()
    assert len(pairs) == 8
    for student, teacher in pairs:
        assert student is not teacher and torch.equal(student, teacher)
        assert student.requires_grad and not teacher.requires_grad
    assert "teacher_encoder.1.running_mean" in model.state_dict()  # buffers copied once, then the teacher's own


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 0.996, 1.0])
def test_momentum_update_matches_the_naive_loop(dtype, momentum):
    torch.manual_seed(0)
    model = Minimal(dtype)
    perturb_students(model)
    expected = [momentum * t.detach().clone() + (1 - momentum) * s.detach() for s, t in model.student_teacher_pairs()]
    lerped = [torch.lerp(t.detach(), s.detach(), 1.0 - momentum) for s, t in model.student_teacher_pairs()]
    model.momentum_update(momentum)
    for (student, teacher), naive, per_parameter in zip(model.student_teacher_pairs(), expected, lerped):
        torch.testing.assert_close(teacher, naive, rtol=0, atol=4 * torch.finfo(dtype).eps * naive.abs().max().item())
        assert torch.equal(teacher, per_parameter)  # the fused update is the per-parameter lerp, bit for bit
        assert teacher.dtype == dtype and not teacher.requires_grad
    if momentum == 0.0:
        assert all(torch.equal(s, t) for s, t in model.student_teacher_pairs())


def test_momentum_none_is_the_config_momentum_and_buffers_are_left_alone():
    torch.manual_seed(0)
    first, second = Minimal(), Minimal()
    second.load_state_dict(first.state_dict())
    for model in (first, second):
        perturb_students(model)
        model.encoder[1].running_mean.fill_(3.0)
    first.momentum_update()
    second.update_after_step(0.9, [])
    for (_, a), (_, b) in zip(first.student_teacher_pairs(), second.student_teacher_pairs()):
        assert torch.equal(a, b)
    assert torch.equal(first.teacher_encoder[1].running_mean, torch.zeros(5))  # not averaged with the student's


@pytest.mark.parametrize("method", list(TEACHERS))
def test_each_method_updates_its_teacher_with_the_naive_ema(method):
    model = tiny(method)
    teacher_names = TEACHERS[method][1]
    assert [teacher for _, teacher in model.teacher_module_names] == list(teacher_names)
    perturb_students(model)
    momentum = 0.7
    expected = [momentum * t.detach().clone() + (1 - momentum) * s.detach() for s, t in model.student_teacher_pairs()]
    model.update_after_step(momentum, [])
    for (_, teacher), naive in zip(model.student_teacher_pairs(), expected):
        torch.testing.assert_close(teacher, naive, rtol=1e-6, atol=1e-6)
    # every teacher parameter of the state dict is averaged, paired with the student of the same name
    pairs = {id(t): s for s, t in model.student_teacher_pairs()}
    named = dict(model.named_parameters())
    teacher_parameters = [name for name in named if name.startswith("teacher_")]
    assert len(teacher_parameters) == len(pairs)
    for name in teacher_parameters:
        assert pairs[id(named[name])] is named[name.removeprefix("teacher_")]


# ---- the schedule ---------------------------------------------------------------------------------------------------


def test_cosine_schedule_at_start_middle_and_end():
    start, end, total = 0.996, 1.0, 1000
    assert cosine_schedule(0, total, start, end) == start
    assert cosine_schedule(total // 2, total, start, end) == pytest.approx((start + end) / 2, abs=1e-15)
    assert cosine_schedule(total, total, start, end) == end
    assert cosine_schedule(total + 10, total, start, end) == end  # constant after the last step
    assert cosine_schedule(-1, total, start, end) == start
    assert cosine_schedule(5, 0, start, end) == end  # no steps: the final value
    for step in (1, 250, 333, 999):
        formula = end - (end - start) * (math.cos(math.pi * step / total) + 1) / 2
        assert cosine_schedule(step, total, start, end) == formula
    values = [cosine_schedule(step, total, start, end) for step in range(total + 1)]
    assert all(a <= b for a, b in zip(values, values[1:]))  # rises monotonically to `end`


def test_cosine_schedule_is_importable_from_its_public_places():
    from hfssl.trainers import cosine_schedule as from_trainers
    from hfssl.trainers.callbacks import cosine_schedule as from_callbacks

    assert from_callbacks is from_trainers is hfssl.cosine_schedule is cosine_schedule
    assert hfssl.check_teacher_sharding is check_teacher_sharding


# ---- no gradient, checkpoints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(TEACHERS))
def test_the_teacher_gets_no_gradient(method):
    model = tiny(method).train()
    model(pixel_values=views(method)).loss.backward()
    students = {id(student) for student, _ in model.student_teacher_pairs()}
    for name, parameter in model.named_parameters():
        if name.startswith("teacher_"):
            assert not parameter.requires_grad and parameter.grad is None, name
        elif id(parameter) in students and "pooler" not in name:  # the ViT pooler is unused by the features
            assert parameter.grad is not None, name


@pytest.mark.parametrize("method", list(TEACHERS))
def test_teacher_state_round_trips_through_save_pretrained(method, tmp_path):
    model = tiny(method)
    perturb_students(model)
    model.momentum_update(0.5)  # teacher now differs from both its initial value and the student
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert list(loaded.state_dict()) == list(before)  # the same names, in the same order
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    teacher_names = TEACHERS[method][1]
    prefixes = {name.split(".")[0] for name in before if name.startswith("teacher_")}
    assert prefixes == set(teacher_names)
    assert loaded.teacher_module_names == model.teacher_module_names
    assert all(not teacher.requires_grad for _, teacher in loaded.student_teacher_pairs())  # loading re-creates them
    direct, info = type(model).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert all(not teacher.requires_grad for _, teacher in direct.student_teacher_pairs())
    loaded.momentum_update(0.5)  # and the loaded pairs are live: the EMA moves the loaded teacher
    model.momentum_update(0.5)
    for (_, a), (_, b) in zip(model.student_teacher_pairs(), loaded.student_teacher_pairs()):
        assert torch.equal(a, b)


# ---- sharding -------------------------------------------------------------------------------------------------------


def test_sharded_parameters_are_refused_for_a_teacher_only():
    torch.manual_seed(0)
    minimal, moco = Minimal(), tiny("moco_v3")
    simclr = SimCLRModel(SimCLRConfig(backbone_model_config=TINY_VIT, **TINY_HEAD))
    with pytest.raises(ValueError, match=r"Minimal has a momentum teacher, whose EMA update needs the full student "
                                         r"parameters, but FSDP shards them across processes\. Train it with DDP"):
        check_teacher_sharding(minimal, "FSDP")
    with pytest.raises(ValueError, match=r"MoCoModel has a momentum teacher.*but DeepSpeed ZeRO stage 3 shards them"
                                         r".*deepspeed_zero2\.yaml.*FSDP and ZeRO-3 suit methods without a teacher"):
        check_teacher_sharding(moco, "DEEPSPEED", zero_stage=3)
    with pytest.raises(ValueError, match="but FSDP shards them"):
        check_teacher_sharding(moco, SimpleNamespace(value="fsdp"))  # accelerate's DistributedType enum
    for distributed_type, stage in (("DEEPSPEED", 2), ("MULTI_GPU", None), ("MULTI_CPU", None), ("NO", None)):
        check_teacher_sharding(moco, distributed_type, stage)
    check_teacher_sharding(simclr, "FSDP")  # no teacher: sharding is fine
    check_teacher_sharding(nn.Linear(2, 2), "DEEPSPEED", zero_stage=3)
