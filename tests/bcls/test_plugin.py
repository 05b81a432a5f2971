"""The BCLS plugin over a base method: composition per base, the training step's terms, config checks."""

from __future__ import annotations

import shutil

import pytest
import torch

from datamodules import RetrievalDataModule
from xmodal_bench.config import compose
from xmodal_bench.errors import UserError
from xmodal_bench.methods.bcls import BCLS
from xmodal_bench.methods.clip import CLIP
from xmodal_bench.methods.tgdt import TGDT
from xmodal_bench.registry import create_method, method_sections
from xmodal_bench.retrieval.evaluation import EvalInputs


def _config(spec: str, root, *overrides: str):
    parts, sections = method_sections(spec)
    return compose(parts, sections, "synth", "tiny", overrides=[f"data.root={root}", *overrides])


@pytest.fixture
def synth_copy(synth_root, tmp_path):
    shutil.copytree(synth_root / "synth", tmp_path / "data" / "synth")
    return tmp_path / "data"


def _batch(root, tokenizer) -> dict[str, torch.Tensor]:
    datamodule = RetrievalDataModule(root, "synth", tokenizer, batch_size=12, workers=0, image_size=(64, 64))
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def _step(method, batch) -> tuple[torch.Tensor, dict]:
    logged: dict = {}
    method.log_dict = lambda values, **kwargs: logged.update(values)
    method.log = lambda *args, **kwargs: None
    return method.training_step(batch, 0), logged


def test_tgdt_bcls_replaces_the_global_hinge_and_adds_kendall(synth_copy, tokenizer) -> None:
    torch.manual_seed(0)
    method = create_method(_config("tgdt+bcls", synth_copy, "bcls.window=4"))
    # a plugin module attached to the unchanged base class, its behaviour read from the base's supervision
    assert type(method) is TGDT and len(method.plugins) == 1 and isinstance(method.plugins[0], BCLS)
    plugin = method.plugins[0]
    assert (plugin.binary, plugin.replaced_term, plugin.reduction) == ("replace", "global", "sum")
    loss, logged = _step(method, _batch(synth_copy, tokenizer))
    assert {"train/triplet_sn", "train/kendall", "train/global_replaced", "train/local"} <= set(logged)
    assert "train/global" not in logged
    parts = logged["train/triplet_sn"] + logged["train/kendall"] + logged["train/local"]
    assert loss.item() == pytest.approx((parts + logged["train/consistency"]).item(), rel=1e-5)
    loss.backward()
    assert method.backbone.model.visual.conv1.weight.grad.abs().sum() > 0
    # the batch scores live in the step's value only: nothing on the method keeps the graph alive
    assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in vars(method).values())


def test_clip_bcls_keeps_infonce_and_a_plain_base_keeps_no_scores(synth_copy, tokenizer) -> None:
    torch.manual_seed(0)
    batch = _batch(synth_copy, tokenizer)
    method = create_method(_config("clip+bcls", synth_copy, "bcls.continuous=kendall"))
    loss, logged = _step(method, batch)
    assert {"train/infonce", "train/kendall"} <= set(logged) and "train/triplet_sn" not in logged
    assert torch.isfinite(loss)
    add = create_method(_config("clip+bcls", synth_copy, "bcls.binary=add"))
    _, logged = _step(add, batch)
    assert {"train/infonce", "train/triplet_sn", "train/kendall"} <= set(logged)
    plain = create_method(_config("clip", synth_copy))
    assert type(plain) is CLIP and len(plain.plugins) == 0
    _step(plain, batch)
    assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in vars(plain).values())
    # every method, base or +BCLS, reports Kendall's tau against the test split's pseudo-labels
    images = torch.nn.functional.normalize(torch.randn(48, 8), dim=-1)
    texts = images.repeat_interleave(5, dim=0)  # each caption at its own image: a perfect retriever
    inputs = EvalInputs(images={"global": images}, texts={"global": texts}, protocol="caption")
    tau, values = plain._pseudo_label_tau("test", inputs)
    assert set(values) == {"tau/t2i", "tau/i2t"} and values["tau/t2i"].shape == (240,)
    assert tau["labels"] == "tfidf" and tau["queries"] == {"t2i": 240, "i2t": 48}
    assert -1 <= tau["i2t"] <= 1 and -1 <= tau["t2i"] <= 1


def test_default_label_gap_ranks_only_pairs_the_pseudo_labels_separate_by_more_than_0_3(synth_copy) -> None:
    """ITM_CLS's gap: negatives whose labels differ by less than 0.3 are not ordered against each other."""
    torch.manual_seed(0)
    scores = torch.randn(8, 8)
    near = 0.2 + 0.25 * torch.rand(8, 8)  # every negative pair's labels within 0.25 of each other
    flat = torch.full((8, 8), 0.3)
    eye = torch.eye(8, dtype=torch.bool)
    near, flat = near.masked_fill(eye, 1.0), flat.masked_fill(eye, 1.0)
    default = create_method(_config("clip+bcls", synth_copy)).plugins[0]
    assert default.continuous(scores, near).item() == pytest.approx(default.continuous(scores, flat).item())
    narrow = create_method(_config("clip+bcls", synth_copy, "bcls.gap=0.05")).plugins[0]
    assert narrow.continuous(scores, near).item() != pytest.approx(narrow.continuous(scores, flat).item())


@pytest.mark.parametrize(
    ("spec", "override", "message"),
    [
        # the released ALADIN (no matching hinge): its served scores learn by distillation only
        ("aladin+bcls", "aladin.matching_weight=0 bcls.binary=replace", "no binary ranking term"),
        ("clip+bcls", "bcls.continuous=listnet", "bcls.continuous"),
        ("clip+bcls", "bcls.window=0", "bcls.window"),
        ("clip+bcls", "bcls.temperature=0", "temperature"),
    ],
)
def test_bad_settings_are_user_errors(synth_copy, spec, override, message) -> None:
    with pytest.raises(UserError, match=message):
        create_method(_config(spec, synth_copy, *override.split()))
