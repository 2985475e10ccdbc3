"""Errors the shard reports to the router; the servicer maps each class to one gRPC status code."""
from __future__ import annotations


class ShardError(Exception):
    """Base class: the message says what was wrong, the value, and what to do."""


class InvalidStepError(ShardError, ValueError):
    """A request (step item, filter) is malformed or inconsistent with the shard's state."""


class NotReadyError(ShardError):
    """The call needs warmup first (no KV cache allocated yet)."""


class CapacityError(ShardError):
    """The configured limits cannot fit in the KV cache memory budget."""
