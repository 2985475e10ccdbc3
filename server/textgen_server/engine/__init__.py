"""The router-side engine: sequences, paged KV bookkeeping with prefix caching, and the scheduler.

Pure Python on plain integers: it never imports torch or grpc (a test checks this), so it runs in the
launcher process and is unit-tested without a model.
"""
from textgen_server.engine.block_manager import BlockManager
from textgen_server.engine.scheduler import Scheduler
from textgen_server.engine.step import ScheduledStep, SchedulerConfig, SequenceUpdate
from textgen_server.engine.sequence import FinishReason, Sequence, SequenceStatus

__all__ = [
    "BlockManager",
    "FinishReason",
    "ScheduledStep",
    "Scheduler",
    "SchedulerConfig",
    "Sequence",
    "SequenceStatus",
    "SequenceUpdate",
]
