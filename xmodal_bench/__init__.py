"""xmodal-bench: a PyTorch Lightning benchmark suite for image-text retrieval."""

__version__ = "0.1.0"
