"""Networks: plain ``nn.Module``s, usable without Lightning. The config group ``model`` mirrors this package."""

from posenc_exp.models.attention import AttentionStack, Internals
from posenc_exp.models.feedforward import FeedForward

__all__ = ["AttentionStack", "FeedForward", "Internals"]
