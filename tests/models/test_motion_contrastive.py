"""Local motion contrastive loss, time-step projection and flow rotation."""

import math

import pytest
import torch
import torch.nn.functional as F

from motionfit.models.motion_contrastive import (
    TimeStepProjection,
    local_motion_contrastive_loss,
    other_clip_loss,
    rotate_flow,
    time_steps,
)


def test_loss_matches_direct_evaluation() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher, rotated = (
        torch.randn(2, 3, 5, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    temperature = 0.1
    n_batch, n_steps = 2, 3
    expected = 0.0
    for b in range(n_batch):
        for t in range(n_steps):
            q = F.normalize(student[b, t], dim=0)
            scores = [
                math.exp(float(q @ F.normalize(teacher[b, s], dim=0)) / temperature) for s in range(n_steps)
            ]
            scores += [
                math.exp(float(q @ F.normalize(rotated[b, s], dim=0)) / temperature) for s in range(n_steps)
            ]
            expected -= math.log(scores[t] / sum(scores)) / (n_batch * n_steps)
    loss = local_motion_contrastive_loss(student, teacher, rotated, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_loss_prefers_aligned_time_steps_and_trains_the_student() -> None:
    generator = torch.Generator().manual_seed(1)
    teacher, rotated = torch.randn(2, 4, 8, generator=generator), torch.randn(2, 4, 8, generator=generator)
    aligned = local_motion_contrastive_loss(teacher.clone(), teacher, rotated)
    shuffled = local_motion_contrastive_loss(teacher[:, [1, 2, 3, 0]], teacher, rotated)
    assert aligned < shuffled
    student = torch.randn(2, 4, 8, generator=generator, requires_grad=True)
    local_motion_contrastive_loss(student, teacher, rotated).backward()
    assert student.grad.abs().sum() > 0


def test_other_clip_control_takes_each_clips_anchors_from_the_next_clip() -> None:
    generator = torch.Generator().manual_seed(2)
    teacher, rotated = (torch.randn(4, 2, 8, generator=generator) for _ in range(2))
    student = teacher.clone().requires_grad_()  # anchors that match their own clip's keys
    own = local_motion_contrastive_loss(student, teacher, rotated)
    control = other_clip_loss(student, teacher, rotated)
    assert control.item() == pytest.approx(
        local_motion_contrastive_loss(student.roll(1, dims=0), teacher, rotated).item()
    )
    assert own.item() < 0.1 < math.log(4) < control.item() and not control.requires_grad
    with pytest.raises(ValueError, match="at least 2 clips"):
        other_clip_loss(student[:1], teacher[:1], rotated[:1])


def test_time_steps_and_projection_shapes() -> None:
    generator = torch.Generator().manual_seed(2)
    feature_map = torch.randn(2, 16, 4, 3, 3, generator=generator)
    steps = time_steps(feature_map)
    torch.testing.assert_close(steps, feature_map.mean(dim=(3, 4)).transpose(1, 2))
    torch.testing.assert_close(time_steps(feature_map, n_steps=2), (steps[:, 0::2] + steps[:, 1::2]) / 2)
    projection = TimeStepProjection(16, embedding_dim=8)
    assert projection(feature_map).shape == (2, 4, 8)
    assert TimeStepProjection(16, embedding_dim=8, n_steps=1)(feature_map).shape == (2, 1, 8)


def test_rotated_flow_is_the_flow_of_the_rotated_video() -> None:
    generator = torch.Generator().manual_seed(3)
    frame = torch.rand(8, 8, generator=generator)
    u, v = 1, 2  # content moves 1 px right and 2 px down
    next_frame = torch.roll(frame, shifts=(v, u), dims=(0, 1))
    flow = torch.zeros(1, 2, 1, 8, 8)
    flow[:, 0], flow[:, 1] = u, v
    rotated = rotate_flow(flow)
    u_rot, v_rot = int(rotated[0, 0, 0, 0, 0]), int(rotated[0, 1, 0, 0, 0])
    assert (u_rot, v_rot) == (2, -1)
    rotated_frame, rotated_next = torch.rot90(frame, 1, dims=(0, 1)), torch.rot90(next_frame, 1, dims=(0, 1))
    assert torch.equal(torch.roll(rotated_frame, shifts=(v_rot, u_rot), dims=(0, 1)), rotated_next)


def test_rotate_flow_turns() -> None:
    flow = torch.randn(2, 2, 3, 4, 5)
    assert rotate_flow(flow).shape == (2, 2, 3, 5, 4)
    torch.testing.assert_close(rotate_flow(flow, 4), flow)
    torch.testing.assert_close(rotate_flow(flow, 2), -torch.flip(flow, dims=(-2, -1)))
    torch.testing.assert_close(rotate_flow(rotate_flow(flow), -1), flow)
    with pytest.raises(ValueError, match=r"flow must be \[\.\.\., 2, T, H, W\]"):
        rotate_flow(torch.randn(2, 3, 3, 4, 5))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"must all be \[B, T, E\]"):
        local_motion_contrastive_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 2, 4))
