"""ALADIN: the training step (alignment hinge + delayed distillation), the evaluation features and
the three inference modes (matching through the index, exhaustive alignment, two-stage)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import PropertyMock, patch

import pytest
import torch
import torch.nn.functional as F

from datamodules import RetrievalDataModule
from xmodal_bench.config import compose
from xmodal_bench.errors import UserError
from xmodal_bench.methods.aladin import ALADIN
from xmodal_bench.methods.optim import build_optimizer
from xmodal_bench.registry import create_method, method_sections
from xmodal_bench.retrieval.evaluation import EvalInputs, evaluate_modes, global_mode
from xmodal_bench.retrieval.token_scores import WordPooling, token_score_matrix, word_mask


def _config(*overrides: str, spec: str = "aladin"):
    parts, sections = method_sections(spec)
    return compose(parts, sections, "synth", "tiny", overrides=list(overrides))


@pytest.fixture(scope="module")
def batch(synth_root, tokenizer) -> dict[str, torch.Tensor]:
    datamodule = RetrievalDataModule(
        synth_root, "synth", tokenizer, batch_size=12, workers=0, image_size=(64, 64)
    )
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def _step(method: ALADIN, batch: dict, epoch: int) -> tuple[torch.Tensor, dict]:
    logged: dict = {}
    method.log_dict = lambda values, **kwargs: logged.update(values)
    method.log = lambda *args, **kwargs: None
    with patch.object(ALADIN, "current_epoch", new_callable=PropertyMock, return_value=epoch):
        loss = method.training_step(batch, 0)
    return loss, logged


def test_distillation_waits_for_its_epoch_then_trains_the_matching_head(batch) -> None:
    torch.manual_seed(0)
    # the plain head (a zero-initialised residual correction would block its first gradients)
    method = create_method(
        _config("aladin.distill_after_epochs=2", "aladin.residual_slot=false", "aladin.matching_weight=0")
    )
    assert [method.distill_weight(e) for e in range(4)] == [0.0, 0.0, 1.0, 1.0]
    head = method.matching.encoder.layers[0].linear1.weight

    loss, logged = _step(method, batch, epoch=1)
    assert {"train/alignment", "train/distill", "train/distill_raw", "train/loss"} <= set(logged)
    assert float(logged["train/distill"]) == 0.0 and float(logged["train/distill_raw"]) > 0
    assert torch.isclose(loss, logged["train/alignment"])
    loss.backward()
    assert head.grad is not None and float(head.grad.abs().sum()) == 0.0  # used (DDP), not trained
    patches = method.backbone.model.visual.conv1.weight.grad
    assert patches is not None and float(patches.abs().sum()) > 0  # the hinge trains the backbone
    method.zero_grad()

    loss, logged = _step(method, batch, epoch=2)
    assert float(logged["train/distill"]) > 0 and torch.isfinite(loss)
    loss.backward()
    assert float(head.grad.abs().sum()) > 0
    assert method.backbone.logit_scale.grad is None


def test_teacher_logits_are_the_summed_scores_whatever_the_hinge_pools(batch) -> None:
    method = create_method(_config("aladin.word_reduction=mean"))
    with torch.no_grad():
        _, image_tokens = method.encode_image(batch["image"])
        _, text_tokens, words = method.encode_text(batch["text"])
    mean = token_score_matrix(text_tokens, words, image_tokens, pooling=WordPooling("mean")).T
    summed = token_score_matrix(text_tokens, words, image_tokens, pooling=WordPooling("sum")).T
    assert torch.allclose(method.teacher_logits(mean, words), summed, atol=1e-5)
    # the teacher as trained (the earlier tiny setting): a mean's logits span [-1, 1]
    as_trained = create_method(_config("aladin.word_reduction=mean", "aladin.teacher_reduction=mean"))
    assert torch.equal(as_trained.teacher_logits(mean, words), mean)
    released = create_method(_config("aladin.word_reduction=sum"))
    assert torch.equal(released.teacher_logits(summed, words), summed)


def _attach_trainer(method: ALADIN, step: int, total: int) -> None:
    method._trainer = SimpleNamespace(
        global_step=step, estimated_stepping_batches=total, num_training_batches=total, current_epoch=0
    )


def test_matching_finetune_is_the_last_fraction_of_the_steps() -> None:
    method = create_method(_config("aladin.matching_finetune_fraction=0.25"))
    assert not method.in_matching_finetune()  # no trainer
    flags = []
    for step in range(8):
        _attach_trainer(method, step, 8)
        flags.append(method.in_matching_finetune())
    assert flags == [False] * 6 + [True] * 2
    joint = create_method(_config())
    _attach_trainer(joint, 7, 8)
    assert not joint.in_matching_finetune()


def test_matching_finetune_freezes_the_backbone_and_trains_the_matching_head_alone(batch) -> None:
    torch.manual_seed(0)
    method = create_method(_config("aladin.matching_finetune_fraction=0.5", "aladin.distill_after_epochs=9"))
    optimizer = build_optimizer(method, method.cfg.optim)
    _attach_trainer(method, 5, 10)
    backbone = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    heads = {k: v.clone() for k, v in method.matching.state_dict().items()}
    for _ in range(2):
        loss, logged = _step(method, batch, epoch=0)
        # the frozen teacher's hinge is logged, not trained; distillation is on despite the delay
        assert float(logged["train/alignment"]) == 0.0 and float(logged["train/alignment_raw"]) > 0
        assert float(logged["train/distill_on"]) == 1.0 and float(logged["train/matching_finetune"]) == 1.0
        loss.backward()
        method.on_before_optimizer_step(optimizer)
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(v, backbone[k]) for k, v in method.backbone.state_dict().items())
    assert any(not torch.equal(v, heads[k]) for k, v in method.matching.state_dict().items())
    # before the finetune the same step trains the backbone
    _attach_trainer(method, 4, 10)
    loss, _ = _step(method, batch, epoch=0)
    loss.backward()
    method.on_before_optimizer_step(optimizer)
    assert method.backbone.model.visual.conv1.weight.grad is not None


def test_a_matching_hinge_makes_the_served_scores_binary_supervised(batch) -> None:
    torch.manual_seed(0)
    method = create_method(_config("aladin.matching_weight=0.1"))
    assert method.supervision.binary_term == "matching" and method.supervision.weight == 0.1
    assert create_method(_config("aladin.matching_weight=0")).supervision.binary_term is None  # released
    _, logged = _step(method, batch, epoch=1)
    assert float(logged["train/matching"]) > 0
    # BCLS replaces that hinge by Triplet-SN and adds its Kendall term, both at the hinge's weight
    plugin = create_method(_config("aladin.matching_weight=0.1", spec="aladin+bcls")).plugins[0]
    assert plugin.replaced_term == "matching" and plugin.weight == 0.1 and plugin.reduction == "sum"
    g = torch.Generator().manual_seed(0)
    scores, positives = torch.randn(6, 6, generator=g), torch.eye(6, dtype=torch.bool)
    labels = torch.rand(6, 6, generator=g).masked_fill(positives, 1.0)
    plugin.labels = lambda ids, positives: labels
    weighted = plugin.terms(scores, positives, {})
    plugin.weight = 1.0
    plain = plugin.terms(scores, positives, {})
    assert set(weighted) == {"triplet_sn", "kendall"} and float(plain["kendall"]) > 0
    for name, value in weighted.items():
        assert torch.isclose(value, 0.1 * plain[name]), name


def test_word_mask_drops_start_end_and_padding(tokenizer) -> None:
    ids = tokenizer(["a red circle", ""])
    words = word_mask(ids, ids != 0)
    assert words[0].tolist()[:6] == [False, True, True, True, False, False]
    assert not bool(words[1].any())


def test_evaluation_features(batch) -> None:
    method = create_method(_config()).eval()
    with torch.no_grad():
        image = method.image_features(batch["image"])
        text = method.text_features(batch["text"])
    n = batch["image"].shape[0]
    assert image["global"].shape == (n, 64) and image["tokens"].shape == (n, 16, 64)
    assert text["tokens"].shape == (n, 32, 64) and text["mask"].shape == (n, 32)
    assert text["mask"].dtype == torch.uint8 and bool((text["mask"].sum(1) > 0).all())
    for feats in (image, text):
        assert torch.allclose(feats["global"].norm(dim=-1), torch.ones(n), atol=1e-5)
    norms = text["tokens"].norm(dim=-1)[text["mask"].bool()]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def _inputs(images: int = 30, per_image: int = 2, seed: int = 0) -> EvalInputs:
    g = torch.Generator().manual_seed(seed)
    owner = torch.arange(images).repeat_interleave(per_image)
    texts = len(owner)
    image_tokens = F.normalize(torch.randn(images, 5, 8, generator=g), dim=-1)
    text_tokens = F.normalize(torch.randn(texts, 6, 8, generator=g), dim=-1)
    mask = (torch.arange(6)[None, :] < torch.randint(1, 7, (texts, 1), generator=g)).to(torch.uint8)
    return EvalInputs(
        images={
            "global": F.normalize(torch.randn(images, 8, generator=g), dim=-1),
            "tokens": image_tokens,
            "pid": torch.arange(images),
        },
        texts={
            "global": F.normalize(torch.randn(texts, 8, generator=g), dim=-1),
            "tokens": text_tokens,
            "mask": mask,
            "pid": owner,
            "image_index": owner,
        },
        protocol="caption",
    )


def test_modes_agree_with_their_definitions() -> None:
    method = create_method(_config("aladin.k_t2i=1000", "aladin.k_i2t=1000"))
    inputs = _inputs()
    modes = method.inference_modes()
    assert [m.name for m in modes] == ["matching", "alignment", "two_stage"]
    report = evaluate_modes(method, inputs, modes, latency_queries=10, top_k=5)
    plain = evaluate_modes(method, inputs, [global_mode()], with_latency=False)
    assert report["primary_mode"] == "matching"
    assert report["modes"]["matching"]["metrics"] == plain["modes"]["global"]["metrics"]
    # a shortlist covering the whole gallery re-ranked by alignment alone is the exhaustive alignment
    assert report["modes"]["two_stage"]["metrics"] == report["modes"]["alignment"]["metrics"]
    for entry in report["modes"].values():
        assert set(entry["latency_ms"]) == {"t2i_ms", "i2t_ms"}
    # the alignment mode is skipped when a gallery is larger than the limit
    small = create_method(_config("aladin.alignment_max_gallery=40"))
    report = evaluate_modes(small, inputs, small.inference_modes(), with_latency=False)
    assert "alignment" in report["skipped"] and set(report["modes"]) == {"matching", "two_stage"}


def test_matching_through_an_approximate_index_ranks_what_it_finds() -> None:
    inputs = _inputs(images=200, per_image=1, seed=1)
    exact = evaluate_modes(None, inputs, [global_mode()], with_latency=False)["modes"]["global"]["metrics"]
    method = create_method(_config("aladin.index.backend=faiss-hnsw"))
    approx = evaluate_modes(method, inputs, method.inference_modes()[:1], latency_queries=5)
    metrics = approx["modes"]["matching"]["metrics"]
    assert metrics["t2i_r10"] == pytest.approx(exact["t2i_r10"], abs=2.0)  # HNSW finds (nearly) all
    assert metrics["t2i_r10"] <= exact["t2i_r10"] + 1e-9


@pytest.mark.parametrize(
    "override",
    ["aladin.k_t2i=0", "aladin.index.backend=annoy", "aladin.heads=3", "aladin.eval_token_dtype=int8"],
)
def test_bad_settings_are_user_errors(override: str) -> None:
    with pytest.raises(UserError):
        create_method(_config(override))
