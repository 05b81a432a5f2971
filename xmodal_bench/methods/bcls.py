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
pairs, (1 - tanh(ds / t) sign(dr)) / 2 over pairs whose labels differ by more than `gap`; with
`continuous: swhs` (the default, the paper's full method) only sliding-window pairs over the
candidates sorted by r, hardest pair per window (`losses.swhs`), O(B^2). Both directions: rows of
the batch score matrix (image queries) and its columns (caption queries).

**Composition with the base** (`binary: auto`). The paper applies BCLS to triplet-trained models
and *replaces* their hardest-negative triplet by Triplet-SN (its argument: soft negative mining
converges where max-violation does not), *adding* the Kendall term. Per base:
- `tgdt`: its `global` hinge is VSE++'s max-violation triplet on the global cosine, exactly the
  paper's setting: replaced by Triplet-SN on the same scores. Its local hinge (on token scores,
  whose dense gradient would cost O(B^2 L N)) and its consistency term are kept.
- `clip` (`infonce`) and `irra` (`sdm`): their binary term is already a softmax over all in-batch
  negatives (InfoNCE / distribution matching), whose gradient weighs every negative by its softmax
  probability: the soft negative mining Triplet-SN brings to the hinge. It is kept; BCLS adds the
  continuous term only.
- `aladin`: the retrieval (matching) head learns only by distillation from the alignment head,
  whose binary term is a hinge on token scores, not on the matching scores; that term and the
  distillation are kept and BCLS adds the continuous term on the matching scores.
`binary: replace | add | keep` overrides this (`replace` needs a base whose binary term lives on
the recorded scores: clip, irra, tgdt). The BCLS terms always act on the score the base's primary
inference ranks with (for TGDT, its stage-1 global cosine), recorded by the base's
`training_step` through `RetrievalMethod.record_train_scores`.

**Weights and reduction.** `binary_weight` x Triplet-SN + `continuous_weight` x Kendall/SW-HS.
`reduction: auto` follows the scale of the loss that already trains the same scores: `sum` over
anchors / queries for TGDT (its global hinge is summed over the batch), `mean` for CLIP (InfoNCE),
IRRA (SDM) and ALADIN (its matching scores learn from a batch-mean distillation).

**Evaluation** is the base's, unchanged; every run (base or +BCLS) also reports Kendall's tau
between its test scores and tf-idf pseudo-labels (`bcls.tau`, in `results.json` under
`modes.<primary>.kendall_tau`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch import Tensor

from xmodal_bench.bcls.store import CaptionStore, load_caption_store
from xmodal_bench.errors import UserError
from xmodal_bench.losses import match_mask
from xmodal_bench.losses.kendall import kendall_rank_loss
from xmodal_bench.losses.swhs import swhs_kendall_loss
from xmodal_bench.losses.triplet_sn import soft_negative_triplet
from xmodal_bench.methods.base import RetrievalMethod
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
    gap: float = 0.05  # pairs whose pseudo-labels differ by no more than this are not ranked
    window: int = 16  # SW-HS: partners of each candidate in the r-sorted list
    reduction: str = "auto"  # auto | mean | sum over anchors / queries


# base -> (name of its binary ranking term on the recorded scores or None, what `auto` does, reduction)
BASE_RULES: dict[str, tuple[str | None, str, str]] = {
    "clip": ("infonce", "keep", "mean"),
    "irra": ("sdm", "keep", "mean"),
    "tgdt": ("global", "replace", "sum"),
    "aladin": (None, "keep", "mean"),
}


def check_config(c: Any) -> None:
    """Refuse out-of-range BCLS settings with one clear line."""
    if c.binary not in BINARY_MODES:
        raise UserError(f"bcls.binary={c.binary!r}; choose one of {', '.join(BINARY_MODES)}")
    if c.continuous not in CONTINUOUS_MODES:
        raise UserError(f"bcls.continuous={c.continuous!r}; choose one of {', '.join(CONTINUOUS_MODES)}")
    if c.reduction not in ("auto", "mean", "sum"):
        raise UserError(f"bcls.reduction={c.reduction!r}; choose auto, mean or sum")
    if c.temperature <= 0 or c.kendall_temperature <= 0:
        raise UserError("bcls.temperature and bcls.kendall_temperature must be positive")
    if c.window < 1:
        raise UserError("bcls.window must be >= 1")
    if c.gap < 0 or c.margin < 0:
        raise UserError("bcls.gap and bcls.margin must be >= 0")


class BCLSMixin:
    """Adds BCLS's terms to a base method's training step (mixed in before the base class)."""

    bcls_binary: str  # replace | add | keep (resolved)
    bcls_binary_term: str | None
    bcls_reduction: str
    _bcls_batch: dict[str, Tensor] | None
    _bcls_store: CaptionStore | None

    def setup_bcls(self, cfg: DictConfig) -> None:
        c = cfg.bcls
        check_config(c)
        base = str(cfg.method).split("+")[0]
        term, auto_binary, auto_reduction = BASE_RULES.get(base, (None, "keep", "mean"))
        binary = auto_binary if c.binary == "auto" else c.binary
        if binary == "replace" and term is None:
            raise UserError(
                f"bcls.binary=replace: {base} has no binary ranking term on its retrieval scores; "
                "use add or keep"
            )
        self.bcls_binary, self.bcls_binary_term = binary, term
        self.bcls_reduction = auto_reduction if c.reduction == "auto" else c.reduction
        self.wants_train_scores = True
        self._bcls_batch = None
        self._bcls_store = None

    def bcls_store(self) -> CaptionStore:
        """The training split's pseudo-label source (loaded, or computed and cached, on first use)."""
        if self._bcls_store is None:
            c, d = self.cfg.bcls, self.cfg.data
            self._bcls_store = load_caption_store(
                d.root,
                d.name,
                provider=c.provider,
                model=c.model,
                fit_split=d.train_split,
                batch_size=c.encode_batch_size,
                cache_dir=c.cache_dir,
            )
        return self._bcls_store

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.bcls_store()  # compute / load the cache before the first step

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self._bcls_batch, self._train_scores = batch, None
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self._bcls_batch, self._train_scores = None, None

    def log_losses(self, losses: dict[str, Tensor], batch_size: int, **extra: Tensor | float) -> Tensor:
        batch = self._bcls_batch
        if batch is None:  # not inside a training step
            return super().log_losses(losses, batch_size, **extra)
        scores = self._train_scores
        if scores is None:
            raise RuntimeError(
                f"{type(self).__name__}: the base's training_step did not call record_train_scores()"
            )
        terms = self.bcls_terms(scores, batch)
        losses = dict(losses)
        if self.bcls_binary == "replace":
            if self.bcls_binary_term not in losses:
                raise RuntimeError(f"bcls: the base logged no {self.bcls_binary_term!r} term to replace")
            extra[f"{self.bcls_binary_term}_replaced"] = losses.pop(self.bcls_binary_term).detach()
        losses.update(terms)
        return super().log_losses(losses, batch_size, **extra)

    def bcls_terms(self, scores: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """{"triplet_sn", "kendall"} as configured, on the batch scores [images, captions]."""
        c = self.cfg.bcls
        positives = match_mask(batch["pid"])  # caption sets: pid = image index
        terms: dict[str, Tensor] = {}
        if self.bcls_binary in ("replace", "add") and c.binary_weight > 0:
            terms["triplet_sn"] = c.binary_weight * soft_negative_triplet(
                scores, positives, c.margin, c.temperature, self.bcls_reduction
            )
        if c.continuous != "none" and c.continuous_weight > 0:
            labels = self.bcls_labels(batch, positives).to(scores.device, scores.dtype)
            terms["kendall"] = c.continuous_weight * self._continuous(scores, labels)
        return terms

    def bcls_labels(self, batch: dict[str, Tensor], positives: Tensor) -> Tensor:
        """Pseudo-labels r [images, captions] of the batch; matching pairs get 1."""
        split = self.cfg.data.train_split
        r = self.bcls_store().relevance(split, batch["image_index"], batch["caption_index"])
        return r.masked_fill(positives.cpu(), 1.0)

    def _continuous(self, scores: Tensor, labels: Tensor) -> Tensor:
        c = self.cfg.bcls
        if c.continuous == "kendall":

            def loss(s: Tensor, r: Tensor) -> Tensor:
                return kendall_rank_loss(s, r, c.kendall_temperature, c.gap, reduction=self.bcls_reduction)
        else:

            def loss(s: Tensor, r: Tensor) -> Tensor:
                return swhs_kendall_loss(s, r, c.window, c.kendall_temperature, c.gap, self.bcls_reduction)

        i2t, t2i = loss(scores, labels), loss(scores.T, labels.T)
        return (i2t + t2i) / 2 if self.bcls_reduction == "mean" else i2t + t2i


_CLASSES: dict[type, type] = {}


def bcls_class(base: type) -> type:
    """`{Base}BCLS`: the base method's class with `BCLSMixin` in front (one per base, importable by name)."""
    if base not in _CLASSES:
        name = f"{base.__name__}BCLS"
        cls = type(name, (BCLSMixin, base), {"__module__": __name__, "__qualname__": name})
        cls.__doc__ = f"{base.__name__} trained with BCLS (binary + continuous label supervision)."
        globals()[name] = cls  # so pickle finds it
        _CLASSES[base] = cls
    return _CLASSES[base]


@register_plugin("bcls", BCLSConfig)
def apply_bcls(method: RetrievalMethod, cfg: DictConfig) -> RetrievalMethod:
    """BCLS: binary (Triplet-SN) + continuous (Kendall / SW-HS on caption-similarity pseudo-labels) supervision."""
    method.__class__ = bcls_class(type(method))
    method.setup_bcls(cfg)
    return method
