"""Listwise distillation: zero exactly when the student agrees with the teacher, positive otherwise."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xmodal_bench.losses import listwise_distillation


def _naive(student: torch.Tensor, teacher: torch.Tensor, s: float, t: float) -> float:
    total = 0.0
    for dim in (1, 0):
        p, q = F.softmax(t * teacher, dim=dim), F.softmax(s * student, dim=dim)
        lists = (
            [(p[i], q[i]) for i in range(len(p))]
            if dim == 1
            else [(p[:, j], q[:, j]) for j in range(p.shape[1])]
        )
        total += sum(float((a * (a.log() - b.log())).sum()) for a, b in lists) / len(lists)
    return total


def test_zero_when_student_and_teacher_agree_up_to_the_scale() -> None:
    torch.manual_seed(0)
    student = torch.rand(6, 6) * 2 - 1
    assert float(listwise_distillation(student, 6.0 * student)) < 1e-6
    assert float(listwise_distillation(student, 3.0 * student, teacher_scale=2.0)) < 1e-6
    # a constant shift of the whole matrix changes no softmax
    assert float(listwise_distillation(student, 6.0 * student + 0.7)) < 1e-6


def test_positive_otherwise_and_matches_the_definition() -> None:
    torch.manual_seed(1)
    student, teacher = torch.rand(5, 5), torch.rand(5, 5)
    loss = listwise_distillation(student, teacher, student_scale=6.0, teacher_scale=2.0)
    assert float(loss) > 0
    assert abs(float(loss) - _naive(student, teacher, 6.0, 2.0)) < 1e-5
    # the same scores at another scale still disagree: the scale is part of the target
    assert float(listwise_distillation(student, student)) > 1e-3


def test_gradient_is_the_cross_entropy_gradient_and_teacher_is_detached() -> None:
    torch.manual_seed(2)
    student = torch.rand(4, 4, requires_grad=True)
    teacher = torch.rand(4, 4, requires_grad=True)
    listwise_distillation(student, teacher).backward()
    assert teacher.grad is None
    reference = student.detach().clone().requires_grad_(True)
    p_row, p_col = F.softmax(teacher.detach(), 1), F.softmax(teacher.detach(), 0)
    ce = (
        -(p_row * F.log_softmax(6 * reference, 1)).sum(1).mean()
        - (p_col * F.log_softmax(6 * reference, 0)).sum(0).mean()
    )
    ce.backward()
    assert torch.allclose(student.grad, reference.grad, atol=1e-6)
