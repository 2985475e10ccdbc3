"""The step messages between router and shard: columnar protobuf both ways, through real serialized bytes."""
from __future__ import annotations

import pytest

from textgen_server.pb import shard_pb2 as pb
from textgen_server.protocol import Generation, SamplingParams, StepItem, Token, WatermarkParams
from textgen_server.shard import convert
from textgen_server.shard.errors import InvalidStepError


def _over_the_wire_request(items: list[StepItem]) -> list[StepItem]:
    data = convert.step_request_to_pb(items).SerializeToString()
    return convert.step_items_from_pb(pb.StepRequest.FromString(data))


def _over_the_wire_response(generations: list[Generation]) -> list[Generation]:
    data = convert.step_response_to_pb(generations, 7).SerializeToString()
    return convert.generations_from_pb(pb.StepResponse.FromString(data))


MIXED_STEP = [
    StepItem(3, [11], 40, [0, 1, 2], True),                                   # plain decode
    StepItem(4, [12, 90, 91], 17, [3, 4], True, num_speculative=2),           # speculative decode
    StepItem(9, [5, 6, 7, 8], 0, [5], False, SamplingParams(), [], 9,         # first prompt chunk with logprobs
             prefill_logprobs=True),
    StepItem(10, [1, 2], 32, [6, 7, 8], True,  # prefix-cache hit, sampled (float32-exact values: proto floats)
             SamplingParams(temperature=0.75, top_k=5, top_p=0.875, typical_p=0.9375, do_sample=True, seed=123,
                            repetition_penalty=1.25, frequency_penalty=0.5, top_n_tokens=3,
                            watermark=WatermarkParams(gamma=0.25, delta=1.5), grammar='start: "a"'),
             list(range(32)), 30),
    StepItem(11, [], 8, [], False),                                            # degenerate, kept as sent
]


def test_a_mixed_step_survives_the_wire_in_order() -> None:
    assert _over_the_wire_request(MIXED_STEP) == MIXED_STEP


def test_a_decode_only_step_carries_no_per_item_messages() -> None:
    items = [StepItem(request_id, [request_id + 100], 64, [request_id, request_id + 1], True)
             for request_id in range(64)]
    message = convert.step_request_to_pb(items)
    assert not message.starts
    assert list(message.token_ids) == [request_id + 100 for request_id in range(64)]
    assert _over_the_wire_request(items) == items


@pytest.mark.parametrize("spoil, complaint", [
    (lambda m: m.start_pos.pop(), "start_pos has 4"),
    (lambda m: m.token_ids.append(5), "num_tokens sum to 10 but token_ids has 11"),
    (lambda m: m.block_ids.pop(), "num_blocks sum to 9 but block_ids has 8"),
    (lambda m: m.sample.append(True), "sample has 6"),
])
def test_columns_that_disagree_are_refused_by_name(spoil, complaint) -> None:  # type: ignore[no-untyped-def]
    message = convert.step_request_to_pb(MIXED_STEP)
    spoil(message)
    with pytest.raises(InvalidStepError, match=complaint):
        convert.step_items_from_pb(message)


@pytest.mark.parametrize("index", [5, 2])  # past the last item; a second start for item 2
def test_a_start_must_name_one_item_once(index: int) -> None:
    message = convert.step_request_to_pb(MIXED_STEP)
    message.starts.append(pb.ItemStart(index=index, parameters=pb.SamplingParameters()))
    with pytest.raises(InvalidStepError, match="StepRequest.starts"):
        convert.step_items_from_pb(message)


def test_generations_survive_the_wire_with_their_extras() -> None:
    generations = [
        Generation(3, Token(17, -0.25)),
        Generation(4, Token(90, -1.0)),
        Generation(4, Token(91, -2.0), speculative_ids=[92, 93]),
        Generation(10, Token(2, -0.5), top_tokens=[Token(2, -0.5), Token(8, -1.75)], prefill_logprobs=[-3.0, -4.5]),
    ]
    message = convert.step_response_to_pb(generations, 7)
    assert [extra.index for extra in message.extras] == [2, 3] and message.forward_ns == 7
    assert _over_the_wire_response(generations) == generations


def test_a_response_whose_columns_disagree_is_refused() -> None:
    message = convert.step_response_to_pb([Generation(3, Token(17, -0.25))])
    message.logprobs.append(-1.0)
    with pytest.raises(ValueError, match="1 request_ids, 1 token_ids, 2 logprobs"):
        convert.generations_from_pb(message)
