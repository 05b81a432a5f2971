"""Parameter groups (lr multipliers, no-decay) and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from xmodal_bench.config import OptimConfig
from xmodal_bench.methods.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.norm = nn.LayerNorm(2)


def _optim(**overrides) -> OptimConfig:
    return OmegaConf.merge(OmegaConf.structured(OptimConfig), overrides)


def _group_of(groups: list[dict], param: nn.Parameter) -> dict:
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_groups_follow_lr_multipliers_and_decay_rules() -> None:
    model = Toy()
    cfg = _optim(lr=1.0, weight_decay=0.1, new_module_lr_mult=5, bias_lr_mult=2, no_decay_weight_decay=0.0)
    groups = parameter_groups(model, cfg)
    assert _group_of(groups, model.backbone.weight)["lr"] == 1.0
    assert _group_of(groups, model.backbone.bias)["lr"] == 2.0
    assert _group_of(groups, model.head.weight)["lr"] == 5.0
    assert _group_of(groups, model.head.bias)["lr"] == 10.0  # both multipliers apply
    assert _group_of(groups, model.head.weight)["weight_decay"] == 0.1
    assert _group_of(groups, model.norm.weight)["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out() -> None:
    model = Toy()
    model.backbone.weight.requires_grad_(False)
    groups = parameter_groups(model, _optim())
    assert all(p is not model.backbone.weight for g in groups for p in g["params"])


def test_schedule_warms_up_linearly_then_follows_cosine() -> None:
    cfg = _optim(warmup_start_factor=0.1, min_lr_ratio=0.0)
    assert lr_factor(0, 100, 10, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 100, 10, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, 10, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, 100, 10, _optim(schedule="constant")) == 1.0


def test_scheduler_drives_every_group_by_its_own_base_lr() -> None:
    model = Toy()
    cfg = _optim(name="adam", lr=0.01, new_module_lr_mult=5, warmup_epochs=1, warmup_start_factor=0.5)
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.Adam)
    scheduler = build_scheduler(optimizer, cfg, total_steps=20, steps_per_epoch=4)
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert lrs[0] == pytest.approx(0.005) and lrs[-1] == pytest.approx(0.025)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert sorted(g["lr"] for g in optimizer.param_groups)[-1] == pytest.approx(0.05)
