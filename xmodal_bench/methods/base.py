"""`RetrievalMethod`: what every method shares, so a method file holds only its heads and losses.

Shared here: the backbone, the optimizer and schedule (from config), the evaluation loop (encode
every image and every caption once, gather across ranks, score every inference mode with the
metrics package) and the efficiency figures the leaderboard reports.

A method subclasses this, builds its heads in `__init__` and implements `train_step(batch, ids)`,
which returns one `TrainStep`: its loss terms, the in-batch score matrix its primary inference
mode ranks with, and anything else worth logging. `data.batch_size` is the global batch: each of
N devices gets a slice, and a method `gather`s the features of its in-batch losses (with
gradients), so a run on N devices optimises the same objective as on one. Training plugins (BCLS) are modules attached by
the factory (`registry.create_method`); each transforms the `TrainStep` before it is logged and
summed. A plugin learns what it needs about a method from the method's `supervision`
(`ScoreSupervision`), never from its name. When a method's retrieval features are not the
normalised global embeddings it overrides `image_features` / `text_features`; extra inference modes
(two-stage, fine-grained) are added by overriding `inference_modes`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import lightning as L
import torch
import torch.distributed.nn as dist_nn
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from xmodal_bench.backbones import create_backbone
from xmodal_bench.errors import UserError
from xmodal_bench.losses import match_mask
from xmodal_bench.methods.optim import build_optimizer, build_scheduler
from xmodal_bench.metrics import EmbeddingCollector, get_protocol
from xmodal_bench.retrieval.evaluation import EvalInputs, InferenceMode, evaluate_modes, global_mode
from xmodal_bench.timing import synchronized_time


@dataclass(frozen=True)
class TrainStep:
    """One training step of a method, as a value plugins can transform.

    `losses` are the terms summed into the training loss (each logged as `train/<name>`);
    `scores` [images, captions] is the batch's score matrix under the method's primary inference
    mode (with its graph); `positives` [images, captions] marks the pairs that are not negatives
    (same image, or same person on person data); `logs` are extra figures logged as `train/<name>`.
    """

    losses: dict[str, Tensor]
    scores: Tensor
    positives: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)

    def with_losses(self, losses: dict[str, Tensor], **logs: Tensor | float) -> TrainStep:
        return replace(self, losses=losses, logs={**self.logs, **logs})


@dataclass(frozen=True)
class ScoreSupervision:
    """How a method trains the scores its primary mode ranks with: what a training plugin may need.

    `binary_term`: the loss term that trains those scores with binary (match / no match) labels,
    None when they learn some other way (ALADIN's matching scores learn by distillation);
    `hardest_negative`: that term is a max-violation hinge (VSE++'s), not a softmax over every
    negative; `reduction`: whether the method sums (`sum`) or averages (`mean`) its terms over anchors;
    `weight`: the method's weight on its binary term (ALADIN's matching hinge: 0.1), which a plugin
    that replaces or joins that supervision keeps.
    """

    binary_term: str | None
    hardest_negative: bool = False
    reduction: str = "mean"
    weight: float = 1.0


class TrainingPlugin(nn.Module):
    """A training framework applied over any method (BCLS is one): it transforms the `TrainStep`."""

    def setup_for(self, method: RetrievalMethod, stage: str) -> None:
        """Prepare before training starts (e.g. load a cache); the method calls it from `setup`."""

    def forward(self, method: RetrievalMethod, ids: dict[str, Tensor], step: TrainStep) -> TrainStep:
        """`ids`: the global batch's pid / image_index / caption_index (see `RetrievalMethod.train_step`)."""
        raise NotImplementedError


class RetrievalMethod(L.LightningModule):
    """Base LightningModule of every retrieval method (not registered itself)."""

    method_name = "base"
    supervision = ScoreSupervision(binary_term=None)
    # True: the backbone's logit_scale is trained (else frozen: DDP wants no unused parameter)
    learns_temperature = False
    trains = True  # False: evaluated as built (zero-shot), `bench` skips fitting

    def __init__(self, cfg: DictConfig | dict) -> None:
        super().__init__()
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        self.cfg = cfg
        self.save_hyperparameters({"config": OmegaConf.to_container(cfg, resolve=True)})
        self.backbone = create_backbone(
            cfg.backbone.model,
            pretrained=cfg.backbone.pretrained,
            image_size=list(cfg.data.image_size),
            context_length=cfg.backbone.context_length,
        )
        self.backbone.logit_scale.requires_grad_(self.learns_temperature)
        self.plugins = nn.ModuleList()
        self.eval_results: dict[str, dict[str, Any]] = {}
        self._encode_seconds = {"image": 0.0, "text": 0.0}
        self._encode_count = {"image": 0, "text": 0}
        self._collectors: dict[str, EmbeddingCollector] = {}

    def attach(self, plugin: TrainingPlugin) -> RetrievalMethod:
        """Add a training plugin; plugins run in the order attached."""
        self.plugins.append(plugin)
        return self

    # ------------------------------------------------------------------ features (override as needed)

    def image_features(self, images: Tensor) -> dict[str, Tensor]:
        """Features stored for every gallery image at evaluation; `global` is L2-normalised."""
        pooled, _ = self.backbone.encode_image(images)
        return {"global": F.normalize(pooled.float(), dim=-1)}

    def text_features(self, ids: Tensor) -> dict[str, Tensor]:
        """Features stored for every caption at evaluation; `global` is L2-normalised."""
        pooled, _, _ = self.backbone.encode_text(ids)
        return {"global": F.normalize(pooled.float(), dim=-1)}

    def inference_modes(self) -> list[InferenceMode]:
        """How this method ranks a gallery; the first mode is the leaderboard's main row."""
        return [global_mode()]

    # ------------------------------------------------------------------ training

    def train_step(self, batch: dict[str, Tensor], ids: dict[str, Tensor]) -> TrainStep:
        """The method's losses on one batch (see `TrainStep`): what a method file implements.

        `batch` is this rank's slice of the global batch; `ids` holds the global batch's `pid`,
        `image_index` and `caption_index` (every rank's slice, in rank order). In-batch losses
        `gather` their features first, so they see the global batch on any number of devices.
        """
        raise NotImplementedError

    def positives(self, ids: dict[str, Tensor]) -> Tensor:
        """[B, B] pairs of the batch that are not negatives: same image, or same person on person data
        (the data layer's `pid` is the image index on caption sets)."""
        return match_mask(ids["pid"])

    def gathering(self) -> bool:
        """True when in-batch losses see every rank's slice (DDP with `trainer.gather_features`)."""
        return (
            self.cfg.trainer.get("gather_features", True)
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        )

    def gather(self, *tensors: Tensor) -> list[Tensor]:
        """Each tensor [b, ...] of this rank's slice as the global batch [B, ...] (rank order), with
        gradients flowing back to the rank each row came from: the losses of N devices are then the
        loss of one device on the global batch (DDP averages the gradients that every rank computes
        for the same global loss). Identity on one device or with `trainer.gather_features=false`."""
        if not self.gathering():
            return list(tensors)
        return [_all_gather(tensor) for tensor in tensors]

    def per_device_mean_divisor(self, local_count: int) -> float | Tensor:
        """What a loss averaged over a variable number of local items (IRRA's masked words) divides
        its local sum by, so that the devices' mean (what DDP averages) is the global mean:
        global count / number of devices. On one device: the local count."""
        if not self.gathering():
            return float(local_count)
        count = torch.tensor(float(local_count), device=self.device)
        torch.distributed.all_reduce(count)
        return count / torch.distributed.get_world_size()

    def gather_ids(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The global batch's `pid`, `image_index` and `caption_index` (no gradients)."""
        keys = [key for key in ("pid", "image_index", "caption_index") if key in batch]
        if not self.gathering():
            return {key: batch[key] for key in keys}
        return {key: _all_gather(batch[key]) for key in keys}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        ids = self.gather_ids(batch)
        step = self.train_step(batch, ids)
        for plugin in self.plugins:
            step = plugin(self, ids, step)
        return self.log_step(step, batch_size=len(batch["pid"]))

    def setup(self, stage: str) -> None:
        for plugin in self.plugins:
            plugin.setup_for(self, stage)

    def in_first_epochs(self, epochs: float) -> bool:
        """True during the first `epochs` (may be fractional) epochs of training; never without a trainer."""
        if epochs <= 0 or self._trainer is None:
            return False
        return self.trainer.global_step < epochs * max(1, int(self.trainer.num_training_batches))

    def log_step(self, step: TrainStep, batch_size: int) -> Tensor:
        """Log every loss term as `train/<name>`, the logs, and their sum as `train/loss`; return the sum."""
        total = torch.stack(list(step.losses.values())).sum()
        logged = {f"train/{name}": value.detach() for name, value in step.losses.items()}
        logged.update(
            {f"train/{name}": v.detach() if isinstance(v, Tensor) else v for name, v in step.logs.items()}
        )
        logged["train/loss"] = total.detach()
        # under DDP the logged value is the mean over ranks: the global terms are the same on every
        # rank, and the mean of per-rank means of a local term (ID, MLM) is its global mean
        self.log_dict(logged, batch_size=batch_size, prog_bar=False, sync_dist=self.gathering())
        self.log("loss", total.detach(), batch_size=batch_size, prog_bar=True, logger=False)
        return total

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self, self.cfg.optim)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total_steps / max(1, self.trainer.max_epochs)
        scheduler = build_scheduler(optimizer, self.cfg.optim, total_steps, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation loop

    def _start_eval(self) -> None:
        self._collectors = {
            "image": EmbeddingCollector().to(self.device),
            "text": EmbeddingCollector().to(self.device),
        }
        self._encode_seconds = {"image": 0.0, "text": 0.0}
        self._encode_count = {"image": 0, "text": 0}

    def _eval_step(self, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        modality = "image" if dataloader_idx == 0 else "text"
        start = synchronized_time(self.device)
        with torch.no_grad():
            feats = (
                self.image_features(batch["image"])
                if modality == "image"
                else self.text_features(batch["text"])
            )
        self._encode_seconds[modality] += synchronized_time(self.device) - start
        self._encode_count[modality] += int(batch["valid"].sum())
        index = batch["image_index"] if modality == "image" else batch["caption_index"]
        self._collectors[modality].update(
            feats,
            index=index,
            valid=batch["valid"],
            pid=batch["pid"],
            image_index=batch["image_index"],
        )

    def _finish_eval(self, split: str, full: bool) -> dict[str, Any]:
        datamodule = self.trainer.datamodule
        n_images, n_captions = datamodule.split_counts(split)
        images = self._collectors["image"].compute(expected=n_images)
        texts = self._collectors["text"].compute(expected=n_captions)
        protocol = get_protocol(self.cfg.data.protocol)
        inputs = EvalInputs(
            images=images,
            texts=texts,
            protocol=protocol.name if split == self.cfg.data.test_split else protocol.validation,
            chunk_size=self.cfg.eval.chunk_size,
        )
        modes = self.inference_modes() if full else self.inference_modes()[:1]
        report = evaluate_modes(
            self,
            inputs,
            modes,
            with_latency=full,
            latency_queries=self.cfg.eval.latency_queries,
            top_k=self.cfg.eval.latency_top_k,
        )
        if full:
            primary = report["primary_mode"]
            tau = self._pseudo_label_tau(split, inputs)
            if tau is not None:  # saved with the primary mode's ranks: the bootstrap covers tau too
                report["ranks"][primary] = {**report["ranks"][primary], **tau[1]}
            report["modes"][primary]["kendall_tau"] = tau[0] if tau is not None else None
        report["encode"] = {
            "images_per_s": self._encode_count["image"] / max(self._encode_seconds["image"], 1e-9),
            "texts_per_s": self._encode_count["text"] / max(self._encode_seconds["text"], 1e-9),
        }
        self._collectors = {}
        return report

    def _pseudo_label_tau(
        self, split: str, inputs: EvalInputs
    ) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
        """Kendall's tau of the global scores against tf-idf caption-similarity pseudo-labels
        (`bcls.tau`): the summary and each query's tau, or None when the labels are unavailable."""
        from xmodal_bench.bcls import pseudo_label_tau, split_store

        try:
            store = split_store(self.cfg.data.root, self.cfg.data.name, split)
        except (OSError, UserError, KeyError, ValueError) as exc:  # a metric extra: never fail a run over it
            warnings.warn(f"Kendall tau not computed: {exc}", stacklevel=2)
            return None
        return pseudo_label_tau(inputs.images["global"], inputs.texts["global"], store, split, seed=0)

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._collectors = {}
            return
        report = self._finish_eval(self.cfg.data.val_split, full=False)
        main = report["modes"][report["primary_mode"]]["metrics"]
        self.log_dict({f"val/{k}": float(v) for k, v in main.items()}, sync_dist=False, rank_zero_only=False)
        self.eval_results["val"] = report

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        report = self._finish_eval(self.cfg.data.test_split, full=True)
        for mode, result in report["modes"].items():
            prefix = "test" if mode == report["primary_mode"] else f"test_{mode}"
            self.log_dict(
                {f"{prefix}/{k}": float(v) for k, v in result["metrics"].items()}, rank_zero_only=False
            )
        self.eval_results["test"] = report


def _all_gather(tensor: Tensor) -> Tensor:
    """Every rank's `tensor` concatenated in rank order; floating tensors keep their gradients."""
    if tensor.is_floating_point():
        return torch.cat(dist_nn.all_gather(tensor.contiguous()))
    plain = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor.contiguous()  # gloo: no bool
    parts = [torch.empty_like(plain) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, plain)
    return torch.cat(parts).to(tensor.dtype)
