"""BCLS (Li et al., 2022, "Image-Text Retrieval with Binary and Continuous Label Supervision"):
a training framework applied over any base method: `--method clip+bcls`, `irra+bcls`,
`tgdt+bcls`, `aladin+bcls`.

No official code is public (the same authors' AAA-Zheng/ITM_CLS, a VSE model with a gap-masked
Kendall hinge, was read for orientation); this is a reconstruction from the paper's text. Each
choice is listed here.

**Continuous pseudo-labels.** r(query, candidate) = cosine similarity between captions
(`xmodal_bench.bcls`): for a caption query and a candidate image, the max over that image's
captions; for an image query and a candidate caption, the max over the query image's captions.
Both are one matrix r[image, caption] per batch. Pairs that the binary labels call matching (same
image, or same person on person data) get r = 1. Providers: `tfidf` (default, no model) and
`sbert` (`bcls.model`: a sentence-transformers name or path; `all-MiniLM-L6-v2` is the copy bundled
by the `sbert` extra). Caption vectors are computed once per dataset and cached beside its shards
(`bcls.store`), keyed by provider and manifest hash.

**Binary labels: Triplet-SN** (`losses.triplet_sn`): the triplet hinge over every violating
in-batch negative, weighted by a (detached) softmax of the negatives' scores at `temperature`;
tends to VSE++'s hardest-negative triplet as the temperature goes to 0.

**Continuous labels: Kendall rank loss** (`losses.kendall`): soft fraction of discordant candidate
pairs, (1 - tanh(ds / t) sign(dr)) / 2 over pairs whose labels differ by more than `gap`
(0.3, ITM_CLS's label gap; the README measures 0.05 against it); with `continuous: swhs` (the
default, the paper's full method) only sliding-window pairs over the candidates sorted by r,
hardest pair per window (`losses.swhs`), O(B^2). Both directions: rows of the batch score matrix
(image queries) and its columns (caption queries).

**Composition with the base** (`binary: auto`). The paper applies BCLS to triplet-trained models
and *replaces* their hardest-negative triplet by Triplet-SN (its argument: soft negative mining
converges where max-violation does not), *adding* the Kendall term. What a base does is read from
its `ScoreSupervision` (`methods.base`), never from its name:
- a base whose binary term is a max-violation hinge on the scores its primary mode ranks with
  (`hardest_negative`; TGDT's `global` hinge, VSE++'s triplet on the global cosine, exactly the
  paper's setting; ALADIN's matching hinge when `aladin.matching_weight` > 0, the tiny setting):
  replaced by Triplet-SN on the same scores. Other terms (TGDT's local hinge on token scores and
  its consistency term, ALADIN's alignment hinge and distillation) are kept.
- a base whose binary term is already a softmax over every in-batch negative (CLIP's InfoNCE,
  IRRA's SDM), whose gradient weighs each negative by its softmax probability, the soft negative
  mining Triplet-SN brings to the hinge: kept; BCLS adds the continuous term only.
- a base whose served scores have no binary term (ALADIN's released matching scores learn only by
  distillation from the alignment head): kept; BCLS adds the continuous term on those scores.
`binary: replace | add | keep` overrides this (`replace` needs a base with a binary term). The BCLS
terms always act on `TrainStep.scores`, the batch scores of the base's primary inference mode
(for TGDT, its stage-1 global cosine).

**Weights and reduction.** `binary_weight` x Triplet-SN + `continuous_weight` x Kendall/SW-HS,
both times the base's own weight on the binary term it supervises its served scores with
(`ScoreSupervision.weight`: 1 for every base but ALADIN with a matching hinge, 0.1 as released).
`reduction: auto` follows the base's own (`ScoreSupervision.reduction`): `sum` over anchors /
queries for TGDT and ALADIN with a matching hinge (their hinges are summed over the batch), `mean`
for CLIP, IRRA and the released ALADIN.

**Evaluation** is the base's, unchanged; every run (base or +BCLS) also reports Kendall's tau
between its test scores and tf-idf pseudo-labels (`bcls.tau`, in `results.json` under
`modes.<primary>.kendall_tau`).
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig
from torch import Tensor

from xmodal_bench.bcls.store import CaptionStore, load_caption_store
from xmodal_bench.config import require, require_choice
from xmodal_bench.errors import UserError
from xmodal_bench.losses.kendall import kendall_rank_loss
from xmodal_bench.losses.swhs import swhs_kendall_loss
from xmodal_bench.losses.triplet_sn import soft_negative_triplet
from xmodal_bench.methods.base import RetrievalMethod, TrainingPlugin, TrainStep
from xmodal_bench.registry import register_plugin

BINARY_MODES = ("auto", "replace", "add", "keep")
CONTINUOUS_MODES = ("swhs", "kendall", "none")


@dataclass
class BCLSConfig:
    provider: str = "tfidf"  # tfidf | sbert: caption similarity behind the pseudo-labels
    model: str = "all-MiniLM-L6-v2"  # sbert: sentence-transformers name or local path
    encode_batch_size: int = 256  # sbert: captions per encoder batch
    cache_dir: str | None = None  # None: {data.root}/{data.name}/bcls
    binary: str = "auto"  # auto | replace | add | keep (see the module docstring)
    margin: float = 0.2  # Triplet-SN margin
    temperature: float = 0.05  # Triplet-SN softmax temperature (-> 0: hardest negative)
    binary_weight: float = 1.0
    continuous: str = "swhs"  # swhs | kendall | none
    continuous_weight: float = 1.0
    kendall_temperature: float = 0.1  # tanh(score difference / this)
    gap: float = 0.3  # pairs whose pseudo-labels differ by no more than this are not ranked (ITM_CLS)
    window: int = 16  # SW-HS: partners of each candidate in the r-sorted list
    reduction: str = "auto"  # auto | mean | sum over anchors / queries

    def __post_init__(self) -> None:
        require_choice("bcls.provider", self.provider, ("tfidf", "sbert"))
        require_choice("bcls.binary", self.binary, BINARY_MODES)
        require_choice("bcls.continuous", self.continuous, CONTINUOUS_MODES)
        require_choice("bcls.reduction", self.reduction, ("auto", "mean", "sum"))
        require(
            self.temperature > 0 and self.kendall_temperature > 0,
            "bcls.temperature and bcls.kendall_temperature must be positive",
        )
        require(self.window >= 1, "bcls.window must be >= 1")
        require(self.gap >= 0 and self.margin >= 0, "bcls.gap and bcls.margin must be >= 0")
        require(self.binary_weight >= 0 and self.continuous_weight >= 0, "bcls weights must be >= 0")
        require(self.encode_batch_size >= 1, "bcls.encode_batch_size must be >= 1")


class BCLS(TrainingPlugin):
    """BCLS: binary (Triplet-SN) + continuous (Kendall / SW-HS on caption-similarity pseudo-labels) supervision."""

    def __init__(self, base: RetrievalMethod, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, supervision = cfg.bcls, base.supervision
        binary = c.binary
        if binary == "auto":
            binary = "replace" if supervision.hardest_negative and supervision.binary_term else "keep"
        if binary == "replace" and supervision.binary_term is None:
            raise UserError(
                f"bcls.binary=replace: {base.method_name} has no binary ranking term on its retrieval "
                "scores; use add or keep"
            )
        self.binary = binary
        self.replaced_term = supervision.binary_term if binary == "replace" else None
        self.reduction = supervision.reduction if c.reduction == "auto" else c.reduction
        self.weight = supervision.weight  # BCLS supervises the served scores at the base's weight
        self._store: CaptionStore | None = None

    def store(self) -> CaptionStore:
        """The training split's pseudo-label source (loaded, or computed and cached, on first use)."""
        if self._store is None:
            c, d = self.cfg.bcls, self.cfg.data
            self._store = load_caption_store(
                d.root,
                d.name,
                provider=c.provider,
                model=c.model,
                fit_split=d.train_split,
                batch_size=c.encode_batch_size,
                cache_dir=c.cache_dir,
            )
        return self._store

    def setup_for(self, method: RetrievalMethod, stage: str) -> None:
        if stage == "fit":
            self.store()  # compute / load the cache before the first step

    def forward(self, method: RetrievalMethod, ids: dict[str, Tensor], step: TrainStep) -> TrainStep:
        losses, logs = dict(step.losses), {}
        if self.replaced_term is not None:
            if self.replaced_term not in losses:
                raise RuntimeError(f"bcls: the base logged no {self.replaced_term!r} term to replace")
            logs[f"{self.replaced_term}_replaced"] = losses.pop(self.replaced_term).detach()
        losses.update(self.terms(step.scores, step.positives, ids))
        return step.with_losses(losses, **logs)

    def terms(self, scores: Tensor, positives: Tensor, ids: dict[str, Tensor]) -> dict[str, Tensor]:
        """{"triplet_sn", "kendall"} as configured, on the (global) batch scores [images, captions]."""
        c = self.cfg.bcls
        terms: dict[str, Tensor] = {}
        if self.binary in ("replace", "add") and c.binary_weight > 0:
            terms["triplet_sn"] = (
                self.weight
                * c.binary_weight
                * soft_negative_triplet(scores, positives, c.margin, c.temperature, self.reduction)
            )
        if c.continuous != "none" and c.continuous_weight > 0:
            labels = self.labels(ids, positives).to(scores.device, scores.dtype)
            terms["kendall"] = self.weight * c.continuous_weight * self.continuous(scores, labels)
        return terms

    def labels(self, ids: dict[str, Tensor], positives: Tensor) -> Tensor:
        """Pseudo-labels r [images, captions] of the batch; matching pairs get 1."""
        split = self.cfg.data.train_split
        r = self.store().relevance(split, ids["image_index"].cpu(), ids["caption_index"].cpu())
        return r.masked_fill(positives.cpu(), 1.0)

    def continuous(self, scores: Tensor, labels: Tensor) -> Tensor:
        """The Kendall (or SW-HS) term over both directions: image queries (rows) and caption queries."""
        c = self.cfg.bcls
        if c.continuous == "kendall":

            def loss(s: Tensor, r: Tensor) -> Tensor:
                return kendall_rank_loss(s, r, c.kendall_temperature, c.gap, reduction=self.reduction)
        else:

            def loss(s: Tensor, r: Tensor) -> Tensor:
                return swhs_kendall_loss(s, r, c.window, c.kendall_temperature, c.gap, self.reduction)

        i2t, t2i = loss(scores, labels), loss(scores.T, labels.T)
        return (i2t + t2i) / 2 if self.reduction == "mean" else i2t + t2i


register_plugin("bcls", BCLSConfig)(BCLS)
