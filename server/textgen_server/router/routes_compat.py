"""TGI's compatibility routes: POST / and /invocations (SageMaker), POST /vertex (Vertex AI), POST /chat_tokenize.

They answer as the routes they stand for by calling those routes' own endpoints, so validation, admission,
grammar and tools behave exactly alike (as TGI's router calls its `generate` from `compat_generate`):
- POST /: /generate_stream when `stream` is true; else /generate, its body wrapped in a one-element list (the
  Inference API's shape, which TGI's `text-generation` client reads). `return_full_text` defaults to true here,
  as TGI does for a text-generation model (`compat_return_full_text`). Errors keep their {"error", "error_type"}
  object (TGI does not wrap them).
- POST /invocations: TGI's body (`inputs`), an OpenAI chat body (`messages`) or an OpenAI completion body
  (`prompt`), recognised in that order as TGI's untagged `SagemakerRequest`, answered as POST /,
  /v1/chat/completions or /v1/completions.
- POST /vertex: {"instances": [...]} -> {"predictions": [generated text, ...]}; each instance is TGI's
  {inputs, parameters} or an OpenAI chat request (its message content is the prediction). Instances run
  concurrently. As TGI, a generation instance samples unless its parameters set `do_sample`; unlike TGI (which
  keeps only max_new_tokens and seed), every parameter is honoured. An instance that fails answers for the whole
  request with its status and error, the message naming the instance.
- POST /chat_tokenize: an OpenAI chat request -> {"tokenize_response": [{id, text, start, stop}],
  "templated_text"}: the chat template's text (with the request's tools) and its tokens, as /v1/chat/completions
  would see them.
"""
from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException

from textgen_server.router.app import ERROR_RESPONSES, RouterState, error_response
from textgen_server.router.chat import render_chat_prompt
from textgen_server.router.compat_schemas import (
    ChatTokenizeResponse,
    VertexGenerateInstance,
    VertexRequest,
    VertexResponse,
)
from textgen_server.router.openai_schemas import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest
from textgen_server.router.openai_tools import chat_tool_plan
from textgen_server.router.schemas import GenerateParameters, GenerateRequest, GenerateResponse, SimpleToken
from textgen_server.router.validation import ValidationError

_Responses = dict[int | str, dict[str, Any]]
_ERRORS: _Responses = {code: ERROR_RESPONSES[code] for code in (400, 413, 422, 424, 429, 503)}
_SSE: _Responses = {200: {"content": {"text/event-stream": {}}, "description": "with `stream: true`: server-sent "
                          "events as the route the body stands for"}}
_INVOCATIONS_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [
    {"$ref": f"#/components/schemas/{model.__name__}"}
    for model in (GenerateRequest, ChatCompletionRequest, CompletionRequest)]}}}}}
_Model = TypeVar("_Model", bound=BaseModel)
Endpoint = Callable[..., Awaitable[Response]]


def register_compat_routes(app: FastAPI, state: RouterState) -> None:
    """Adds the compatibility routes; call it after the TGI and OpenAI routes they delegate to."""

    def endpoint(path: str) -> Endpoint:
        return _find_endpoint(app, path)

    @app.post("/", response_model=list[GenerateResponse], responses={**_SSE, **_ERRORS},
              summary="/generate (answered as a one-element list) or /generate_stream, by `stream`")
    async def compat_generate(body: GenerateRequest, request: Request) -> Response:
        return await _compat_generate(endpoint, body, request)

    @app.post("/invocations", response_model=list[GenerateResponse] | ChatCompletion | Completion,
              responses={**_SSE, **_ERRORS}, openapi_extra=_INVOCATIONS_BODY,
              summary="SageMaker: TGI's body as POST /, or an OpenAI chat or completion body")
    async def invocations(request: Request) -> Response:
        data = await _json_body(request)
        if isinstance(data, dict) and "inputs" in data:
            return await _compat_generate(endpoint, _parse(GenerateRequest, data), request)
        if isinstance(data, dict) and "messages" in data:
            return await _call(endpoint("/v1/chat/completions"), _parse(ChatCompletionRequest, data), request)
        if isinstance(data, dict) and "prompt" in data:
            return await _call(endpoint("/v1/completions"), _parse(CompletionRequest, data), request)
        return error_response(422, "Input validation error: /invocations takes a JSON object with `inputs` (TGI's "
                              "generate body), `messages` (an OpenAI chat request) or `prompt` (an OpenAI "
                              "completion request); the body has none of them", "validation")

    @app.post("/vertex", response_model=VertexResponse, responses=_ERRORS,
              summary="Vertex AI: one generated text per instance")
    async def vertex(body: VertexRequest, request: Request) -> Response:
        if not body.instances:
            return error_response(422, "Input validation error: `instances` is empty; send at least one instance",
                                  "validation")
        answers = await asyncio.gather(*(_predict(endpoint, instance, request) for instance in body.instances))
        for index, (response, _) in enumerate(answers):
            if response.status_code != 200:
                return _instance_error(index, response)
        return JSONResponse({"predictions": [text for _, text in answers]})

    @app.post("/chat_tokenize", response_model=ChatTokenizeResponse,
              responses={code: ERROR_RESPONSES[code] for code in (400, 413, 422, 503)},
              summary="the chat template's text for a chat request, and its tokens")
    async def chat_tokenize(body: ChatCompletionRequest) -> Any:
        if state.serving is None:
            return error_response(503, "the model is still loading; retry when /health returns 200", "unhealthy")
        try:
            plan = chat_tool_plan(body)  # the tools go into the template as for /v1/chat/completions
            text = render_chat_prompt(state.serving.tokenizer, body.messages, plan, body.tool_prompt)
        except ValidationError as error:
            return error_response(422, f"Input validation error: {error}", "validation")
        return ChatTokenizeResponse(tokenize_response=build_chat_tokens(state.serving.tokenizer, text),
                                    templated_text=text)


def build_chat_tokens(tokenizer: Any, text: str) -> list[SimpleToken]:
    """The tokens of a templated chat prompt with their character spans (no special tokens added: the template
    wrote those it wants, as /v1/chat/completions tokenizes it)."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [SimpleToken(id=token_id, text=text[start:stop], start=start, stop=stop)
            for token_id, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"])]


async def _compat_generate(endpoint: Callable[[str], Endpoint], body: GenerateRequest, request: Request) -> Response:
    if body.parameters.return_full_text is None:
        parameters = body.parameters.model_copy(update={"return_full_text": True})
        body = body.model_copy(update={"parameters": parameters})
    if body.stream:
        return await _call(endpoint("/generate_stream"), body, request)
    response = await _call(endpoint("/generate"), body, request)
    if response.status_code != 200:
        return response
    return Response(b"[" + bytes(response.body) + b"]", media_type="application/json")


async def _predict(endpoint: Callable[[str], Endpoint], instance: VertexGenerateInstance | ChatCompletionRequest,
                   request: Request) -> tuple[Response, str]:
    """One instance's response and, when it succeeded, its prediction."""
    if isinstance(instance, VertexGenerateInstance):
        body = GenerateRequest(inputs=instance.inputs, parameters=_vertex_parameters(instance.parameters))
        response = await _call(endpoint("/generate"), body, request)
        return response, (_json(response).get("generated_text", "") if response.status_code == 200 else "")
    if instance.stream or instance.n != 1:
        return error_response(422, "Input validation error: a /vertex chat instance is answered with one whole "
                              "prediction: remove `stream` and `n`", "validation"), ""
    response = await _call(endpoint("/v1/chat/completions"), instance, request)
    if response.status_code != 200:
        return response, ""
    message = _json(response)["choices"][0]["message"]
    # A tool call has no content: its calls, as JSON text, are the prediction.
    content = message.get("content")
    return response, content if content is not None else json.dumps(message.get("tool_calls") or [])


def _vertex_parameters(parameters: GenerateParameters | None) -> GenerateParameters:
    if parameters is None:
        return GenerateParameters(do_sample=True)
    if "do_sample" not in parameters.model_fields_set:  # TGI samples every Vertex generation instance
        return parameters.model_copy(update={"do_sample": True})
    return parameters


def _instance_error(index: int, response: Response) -> Response:
    try:
        error = _json(response)
    except ValueError:
        error = {}
    message = f"instances[{index}]: {error.get('error', f'answered HTTP {response.status_code}')}"
    return error_response(response.status_code, message, str(error.get("error_type", "generation")))


def _find_endpoint(app: FastAPI, path: str) -> Endpoint:
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path == path and "POST" in (route.methods or ()):
            endpoint: Endpoint = route.endpoint
            return endpoint
    raise LookupError(f"no POST {path} route is registered; register_compat_routes must come after it")


async def _call(endpoint: Endpoint, body: BaseModel, request: Request) -> Response:
    # The delegated endpoints take the parsed body and, for disconnect detection, maybe the request.
    if "request" in inspect.signature(endpoint).parameters:
        return await endpoint(body=body, request=request)
    return await endpoint(body=body)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(status_code=400, detail=str(error)) from error


def _parse(model: type[_Model], data: dict[str, Any]) -> _Model:
    try:
        return model.model_validate(data)
    except PydanticValidationError as error:
        raise RequestValidationError(error.errors()) from error


def _json(response: Response) -> dict[str, Any]:
    value = json.loads(bytes(response.body))
    return value if isinstance(value, dict) else {}
