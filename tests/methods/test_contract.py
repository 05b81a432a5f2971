"""The contract every registered method keeps, checked over the registry (timm style): a method
added to the registry is tested here with no new test code.

For every method, plain and with every plugin, on caption and person data: one training step
gives a finite loss whose gradients reach every trainable parameter group; every inference mode
yields every metric of the protocol; a checkpoint written and read back through the user's path
gives identical scores. And the CI regression sweep covers every registered method and a plugin
variant.
"""

from __future__ import annotations

import shutil
from unittest.mock import PropertyMock, patch

import pytest
import torch

from datamodules import RetrievalDataModule
from xmodal_bench.config import benchmarks_dir, read_layer
from xmodal_bench.methods.optim import parameter_groups
from xmodal_bench.metrics import EmbeddingCollector, get_protocol
from xmodal_bench.registry import create_method, method_entries, plugin_entries
from xmodal_bench.retrieval.evaluation import EvalInputs, evaluate_modes
from xmodal_bench.run.checkpoints import checkpoint_config, read_checkpoint, restore_method
from xmodal_bench.run.request import RunRequest

pytestmark = pytest.mark.slow

BASES = sorted(method_entries())
TRAINED = [name for name in BASES if method_entries()[name].cls.trains]
SPECS = BASES + [f"{base}+{plugin}" for base in TRAINED for plugin in sorted(plugin_entries())]
DATASETS = ("synth", "synth_reid")


@pytest.fixture(scope="module")
def data_root(synth_root, tmp_path_factory):
    """A writable copy of the tiny fixture sets (plugins cache pseudo-labels beside the shards)."""
    root = tmp_path_factory.mktemp("contract")
    for name in DATASETS:
        shutil.copytree(synth_root / name, root / name)
    return root


def _method(spec: str, dataset: str, root):
    request = RunRequest(
        spec,
        dataset,
        data_root=str(root),
        overrides=("backbone.pretrained=none", "data.train_identities=12", "data.train_images=64"),
    )
    cfg = request.compose()
    torch.manual_seed(0)
    return create_method(cfg), cfg


def _datamodule(cfg, tokenizer, root):
    dm = RetrievalDataModule(
        root,
        cfg.data.name,
        tokenizer,
        batch_size=12,
        eval_batch_size=16,
        workers=0,
        image_size=tuple(cfg.data.image_size),
    )
    dm.setup()
    return dm


def _features(method, dm) -> EvalInputs:
    """Every test image and caption encoded, gathered as the evaluation loop gathers them."""
    collectors = {"image": EmbeddingCollector(), "text": EmbeddingCollector()}
    images, texts = dm.test_dataloader()
    with torch.no_grad():
        for modality, loader in (("image", images), ("text", texts)):
            for batch in loader:
                feats = (
                    method.image_features(batch["image"])
                    if modality == "image"
                    else method.text_features(batch["text"])
                )
                index = batch["image_index"] if modality == "image" else batch["caption_index"]
                collectors[modality].update(
                    feats,
                    index=index,
                    valid=batch["valid"],
                    pid=batch["pid"],
                    image_index=batch["image_index"],
                )
    n_images, n_captions = dm.split_counts("test")
    return EvalInputs(
        images=collectors["image"].compute(expected=n_images),
        texts=collectors["text"].compute(expected=n_captions),
        protocol=method.cfg.data.protocol,
    )


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("spec", SPECS)
def test_a_training_step_reaches_every_trainable_group(spec, dataset, data_root, tokenizer) -> None:
    method, cfg = _method(spec, dataset, data_root)
    if not method.trains:
        assert not any(p.requires_grad for p in method.parameters() if p is method.backbone.logit_scale)
        return
    method.log_dict = method.log = lambda *args, **kwargs: None  # no Trainer attached
    method.setup("fit")
    batch = next(iter(_datamodule(cfg, tokenizer, data_root).train_dataloader()))
    # past every warm-up (a delayed loss term carries weight 0 in its first epochs)
    with patch.object(type(method), "current_epoch", new_callable=PropertyMock, return_value=100):
        loss = method.training_step(batch, 0)
    assert torch.isfinite(loss), spec
    loss.backward()
    for group in parameter_groups(method, cfg.optim):
        reached = [p for p in group["params"] if p.grad is not None and p.grad.abs().sum() > 0]
        assert reached, (
            f"{spec}: no gradient reaches the group lr x{group['lr_mult']}, decay {group['weight_decay']}"
        )
    for name, child in method.named_children():
        trainable = [p for p in child.parameters() if p.requires_grad]
        if trainable:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable), f"{spec}: {name}"


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("spec", SPECS)
def test_every_mode_reports_every_metric_and_a_checkpoint_restores_the_scores(
    spec, dataset, data_root, tokenizer, tmp_path
) -> None:
    method, cfg = _method(spec, dataset, data_root)
    method.eval()
    dm = _datamodule(cfg, tokenizer, data_root)
    inputs = _features(method, dm)
    report = evaluate_modes(method, inputs, method.inference_modes(), latency_queries=5)
    names = set(get_protocol(cfg.data.protocol).metric_names)
    assert report["modes"], spec
    for mode, entry in report["modes"].items():
        assert set(entry["metrics"]) == names, f"{spec} {mode}"
        assert set(entry["latency_ms"]) == {"t2i_ms", "i2t_ms"}
    path = tmp_path / "method.ckpt"
    saved = {"config": dict(method.hparams)["config"]}  # as Lightning writes it: plain data
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": saved, "global_step": 0}, path)
    checkpoint = read_checkpoint(path)
    restored = restore_method(checkpoint, checkpoint_config(checkpoint, path), path).eval()
    again = evaluate_modes(restored, _features(restored, dm), restored.inference_modes(), with_latency=False)
    assert {m: e["metrics"] for m, e in again["modes"].items()} == {
        m: e["metrics"] for m, e in report["modes"].items()
    }


def test_the_ci_sweep_covers_every_method_and_a_plugin_variant() -> None:
    sweep = read_layer(benchmarks_dir() / "sweeps" / "ci.yaml")
    methods = set(sweep["methods"])
    assert set(BASES) <= methods, f"missing from ci.yaml: {sorted(set(BASES) - methods)}"
    for plugin in plugin_entries():
        assert any(m.endswith(f"+{plugin}") for m in methods), f"no +{plugin} variant in ci.yaml"
