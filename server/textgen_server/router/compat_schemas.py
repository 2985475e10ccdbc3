"""Bodies of TGI's compatibility routes (routes_compat.py): /vertex and /chat_tokenize, as TGI's router defines them
(router/src/vertex.rs, lib.rs `ChatTokenizeResponse`)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from textgen_server.router.openai_schemas import ChatCompletionRequest
from textgen_server.router.schemas import GenerateParameters, SimpleToken
from textgen_server.router.strict_body import StrictBody


class VertexGenerateInstance(StrictBody):
    """A text-generation instance: TGI's {inputs, parameters}."""

    inputs: str
    parameters: GenerateParameters | None = None


# Tried in this order, as TGI's untagged enum: an instance with `inputs` is a generation, else a chat request.
VertexInstance = Annotated[VertexGenerateInstance | ChatCompletionRequest, Field(union_mode="left_to_right")]


class VertexRequest(StrictBody):
    """Vertex AI's prediction request: one prediction per instance."""

    instances: list[VertexInstance]


class VertexResponse(BaseModel):
    """One generated text per instance, in order."""

    predictions: list[str]


class ChatTokenizeResponse(BaseModel):
    """The chat template's text for a chat request and its tokens (the prompt /v1/chat/completions would use)."""

    tokenize_response: list[SimpleToken]
    templated_text: str
