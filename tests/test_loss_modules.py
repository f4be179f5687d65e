"""The loss modules equal their pure functions, and DINOLoss carries its centre and schedule in its state dict."""

import copy

import pytest
import torch
from torch import nn

from hfssl import (
    DINOLoss,
    InfoNCELoss,
    LearnableTemperature,
    NTXentLoss,
    SwAVLoss,
    dino_loss,
    info_nce_loss,
    nt_xent_loss,
    sinkhorn_knopp,
    swav_loss,
    teacher_temperature_schedule,
    update_center,
)

G, V, B, K = 2, 4, 6, 16  # global crops, all crops, batch, outputs


def test_dino_loss_module_equals_the_functions_over_several_steps():
    torch.manual_seed(0)
    module = DINOLoss(K, warmup_teacher_temperature=0.04, teacher_temperature=0.07, warmup_teacher_temperature_steps=3)
    center, temperatures = torch.zeros(1, K), []
    for step in range(5):
        student, teacher = torch.randn(V, B, K) * 3, torch.randn(G, B, K) * 3 + torch.arange(K)
        temperature = teacher_temperature_schedule(step, 3, 0.04, 0.07)
        temperatures.append(module.current_teacher_temperature())
        expected = dino_loss(student, teacher, center, 0.1, temperature)
        torch.testing.assert_close(module(student, teacher), expected, rtol=0, atol=0)
        torch.testing.assert_close(module(list(student), list(teacher)), expected)  # lists of crops too
        module.update(teacher)
        center = update_center(center, teacher, 0.9)
        torch.testing.assert_close(module.center, center, rtol=0, atol=0)
        assert int(module.step) == step + 1
    assert temperatures == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07])
    assert module.center.abs().sum() > 0


def test_dino_loss_forward_changes_no_state():
    module = DINOLoss(K)
    module(torch.randn(V, B, K), torch.randn(G, B, K))
    assert not module.center.any() and int(module.step) == 0


def test_dino_loss_state_is_in_the_state_dict_and_reloads():
    module = DINOLoss(K, warmup_teacher_temperature_steps=10, teacher_temperature=0.07)
    for _ in range(3):
        module.update(torch.randn(G, B, K))
    state = module.state_dict()
    assert set(state) == {"center", "step"} and int(state["step"]) == 3
    restored = DINOLoss(K, warmup_teacher_temperature_steps=10, teacher_temperature=0.07)
    restored.load_state_dict(state)
    student, teacher = torch.randn(V, B, K), torch.randn(G, B, K)
    assert restored.current_teacher_temperature() == module.current_teacher_temperature() > 0.04
    torch.testing.assert_close(restored(student, teacher), module(student, teacher), rtol=0, atol=0)
    # as a submodule, it lands in the model's state dict (so Trainer checkpoints and save_pretrained carry it)
    model = nn.ModuleDict({"head": nn.Linear(4, K), "criterion": module})
    assert {"criterion.center", "criterion.step"} <= set(model.state_dict())


def test_dino_loss_trains_in_a_plain_loop():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, K))
    teacher = copy.deepcopy(student).requires_grad_(False)
    criterion = DINOLoss(K, warmup_teacher_temperature_steps=4, teacher_temperature=0.07)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    before = [parameter.detach().clone() for parameter in student.parameters()]
    losses = []
    for _ in range(6):
        crops = torch.randn(V, B, 8)
        with torch.no_grad():
            teacher_logits = teacher(crops[:G])
        loss = criterion(student(crops), teacher_logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        criterion.update(teacher_logits)
        with torch.no_grad():  # the teacher's EMA, as DINO's
            for online, target in zip(student.parameters(), teacher.parameters()):
                target.lerp_(online, 0.004)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(old, new) for old, new in zip(before, student.parameters()))
    assert int(criterion.step) == 6 and criterion.center.abs().sum() > 0


def test_dino_loss_errors_name_the_fix():
    with pytest.raises(ValueError, match="output_dim=16.*build it with output_dim=8"):
        DINOLoss(K)(torch.randn(V, B, 8), torch.randn(G, B, 8))
    with pytest.raises(ValueError, match="build it with output_dim=8"):
        DINOLoss(K).update(torch.randn(G, B, 8))
    with pytest.raises(ValueError, match="center_momentum=1.5 must lie in \\[0, 1\\]"):
        DINOLoss(K, center_momentum=1.5)
    with pytest.raises(ValueError, match="teacher_temperature=0 must be > 0"):
        DINOLoss(K, teacher_temperature=0)


def test_nt_xent_and_info_nce_modules_equal_their_functions():
    torch.manual_seed(0)
    z1, z2, queue = torch.randn(B, 8), torch.randn(B, 8), torch.randn(10, 8)
    torch.testing.assert_close(NTXentLoss(0.2)(z1, z2), nt_xent_loss(z1, z2, 0.2), rtol=0, atol=0)
    hard = NTXentLoss(0.5, negative_sampling="hard", hardness_beta=0.5)
    expected = nt_xent_loss(z1, z2, 0.5, queue, negative_sampling="hard", hardness_beta=0.5)
    torch.testing.assert_close(hard(z1, z2, queue), expected, rtol=0, atol=0)
    torch.testing.assert_close(InfoNCELoss()(z1, z2, queue), info_nce_loss(z1, z2, 0.2, queue), rtol=0, atol=0)
    moco_v3 = InfoNCELoss(1.0, in_batch_negatives=True, scale_by_temperature=True)
    expected = info_nce_loss(z1, z2, 1.0, in_batch_negatives=True, scale_by_temperature=True)
    torch.testing.assert_close(moco_v3(z1, z2), expected, rtol=0, atol=0)


def test_a_learnable_temperature_is_a_trained_submodule():
    criterion = NTXentLoss(LearnableTemperature(0.1))
    assert [name for name, _ in criterion.named_parameters()] == ["temperature.log_temperature"]
    criterion(torch.randn(B, 8), torch.randn(B, 8)).backward()
    assert criterion.temperature.log_temperature.grad is not None
    with pytest.raises(ValueError, match="temperature=0 must be > 0"):
        InfoNCELoss(0)


def test_swav_loss_module_computes_the_codes_and_the_swapped_prediction():
    torch.manual_seed(0)
    scores = torch.randn(V, B, K)
    criterion = SwAVLoss(temperature=0.1, sinkhorn_epsilon=0.05, sinkhorn_iterations=3)
    codes = torch.stack([sinkhorn_knopp(scores[0]), sinkhorn_knopp(scores[1])])
    torch.testing.assert_close(criterion.codes(scores), codes, rtol=0, atol=0)
    torch.testing.assert_close(criterion(scores), swav_loss(scores, codes, 0.1), rtol=0, atol=0)
    given = torch.softmax(torch.randn(G, B, K), dim=-1)
    torch.testing.assert_close(criterion(list(scores), given), swav_loss(scores, given, 0.1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_global_crops=3 but received 2 crops"):
        SwAVLoss(num_global_crops=3)(scores[:2])
    with pytest.raises(ValueError, match="SwAVLoss needs temperature > 0"):
        SwAVLoss(sinkhorn_epsilon=0)
