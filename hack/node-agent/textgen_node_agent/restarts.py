"""The kubelet's container restart rules: restartPolicy, crash-loop back-off, termination messages. Pure."""
from __future__ import annotations

from pathlib import Path

BACKOFF_INITIAL_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
# A container that ran this long forgets its back-off (the kubelet expires entries after 2 x the maximum).
BACKOFF_RESET_AFTER_SECONDS = 2 * BACKOFF_MAX_SECONDS
# The kubelet's limits on a message taken from the log (FallbackToLogsOnError).
MESSAGE_MAX_LINES = 80
MESSAGE_MAX_BYTES = 2048


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def backoff_delay(num_restarts_in_row: int) -> float:
    """Wait before the next start after `num_restarts_in_row` restarts without a long run: the first restart
    is immediate, then 10 s, 20 s, 40 s, ... up to 300 s (client-go's Backoff as the kubelet uses it)."""
    if num_restarts_in_row == 0:
        return 0.0
    return float(min(BACKOFF_INITIAL_SECONDS * 2.0 ** (num_restarts_in_row - 1), BACKOFF_MAX_SECONDS))


def exit_code_of(returncode: int) -> int:
    """A process' return code as a container's exit code (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def log_tail(path: Path) -> str:
    """The end of a container's log as FallbackToLogsOnError takes it: at most 80 lines and 2048 bytes."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    lines = data.splitlines(keepends=True)[-MESSAGE_MAX_LINES:]
    return b"".join(lines)[-MESSAGE_MAX_BYTES:].decode(errors="replace")


def termination_message(policy: str, exit_code: int, message_file: Path | None, log: Path) -> str:
    """The message of a terminated container: its terminationMessagePath file, else (FallbackToLogsOnError
    and a failure) the tail of its log."""
    if message_file is not None and message_file.exists():
        text = message_file.read_bytes()[-4096:].decode(errors="replace")
        if text:
            return text
    if policy == "FallbackToLogsOnError" and exit_code != 0:
        return log_tail(log)
    return ""
