"""TGDT: a training step on the tiny synthetic fixture trains every part, evaluation features
carry what the fine scorer needs, and `bench` end to end reports the three inference modes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from datamodules import RetrievalDataModule
from xmodal_bench.cli import main
from xmodal_bench.config import compose
from xmodal_bench.errors import UserError
from xmodal_bench.metrics import CAPTION_METRIC_NAMES
from xmodal_bench.registry import create_method, method_sections
from xmodal_bench.retrieval.token_scores import token_score_matrix, word_mask


def _config(*overrides: str):
    parts, sections = method_sections("tgdt")
    return compose(parts, sections, "synth", "tiny", overrides=list(overrides))


def _train_batch(synth_root, tokenizer) -> dict[str, torch.Tensor]:
    datamodule = RetrievalDataModule(
        synth_root, "synth", tokenizer, batch_size=12, workers=0, image_size=(64, 64)
    )
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def test_training_step_is_finite_and_reaches_the_backbone(synth_root, tokenizer) -> None:
    torch.manual_seed(0)
    method = create_method(_config())
    batch = _train_batch(synth_root, tokenizer)
    logged = {}
    method.log_dict = lambda values, **kwargs: logged.update(values)
    method.log = lambda *args, **kwargs: None
    loss = method.training_step(batch, 0)
    assert torch.isfinite(loss) and loss.item() > 0
    assert {"train/global", "train/consistency", "train/local", "train/loss"} <= set(logged)
    loss.backward()
    model = method.backbone.model
    for name, grad in [
        ("image patches", model.visual.conv1.weight.grad),
        ("word embeddings", model.text.token_embedding.weight.grad),
        # residual (the tiny default): the zero-initialised corrections are what learn first
        ("image local branch", (method.image_local.correction or method.image_local.proj).weight.grad),
        # residual (the tiny default): the zero-initialised correction is what learns first
        (
            "text global branch",
            (method.text_global.correction or method.text_global.encoder.layers[0].linear1).weight.grad,
        ),
    ]:
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert method.backbone.logit_scale.grad is None


def test_evaluation_features_feed_the_fine_score(synth_root, tokenizer) -> None:
    method = create_method(_config()).eval()
    batch = _train_batch(synth_root, tokenizer)
    with torch.no_grad():
        image = method.image_features(batch["image"])
        text = method.text_features(batch["text"])
        _, image_tokens = method.encode_image(batch["image"])
    assert image["global"].norm(dim=-1) == pytest.approx(torch.ones(12), abs=1e-5)
    assert image["tokens"].shape == (12, 16, 64) and text["tokens"].shape == (12, 32, 64)
    # the fine score counts words: every caption token but the start and end markers (as released)
    words = word_mask(batch["text"], batch["text"] != 0)
    assert text["mask"].dtype == torch.uint8 and torch.equal(text["mask"].bool(), words)
    assert torch.equal(image["tokens"], image_tokens)
    fine = token_score_matrix(text["tokens"], text["mask"].bool(), image["tokens"])
    assert fine.shape == (12, 12) and bool((fine.abs() <= 1 + 1e-5).all())


def test_a_residual_local_branch_starts_as_the_backbones_token_alignment(synth_root, tokenizer) -> None:
    batch = _train_batch(synth_root, tokenizer)
    method = create_method(_config("tgdt.residual_local=true")).eval()
    backbone = method.backbone
    with torch.no_grad():
        _, image_tokens = method.encode_image(batch["image"])
        _, text_tokens, _ = method.encode_text(batch["text"])
        _, patches = backbone.encode_image(batch["image"])
        _, words, mask = backbone.encode_text(batch["text"])
    aligned_patches = F.normalize(backbone.project_image_tokens(patches), dim=-1)
    assert torch.allclose(image_tokens, aligned_patches, atol=1e-6)
    aligned_words = F.normalize(backbone.project_text_tokens(words), dim=-1)
    assert torch.allclose(text_tokens[mask], aligned_words[mask], atol=1e-6)
    fresh = create_method(_config("tgdt.residual_local=false")).eval()  # same start, a random branch
    with torch.no_grad():
        _, fresh_tokens = fresh.encode_image(batch["image"])
    assert not torch.allclose(fresh_tokens, aligned_patches, atol=1e-2)


def test_impossible_shortlist_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"tgdt\.k_t2i"):
        create_method(_config("tgdt.k_t2i=0"))


@pytest.mark.slow
def test_bench_reports_global_fused_and_local(synth_root, tmp_path, synth_params) -> None:
    params = [f"data.synthetic.{k}={v}" for k, v in synth_params["synth"].items()]
    code = main(
        [
            "bench", "--method", "tgdt", "--data", "synth", "--data-root", str(synth_root),
            "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--leaderboards-dir", str(tmp_path / "boards"),
            "data.batch_size=16", "data.eval_batch_size=16", "data.workers=0", "tgdt.k_t2i=10",
            "eval.latency_queries=20", *params,
        ]
    )  # fmt: skip
    assert code == 0
    (path,) = (tmp_path / "runs" / "synth" / "tgdt").glob("*/results.json")
    record = json.loads(path.read_text())
    assert record["primary_mode"] == "fused" and list(record["modes"]) == ["fused", "global", "local"]
    for mode in record["modes"].values():
        assert set(mode["metrics"]) == set(CAPTION_METRIC_NAMES)
        assert set(mode["latency_ms"]) == {"t2i_ms", "i2t_ms"} and min(mode["latency_ms"].values()) > 0
    board = (tmp_path / "boards" / "synth.md").read_text()
    assert "| tgdt " in board and "· global" in board and "· local" in board
