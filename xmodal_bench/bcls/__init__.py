"""BCLS's continuous pseudo-labels: caption vectors (tfidf / sbert), their cache, and the Kendall tau metric.

The plugin itself (losses composed over a base method) is `xmodal_bench.methods.bcls`; the
losses are `xmodal_bench.losses.{triplet_sn,kendall,swhs}`.
"""

from xmodal_bench.bcls.store import CaptionStore, load_caption_store, split_store
from xmodal_bench.bcls.tau import kendall_tau_b, pseudo_label_tau
from xmodal_bench.bcls.text_sim import CaptionVectors, sbert_vectors, tfidf_vectors

__all__ = [
    "CaptionStore",
    "CaptionVectors",
    "kendall_tau_b",
    "load_caption_store",
    "pseudo_label_tau",
    "sbert_vectors",
    "split_store",
    "tfidf_vectors",
]
