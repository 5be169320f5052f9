"""Verinet: an open network for hosting and running AI models that nobody has to trust."""

__version__ = "0.1.0"
