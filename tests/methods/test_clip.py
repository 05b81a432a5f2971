"""The CLIP baseline: a training step learns, and weights load back through the config path users use."""

from __future__ import annotations

import torch

from xmodal_bench.config import compose
from xmodal_bench.registry import create_method, method_sections


def _config(*overrides: str):
    parts, sections = method_sections("clip")
    return compose(parts, sections, "synth", "tiny", overrides=list(overrides))


def _batch(method, size: int = 8) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    captions = [f"a {c} circle" for c in ["red", "blue", "green", "yellow", "pink", "black", "white", "cyan"]]
    return {
        "image": torch.randn(size, 3, 64, 64),
        "text": method.backbone.tokenizer()(captions[:size]),
        "image_index": torch.arange(size),
        "pid": torch.arange(size),  # caption sets: each image is its own id
    }


def test_training_step_reduces_the_loss_and_reaches_every_tower() -> None:
    method = create_method(_config())
    batch = _batch(method)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = method.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            visual = method.backbone.model.visual.conv1.weight.grad
            text = method.backbone.model.text.token_embedding.weight.grad
            assert (
                visual.abs().sum() > 0
                and text.abs().sum() > 0
                and method.backbone.logit_scale.grad is not None
            )
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.5 * losses[0]


def test_pretrained_checkpoint_loads_through_the_config(tmp_path) -> None:
    trained = create_method(_config()).eval()
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": trained.state_dict(), "pytorch-lightning_version": "2.6"}, path)
    loaded = create_method(_config(f"backbone.pretrained={path}")).eval()
    batch = _batch(trained, 4)
    with torch.no_grad():
        assert torch.equal(
            trained.image_features(batch["image"])["global"], loaded.image_features(batch["image"])["global"]
        )
        assert torch.equal(
            trained.text_features(batch["text"])["global"], loaded.text_features(batch["text"])["global"]
        )


def _naive_token_scores(method, batch) -> torch.Tensor:
    """FILIP's late interaction, pair by pair: mean over words of the best patch's cosine."""
    backbone = method.backbone
    _, patches = backbone.encode_image(batch["image"])
    _, words, _ = backbone.encode_text(batch["text"])
    patches = torch.nn.functional.normalize(backbone.project_image_tokens(patches), dim=-1)
    words = torch.nn.functional.normalize(backbone.project_text_tokens(words), dim=-1)
    scores = torch.zeros(len(patches), len(words))
    for t, ids in enumerate(batch["text"]):
        length = int((ids != 0).sum())  # start marker, words, end marker, then padding
        caption = words[t, 1 : length - 1]
        for i in range(len(patches)):
            scores[i, t] = (caption @ patches[i].T).max(dim=1).values.mean()
    return scores


def test_token_term_is_filips_late_interaction_infonce() -> None:
    method = create_method(_config("clip.token_loss_weight=0.5"))
    batch = _batch(method)
    ids = {"image_index": batch["image_index"], "pid": batch["pid"]}
    with torch.no_grad():
        step = method.train_step(batch, ids)
        logits = method.backbone.logit_scale.exp() * _naive_token_scores(method, batch)
        labels = torch.arange(len(logits))
        want = (
            0.5
            * (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            )
            / 2
        )
    assert torch.allclose(step.losses["token_infonce"], want, atol=1e-5)
    assert "token_infonce" not in create_method(_config()).train_step(batch, ids).losses  # CLIP: off
