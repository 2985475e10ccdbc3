"""TGI response shapes: /generate bodies and /generate_stream SSE events."""
from __future__ import annotations

import json

from textgen_server.protocol import SamplingParams
from textgen_server.router.responses import (
    Candidate,
    build_generate_response,
    build_stream_response,
    dump_generate_response,
    dump_stream_response,
    format_sse,
)
from textgen_server.router.schemas import Token
from textgen_server.router.stream import Finished, TokenEvent
from textgen_server.router.validation import ValidRequest


def _request(**overrides: object) -> ValidRequest:
    values: dict = dict(prompt_ids=[1, 2, 3], params=SamplingParams(), max_new_tokens=2, stop_sequences=(),
                        details=False, decoder_input_details=False, return_full_text=False, report_seed=False)
    values.update(overrides)
    return ValidRequest(**values)


TOKEN = Token(id=9, text=" hi", logprob=-0.5, special=False)


def test_sse_frame_is_data_colon_json_blank_line() -> None:
    assert format_sse({"a": "\u00e9"}) == 'data:{"a":"\u00e9"}\n\n'.encode()


def test_intermediate_stream_event_has_tgi_keys_and_null_text() -> None:
    body = dump_stream_response(build_stream_response(TokenEvent(0, TOKEN, []), _request(), "in"))
    assert body == {"index": 0, "token": {"id": 9, "text": " hi", "logprob": -0.5, "special": False},
                    "generated_text": None, "details": None}


def test_final_stream_event_carries_text_and_details() -> None:
    event = TokenEvent(1, TOKEN, [], Finished("length", " hi hi", 2))
    request = _request(return_full_text=True, params=SamplingParams(do_sample=True, seed=5), report_seed=True)
    body = dump_stream_response(build_stream_response(event, request, "in"))
    assert body["generated_text"] == "in hi hi"
    assert body["details"] == {"finish_reason": "length", "generated_tokens": 2, "seed": 5, "input_length": 3}


def test_generate_without_details_is_only_text() -> None:
    candidate = Candidate(_request(), Finished("eos_token", "x", 1), [TOKEN], [[]])
    body = dump_generate_response(build_generate_response(candidate, [], "in", []))
    assert body == {"generated_text": "x"}


def test_generate_details_list_tokens_and_seed_null_for_greedy() -> None:
    candidate = Candidate(_request(details=True), Finished("stop_sequence", "x", 1), [TOKEN], [[]])
    response = build_generate_response(candidate, [], "in", [])
    body = json.loads(json.dumps(dump_generate_response(response)))
    assert body["details"]["finish_reason"] == "stop_sequence"
    assert body["details"]["seed"] is None
    assert body["details"]["tokens"] == [{"id": 9, "text": " hi", "logprob": -0.5, "special": False}]
    assert "top_tokens" not in body["details"]
