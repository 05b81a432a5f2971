"""The shared backbone: shapes, masks, and loading weights back through the user-facing path."""

from __future__ import annotations

import open_clip
import pytest
import torch

from xmodal_bench.backbones import DualEncoder, create_backbone
from xmodal_bench.errors import UserError


@pytest.fixture(scope="module")
def tiny() -> DualEncoder:
    torch.manual_seed(0)
    return create_backbone("xmb-tiny").eval()


def _embed(model: DualEncoder, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        image, image_tokens = model.encode_image(images)
        text, text_tokens, mask = model.encode_text(ids)
    return image, image_tokens, text, text_tokens, mask


def test_shapes_and_mask(tiny: DualEncoder) -> None:
    ids = tiny.tokenizer()(["a red circle", "two small blue squares at the bottom"])
    image, image_tokens, text, text_tokens, mask = _embed(tiny, torch.randn(2, 3, 64, 64), ids)
    assert image.shape == (2, tiny.embed_dim) and text.shape == (2, tiny.embed_dim)
    grid_h, grid_w = tiny.model.visual.grid_size
    assert image_tokens.shape == (2, grid_h * grid_w, tiny.image_width)
    assert text_tokens.shape == (2, tiny.context_length, tiny.text_width)
    # mask covers start token, words and end token, nothing of the padding
    assert mask[0].sum() == (ids[0] != 0).sum() and not mask[0, -1]
    assert tiny.project_image_tokens(image_tokens).shape == (2, grid_h * grid_w, tiny.embed_dim)
    assert tiny.project_text_tokens(text_tokens).shape == (2, tiny.context_length, tiny.embed_dim)


def test_projected_end_token_equals_global_text_feature(tiny: DualEncoder) -> None:
    ids = tiny.tokenizer()(["a green star in the middle"])
    _, _, text, tokens, _ = _embed(tiny, torch.randn(1, 3, 64, 64), ids)
    eot = ids[0].argmax()
    assert torch.allclose(tiny.project_text_tokens(tokens)[0, eot], text[0], atol=1e-5)


def test_rectangular_person_images() -> None:
    model = create_backbone("xmb-tiny", image_size=(96, 32))
    _, tokens = model.encode_image(torch.randn(1, 3, 96, 32))
    patch_h, patch_w = model.model.visual.patch_size
    assert tokens.shape[1] == (96 // patch_h) * (32 // patch_w)
    assert model.image_size() == (96, 32)


def _assert_same_embeddings(a: DualEncoder, b: DualEncoder) -> None:
    torch.manual_seed(1)
    images, ids = torch.randn(2, 3, 64, 64), a.tokenizer()(["one", "two words"])
    for x, y in zip(_embed(a, images, ids), _embed(b.eval(), images, ids), strict=True):
        assert torch.equal(x, y)


def test_open_clip_weights_file_round_trip(tiny: DualEncoder, tmp_path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    _assert_same_embeddings(tiny, create_backbone("xmb-tiny", pretrained=str(path)))


def test_lightning_checkpoint_prefix_is_stripped(tiny: DualEncoder, tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    state = {f"backbone.model.{k}": v for k, v in tiny.model.state_dict().items()}
    state["head.weight"] = torch.zeros(3, 3)  # a method's own head: not part of the backbone
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.0"}, path)
    _assert_same_embeddings(tiny, create_backbone("xmb-tiny", pretrained=str(path)))


def test_plain_clip_layout_is_converted(tmp_path) -> None:
    """Weights saved by open_clip's plain CLIP class (text tower at the top level) still load."""
    torch.manual_seed(2)
    plain = open_clip.create_model("xmb-tiny")
    assert "token_embedding.weight" in plain.state_dict()
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    loaded = create_backbone("xmb-tiny", pretrained=str(path)).eval()
    ids = loaded.tokenizer()(["a caption"])
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(ids)[0], plain.eval().encode_text(ids), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "no-such-model"}, "unknown open_clip model"),
        ({"pretrained": "/no/such/file.pt"}, "neither a file nor a known tag"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_backbone(**kwargs)


def test_garbage_weights_file_is_user_error(tmp_path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights"):
        create_backbone("xmb-tiny", pretrained=str(path))


def test_weights_of_another_shape_are_user_error(tmp_path) -> None:
    other = create_backbone("xmb-tiny", context_length=16)
    path = tmp_path / "other.pt"
    state = other.model.state_dict()
    state["visual.proj"] = torch.zeros(128, 32)  # wrong embedding width
    torch.save(state, path)
    with pytest.raises(UserError, match="do not fit"):
        create_backbone("xmb-tiny", pretrained=str(path))
