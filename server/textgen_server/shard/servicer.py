"""The Shard gRPC service: protobuf in -> ModelRunner call -> protobuf out, nothing more.

Exceptions become gRPC status codes in one place (ErrorMappingInterceptor), with the exception's message as
the status details, so the router can log or return it as is.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from textgen_server.pb import shard_pb2 as pb
from textgen_server.pb import shard_pb2_grpc as pb_grpc
from textgen_server.protocol import Generation, StepItem
from textgen_server.shard import convert
from textgen_server.shard.errors import CapacityError, InvalidStepError, NotReadyError
from textgen_server.shard.runner import ModelRunner

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Most specific first; anything unlisted is INTERNAL (a bug or a device failure), logged with its traceback.
STATUS_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidStepError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotReadyError, grpc.StatusCode.FAILED_PRECONDITION),
    (CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
]


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code an exception maps to."""
    for error_type, code in STATUS_CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Turns exceptions raised by unary handlers into aborts with a status code and the message.

    With `fatal_internal` (tensor parallelism) an unexpected error ends the process instead: the ranks' group is
    broken (a peer died, a collective timed out) or this rank may have stopped mid-step while the others went
    on, and only a restart of every rank recovers; the launcher sees the exit and stops the rest."""

    def __init__(self, fatal_internal: bool = False) -> None:
        self.fatal_internal = fatal_internal

    def intercept_service(self, continuation: Callable[..., Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except Exception as error:  # noqa: BLE001 - every error must reach the router as a status
                code = status_code_for(error)
                if code == grpc.StatusCode.INTERNAL:
                    logger.exception("%s failed", handler_call_details.method)
                    if self.fatal_internal:
                        logger.critical("exiting: a tensor-parallel rank cannot continue after %s", error)
                        logging.shutdown()
                        os._exit(1)
                context.abort(code, f"{type(error).__name__}: {error}")

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


class ShardServicer(pb_grpc.ShardServicer):
    """Thin adapter over a ModelRunner; one call at a time reaches the runner (Health never waits).

    Every runner call runs on one dedicated thread, not on whichever gRPC worker took the RPC: torch's CPU
    kernels parallelise through OpenMP, and OpenMP keeps a separate team of worker threads for each thread that
    starts a parallel region. Steps spread over the gRPC pool's 4 workers made up to 4 teams, whose idle
    threads spin-wait on the cores the active team needs: the bench's decode steps took 88-114 ms against
    72-73 ms from one thread (server/docs/performance.md). One thread also serialises the calls."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-compute")

    def _on_compute_thread(self, call: Callable[..., T], *args: Any) -> T:
        return self.compute.submit(call, *args).result()

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        return convert.model_info_to_pb(self.runner.info())

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        return pb.HealthResponse()

    def Warmup(self, request: pb.WarmupRequest, context: grpc.ServicerContext) -> pb.WarmupResponse:
        result = self._on_compute_thread(self.runner.warmup, convert.warmup_spec_from_pb(request))
        return convert.warmup_result_to_pb(result)

    def Prefill(self, request: pb.StepRequest, context: grpc.ServicerContext) -> pb.StepResponse:
        return self._step(request)

    def Decode(self, request: pb.StepRequest, context: grpc.ServicerContext) -> pb.StepResponse:
        return self._step(request)

    def FilterBatch(self, request: pb.FilterBatchRequest, context: grpc.ServicerContext) -> pb.FilterBatchResponse:
        self._on_compute_thread(self.runner.filter, list(request.request_ids))
        return pb.FilterBatchResponse()

    def ClearCache(self, request: pb.ClearCacheRequest, context: grpc.ServicerContext) -> pb.ClearCacheResponse:
        self._on_compute_thread(self.runner.clear)
        return pb.ClearCacheResponse()

    def _step(self, request: pb.StepRequest) -> pb.StepResponse:
        items = convert.step_items_from_pb(request)
        generations, forward_ns = self._on_compute_thread(self._timed_step, items)
        return convert.step_response_to_pb(generations, forward_ns)

    def _timed_step(self, items: list[StepItem]) -> tuple[list[Generation], int]:
        started = time.perf_counter_ns()
        generations = self.runner.step(items)
        return generations, time.perf_counter_ns() - started
