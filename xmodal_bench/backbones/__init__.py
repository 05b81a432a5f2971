"""Backbone layer: one open_clip dual encoder returning global and token features."""

from xmodal_bench.backbones.dual_encoder import PAD_TOKEN_ID, DualEncoder, count_parameters, create_backbone

__all__ = ["PAD_TOKEN_ID", "DualEncoder", "count_parameters", "create_backbone"]
