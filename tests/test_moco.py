"""MoCoModel: momentum update, queue FIFO semantics, v2 / v3 losses, round trip."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from conftest import TINY_HEAD, TINY_VIT
import hfssl.models  # noqa: F401
from hfssl.losses import info_nce_loss
from hfssl.models.moco import MoCoConfig, MoCoModel
from hfssl.trainers.callbacks import cosine_schedule


def tiny(variant="v2", **overrides):
    sizes = dict(TINY_HEAD)
    if variant == "v2":
        sizes["queue_size"] = 10
    else:
        sizes["predictor_hidden_dim"] = 16
    torch.manual_seed(0)
    return MoCoModel(MoCoConfig(variant=variant, backbone_model_config=TINY_VIT, **sizes, **overrides))


def views(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=generator) for _ in range(2)]


def test_paper_defaults_per_variant():
    v2, v3 = MoCoConfig(variant="v2"), MoCoConfig(variant="v3")
    assert (v2.queue_size, v2.temperature, v2.momentum, v2.projection_dim, v2.symmetric) == (65536, 0.2, 0.999, 128, False)
    assert (v3.queue_size, v3.temperature, v3.momentum, v3.momentum_final, v3.predictor_hidden_dim) == (0, 1.0, 0.99, 1.0, 4096)
    with pytest.raises(ValueError, match="variant='v4' is not supported"):
        MoCoConfig(variant="v4")
    with pytest.raises(ValueError, match="MoCo v2 takes its negatives from the queue"):
        MoCoConfig(variant="v2", queue_size=0)


def test_teacher_starts_equal_and_follows_the_ema():
    model = tiny()
    for student, teacher in model.student_teacher_pairs():
        assert torch.equal(student, teacher) and not teacher.requires_grad
    before = [(s.detach().clone(), t.detach().clone()) for s, t in model.student_teacher_pairs()]
    with torch.no_grad():
        for student, _ in model.student_teacher_pairs():
            student.add_(1.0)
    model.momentum_update(0.9)
    for (student, teacher), (s0, t0) in zip(model.student_teacher_pairs(), before):
        torch.testing.assert_close(teacher, 0.9 * t0 + 0.1 * (s0 + 1.0))


def test_cosine_momentum_schedule():
    assert cosine_schedule(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_schedule(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_schedule(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(150, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(30, 100, 0.999, 0.999) == pytest.approx(0.999)


def test_queue_is_fifo_with_wrap_around():
    model = tiny()  # queue of 10
    first, second = torch.full((4, 8), 1.0), torch.full((4, 8), 2.0)
    model.enqueue(first)
    model.enqueue(second)
    assert model.queue_pointer.item() == 8
    third = torch.arange(4.0)[:, None].expand(4, 8)  # rows 0..3 land at positions 8, 9, 0, 1
    model.enqueue(third)
    assert model.queue_pointer.item() == 2
    assert model.queue[8, 0] == 0 and model.queue[9, 0] == 1 and model.queue[0, 0] == 2 and model.queue[1, 0] == 3
    assert (model.queue[2:4] == 1.0).all() and (model.queue[4:8] == 2.0).all()
    model.enqueue(torch.arange(12.0)[:, None].expand(12, 8))  # more than the queue: the last 10 are kept
    assert sorted(model.queue[:, 0].tolist()) == [float(v) for v in range(2, 12)]


def test_v2_loss_uses_the_queue_and_hands_keys_to_the_update():
    model = tiny().eval()
    pixel_values = views()
    output = model(pixel_values=pixel_values)
    query = model.projector(model.backbone(pixel_values[0]))
    key = F.normalize(model.teacher_projector(model.teacher_backbone(pixel_values[1])), dim=1)
    torch.testing.assert_close(output.loss, info_nce_loss(query, key, 0.2, negatives=model.queue))
    torch.testing.assert_close(output.state_update["keys"], key)
    model.update_after_step(0.99, [output.state_update])
    torch.testing.assert_close(model.queue[:4], key)


def test_v3_loss_is_symmetric_with_predictor_and_scaled():
    model = tiny("v3").eval()
    pixel_values = views()
    output = model(pixel_values=pixel_values)
    q = model.predictor(model.projector(model.backbone(torch.cat(pixel_values))))
    k = model.teacher_projector(model.teacher_backbone(torch.cat(pixel_values[::-1])))
    expected = sum(info_nce_loss(q[i:i + 4], k[i:i + 4], 1.0, in_batch_negatives=True, scale_by_temperature=True) for i in (0, 4))
    torch.testing.assert_close(output.loss, expected)
    assert model.queue is None


def test_round_trip_keeps_teacher_and_queue(tmp_path):
    model = tiny()
    output = model(pixel_values=views())
    model.update_after_step(0.5, [output.state_update])
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MoCoModel) and loaded.queue_pointer.item() == 4
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)


def tiny_resnet(**overrides):
    """MoCo v2 (symmetric) on timm's test_resnet, a backbone with BatchNorm, for the shuffle-BN tests."""
    torch.manual_seed(0)
    config = MoCoConfig(variant="v2", backbone_name="test_resnet", **TINY_HEAD, queue_size=16, symmetric=True,
                        **overrides)  # fmt: skip
    return MoCoModel(config).train()


def resnet_views(batch=8):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 3, 32, 32, generator=generator) for _ in range(2)]


def test_shuffle_bn_returns_every_key_to_its_query():
    # BatchNorm on running statistics: groups and order no longer matter, so split + shuffled keys must come back
    # exactly where the unsplit ones are (the un-shuffling is right)
    plain, split = tiny_resnet(), tiny_resnet(batch_norm_splits=4)
    for model in (plain, split):
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    pixel_values = resnet_views()
    torch.testing.assert_close(split.embed_targets(pixel_values), plain.embed_targets(pixel_values), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(split.embed(pixel_values), plain.embed(pixel_values), atol=1e-5, rtol=1e-4)


def test_shuffle_bn_normalises_each_group_with_its_own_statistics():
    model = tiny_resnet(batch_norm_splits=4)
    pixel_values = resnet_views()  # 2 x 8 images: 4 groups of 4
    torch.manual_seed(1)
    keys = model.embed_targets(pixel_values).flatten(0, 1)
    torch.manual_seed(1)
    order = torch.randperm(16)  # the teacher's shuffle
    teacher_views = torch.cat(pixel_values[::-1])
    expected = torch.empty_like(keys)
    with torch.no_grad():
        for group in order.chunk(4):  # each group of 4 random images normalised on its own statistics
            expected[group] = F.normalize(model.teacher_projector(model.teacher_backbone(teacher_views[group])), dim=1)
        unsplit = F.normalize(model.teacher_projector(model.teacher_backbone(teacher_views)), dim=1)
    torch.testing.assert_close(keys, expected, atol=1e-5, rtol=1e-4)
    assert (keys - unsplit).abs().max() > 1e-3  # the statistics are the groups', not the whole batch's
    student = torch.cat(pixel_values)  # the student: consecutive groups, in order
    queries = model.projector(torch.cat([model.backbone(group) for group in student.chunk(4)]))
    torch.testing.assert_close(model.embed(pixel_values).flatten(0, 1), queries, atol=1e-5, rtol=1e-4)
    model.eval()  # evaluation: one pass, running statistics, no shuffle
    with torch.no_grad():
        plain = F.normalize(model.teacher_projector(model.teacher_backbone(teacher_views)), dim=1)
    torch.testing.assert_close(model.embed_targets(pixel_values).flatten(0, 1), plain)
    with pytest.raises(ValueError, match="batch_norm_splits=0 must be >= 1"):
        MoCoConfig(batch_norm_splits=0)
