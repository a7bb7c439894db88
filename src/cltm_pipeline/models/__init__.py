"""Encoders and the architecture registry (see :mod:`cltm_pipeline.models.registry`)."""

from cltm_pipeline.models.registry import ARCHITECTURES, Architecture, get_architecture, model_provenance, register

from cltm_pipeline.models import hubert  # noqa: E402,F401  (registers "mhubert")
from cltm_pipeline.models import ecapa, siamese, speechllm  # noqa: E402,F401  (speaker verification)

__all__ = ["Architecture", "ARCHITECTURES", "register", "get_architecture", "model_provenance"]
