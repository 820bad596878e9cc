"""What differs between pipeline families, and only that.

Every engine runs its diffusers pipeline the same way (see manager.py). An adapter says which
prompt arguments a pipeline takes and what else conditions it; the default covers FLUX.1, SD3 and
SDXL (the catalog says whether a negative prompt applies), and FLUX.2 adds reference images and a
text encoder that may run remotely.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import TextEncoderUnavailable

if TYPE_CHECKING:
    from ..catalog import EngineSpec
    from .base import GenerateRequest
    from .manager import EngineManager, LoadedEngine

log = logging.getLogger(__name__)

LOCAL = "local"
REMOTE = "remote"
AUTO = "auto"


class PipelineAdapter:
    """Text-to-image pipelines that take a prompt and, when the catalog allows, a negative prompt."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec

    def text_encoder_source(self, manager: EngineManager) -> str:
        """Where this engine's prompts are encoded: always in the pipeline unless overridden."""
        return LOCAL

    def load_overrides(self, source: str) -> dict[str, Any]:
        """Components from_pretrained must not load (None) for the chosen text encoder source."""
        return {}

    def prompt_kwargs(
        self, request: GenerateRequest, loaded: LoadedEngine, manager: EngineManager
    ) -> tuple[dict[str, Any], float]:
        """Prompt arguments for the pipeline call, and milliseconds spent encoding outside it."""
        kwargs: dict[str, Any] = {"prompt": request.prompt}
        if self.spec.limits.negative_prompt and request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
        return kwargs, 0.0

    def condition_kwargs(self, request: GenerateRequest) -> dict[str, Any]:
        return {}


class Flux2Adapter(PipelineAdapter):
    """FLUX.2: reference images condition the generation (`image=`), and the 24B Mistral text
    encoder may run on the remote endpoint, in which case the pipeline gets prompt_embeds."""

    def text_encoder_source(self, manager: EngineManager) -> str:
        modes = self.spec.text_encoder.modes if self.spec.text_encoder else (LOCAL,)
        mode = manager.text_encoder_mode if manager.text_encoder_mode in modes else LOCAL
        if mode == AUTO:
            # Remote needs a token; without one the local encoder is the only way.
            return REMOTE if manager.remote_token else LOCAL
        return mode

    def load_overrides(self, source: str) -> dict[str, Any]:
        return {"text_encoder": None} if source == REMOTE else {}

    def prompt_kwargs(
        self, request: GenerateRequest, loaded: LoadedEngine, manager: EngineManager
    ) -> tuple[dict[str, Any], float]:
        if loaded.text_encoder_source != REMOTE:
            return super().prompt_kwargs(request, loaded, manager)
        started = time.perf_counter()
        try:
            embeds = manager.fetch_remote_prompt_embeds([request.prompt], loaded)
        except TextEncoderUnavailable as exc:
            if manager.text_encoder_mode != AUTO:
                raise
            log.warning("remote text encoder unavailable (%s); falling back to the local one", exc)
            manager.attach_local_text_encoder(loaded)
            return super().prompt_kwargs(request, loaded, manager)
        pipe = loaded.pipeline
        embeds = embeds.to(device=pipe.transformer.device, dtype=pipe.transformer.dtype)
        return {"prompt_embeds": embeds}, (time.perf_counter() - started) * 1000

    def condition_kwargs(self, request: GenerateRequest) -> dict[str, Any]:
        return {"image": list(request.references)} if request.references else {}


ADAPTERS: dict[str, type[PipelineAdapter]] = {"Flux2Pipeline": Flux2Adapter}


def adapter_for(spec: EngineSpec) -> PipelineAdapter:
    return ADAPTERS.get(spec.pipeline_class, PipelineAdapter)(spec)


def embeds_shape_tail(loaded: LoadedEngine) -> tuple[int, int]:
    """(sequence length, width) the transformer expects of prompt embeddings, read from the
    snapshot's own config: 512 x 15360 for the real FLUX.2, far narrower for the demo."""
    pipe = loaded.pipeline
    return int(getattr(pipe, "tokenizer_max_length", 512)), int(pipe.transformer.config.joint_attention_dim)
