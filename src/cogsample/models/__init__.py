"""Models the pipeline can drive: the built-in exact model, diffusers-format CogVideoX folders,
and any callable with the network protocol (:class:`CallableNetwork`).

``cogsample.models.cogvideox`` imports diffusers and transformers; nothing here does until it
is asked for, so the built-in model runs with torch alone.
"""

from .base import CallableNetwork, ModelInfo, VideoModel

__all__ = ["CallableNetwork", "ModelInfo", "VideoModel"]
