"""IRRA as a method: config resolution, the IRR head, a real training step, param groups, bench."""

from __future__ import annotations

import json

import pytest
import torch

from datamodules import RetrievalDataModule
from xmodal_bench.cli import main
from xmodal_bench.config import compose
from xmodal_bench.errors import UserError
from xmodal_bench.methods.irra_heads import CrossModalMLMHead
from xmodal_bench.methods.optim import parameter_groups
from xmodal_bench.registry import create_method, method_sections


def _config(dataset: str = "synth_reid", *overrides: str, classes: int = 12, scale: str = "tiny"):
    parts, sections = method_sections("irra")
    return compose(
        parts, sections, dataset, scale, overrides=[f"data.train_identities={classes}", *overrides]
    )


@pytest.fixture(scope="module")
def reid_batch(synth_root, tokenizer) -> dict[str, torch.Tensor]:
    """One real training batch of the tiny synth_reid fixture (96x32 images, 16 captions)."""
    dm = RetrievalDataModule(
        synth_root, "synth_reid", tokenizer, batch_size=16, workers=0, image_size=(96, 32), seed=0
    )
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_losses_default_by_protocol_and_ablations_are_one_override() -> None:
    assert create_method(_config()).losses == ["sdm", "id", "mlm"]
    caption = create_method(_config("synth", classes=64))
    assert caption.losses == ["sdm", "mlm"] and not hasattr(caption, "classifier")
    sdm_only = create_method(_config("synth_reid", "irra.losses=[sdm]"))
    assert sdm_only.losses == ["sdm"] and not hasattr(sdm_only, "irr") and not hasattr(sdm_only, "classifier")
    with_id = create_method(_config("synth", "irra.losses=[sdm,id]", classes=64))  # explicit list respected
    assert with_id.classifier.out_features == 64 and not hasattr(with_id, "irr")
    with pytest.raises(UserError, match="unknown loss 'itc'; valid losses: sdm, id, mlm"):
        create_method(_config("synth_reid", "irra.losses=[sdm,itc]"))
    with pytest.raises(UserError, match="train_identities"):
        create_method(compose(*method_sections("irra"), "synth_reid", "tiny"))


def test_irr_head_shapes_and_padding_invariance() -> None:
    torch.manual_seed(0)
    head = CrossModalMLMHead(width=32, vocab_size=50, depth=2, heads=2).eval()
    text, image = torch.randn(3, 6, 32), torch.randn(3, 5, 32)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]).bool()
    positions = torch.zeros(3, 6, dtype=torch.bool)
    positions[0, 1], positions[0, 2], positions[1, 1] = True, True, True
    with torch.no_grad():
        assert head(text, valid, image).shape == (3, 4, 50)  # cut after the longest caption
        picked = head(text, valid, image, positions)
        assert picked.shape == (3, 50)
        # more padding, or other values at padding, do not change any prediction
        longer = torch.cat([text, torch.randn(3, 4, 32)], dim=1)
        longer[~torch.cat([valid, torch.zeros(3, 4, dtype=torch.bool)], dim=1)] = 7.0
        padded_valid = torch.cat([valid, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
        padded_positions = torch.cat([positions, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(head(longer, padded_valid, image, padded_positions), picked)
    assert CrossModalMLMHead(width=512, vocab_size=10).heads == 8  # embed_dim // 64 as IRRA


def test_training_step_on_a_real_batch_trains_every_part_on_the_clean_caption(reid_batch) -> None:
    torch.manual_seed(0)
    method = create_method(_config())
    seen: list[torch.Tensor] = []
    encode_text = method.backbone.encode_text
    method.backbone.encode_text = lambda ids: (seen.append(ids.clone()), encode_text(ids))[1]
    logged: dict[str, float] = {}
    log_step = method.log_step
    method.log_step = lambda step, batch_size: (
        logged.update(
            {k: float(torch.as_tensor(v).detach()) for k, v in {**step.losses, **step.logs}.items()}
        ),
        log_step(step, batch_size),
    )[1]
    method.log_dict = method.log = lambda *args, **kwargs: None  # no Trainer attached
    clean = reid_batch["text"].clone()
    loss = method.training_step(reid_batch, 0)
    loss.backward()
    assert set(logged) == {"sdm", "id", "mlm", "mlm_acc", "img_acc", "txt_acc"}
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values())
    assert loss.item() == pytest.approx(logged["sdm"] + logged["id"] + logged["mlm"], rel=1e-5)
    # SDM and ID saw the clean caption, the IRR branch a masked copy; the batch is untouched
    assert torch.equal(seen[0], clean) and not torch.equal(seen[1], clean)
    assert torch.equal(reid_batch["text"], clean)
    grads = {name: p.grad for name, p in method.named_parameters()}
    for name in (
        "backbone.model.visual.conv1.weight",
        "backbone.model.text.token_embedding.weight",
        "classifier.weight",
        "irr.cross_attn.in_proj_weight",
        "irr.blocks.0.mlp.c_fc.weight",
        "irr.mlm_head.fc.weight",
    ):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert grads["backbone.model.logit_scale"] is None  # fixed temperature


def test_parameter_groups_give_new_modules_and_biases_their_multipliers() -> None:
    tiny_backbone = ["backbone.model=xmb-tiny", "backbone.pretrained=null", "backbone.context_length=32"]
    method = create_method(_config("synth_reid", *tiny_backbone, "data.image_size=[96,32]", scale="base"))
    cfg = method.cfg.optim
    assert (cfg.name, cfg.lr, cfg.eps, cfg.new_module_lr_mult, cfg.bias_lr_mult) == ("adam", 1e-5, 1e-3, 5, 2)
    groups = parameter_groups(method, cfg)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(method.named_parameters())
    assert lr_of[id(params["backbone.model.text.text_projection"])] == pytest.approx(1e-5)
    assert lr_of[id(params["irr.mlm_head.fc.weight"])] == pytest.approx(5e-5)
    assert lr_of[id(params["classifier.bias"])] == pytest.approx(1e-4)
    assert (
        decay_of[id(params["classifier.bias"])] == 0.0 and decay_of[id(params["classifier.weight"])] == 4e-5
    )
    assert id(params["backbone.model.logit_scale"]) not in lr_of


@pytest.mark.slow
def test_bench_end_to_end_on_the_tiny_person_set(synth_root, tmp_path, synth_params) -> None:
    params = [f"data.synthetic.{k}={v}" for k, v in synth_params["synth_reid"].items()]
    code = main(
        [
            "bench", "--method", "irra", "--data", "synth_reid", "--data-root", str(synth_root),
            "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--leaderboards-dir", str(tmp_path / "boards"),
            "data.batch_size=16", "data.eval_batch_size=16", "data.workers=0", "trainer.log_every_n_steps=1", *params,
        ]
    )  # fmt: skip
    assert code == 0
    (path,) = (tmp_path / "runs" / "synth_reid" / "irra").glob("*/results.json")
    record = json.loads(path.read_text())
    assert record["method"] == "irra" and record["primary_mode"] == "global"
    assert record["config"]["data"]["train_identities"] == 12 and 0 <= record["metrics"]["r1"] <= 100
    logged = (path.parent / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/sdm", "train/id", "train/mlm", "train/mlm_acc"} <= set(logged)
    assert "| irra " in (tmp_path / "boards" / "synth_reid.md").read_text()
