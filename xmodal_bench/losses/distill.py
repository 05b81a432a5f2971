"""Listwise score distillation (ALADIN's "listnet" loss): make a student's in-batch score lists
rank like a teacher's.

For a square batch score matrix (row i = image i, column j = caption j) each row is the list of
captions an image query sees and each column the list of images a caption query sees. Teacher
and student rows (and columns) become distributions by a softmax, the student's after scaling
its cosines by `student_scale` (ALADIN: 6):

    loss = mean_rows KL(softmax(t * T_row) || softmax(s * S_row))
         + mean_cols KL(softmax(t * T_col) || softmax(s * S_col))

ALADIN writes this as a cross-entropy CE(p_T, p_S). The KL used here differs from it only by the
teacher's entropy, a constant of the student, so the gradients are identical; but the KL is
exactly zero when the student agrees with the teacher (s * S = t * T up to a constant per list)
and positive otherwise, which makes the value readable. The teacher is always detached: no
gradient reaches whatever produced it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _listwise_kl(teacher_logits: Tensor, student_logits: Tensor, dim: int) -> Tensor:
    """Mean over lists along `dim` of KL(softmax(teacher) || softmax(student))."""
    log_p = F.log_softmax(teacher_logits, dim=dim)
    log_q = F.log_softmax(student_logits, dim=dim)
    return (log_p.exp() * (log_p - log_q)).sum(dim=dim).mean()


def listwise_distillation(
    student: Tensor, teacher: Tensor, student_scale: float = 6.0, teacher_scale: float = 1.0
) -> Tensor:
    """Row-wise plus column-wise listwise KL of `student` [B, B] towards the detached `teacher` [B, B]."""
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(
            f"student and teacher must be matrices of one shape, got {student.shape}, {teacher.shape}"
        )
    target = teacher.detach().float() * teacher_scale
    logits = student.float() * student_scale
    return _listwise_kl(target, logits, dim=1) + _listwise_kl(target, logits, dim=0)
