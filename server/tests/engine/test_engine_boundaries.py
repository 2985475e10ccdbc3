"""The engine's boundaries: it never imports torch or grpc, and a step's cost does not grow with the queue."""
from __future__ import annotations

import subprocess
import sys

from engine_testlib import make_seq, run_step
from textgen_server.engine import BlockManager, Scheduler, SchedulerConfig, Sequence


def test_importing_the_engine_loads_neither_torch_nor_grpc() -> None:
    code = (
        "import sys, textgen_server.engine\n"
        "heavy = sorted(m for m in ('torch', 'grpc', 'numpy', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"textgen_server.engine pulled in: {result.stdout.strip()}"


class CountingBlockManager(BlockManager):
    """The real BlockManager, counting how many admission checks the scheduler makes."""

    num_can_allocate_calls = 0

    def can_allocate(self, seq: Sequence) -> bool:
        self.num_can_allocate_calls += 1
        return super().can_allocate(seq)


def test_a_full_cache_checks_only_the_head_of_a_long_queue() -> None:
    manager = CountingBlockManager(num_blocks=20, block_size=4)
    config = SchedulerConfig(max_batch_prefill_tokens=64, max_batch_total_tokens=10_000, block_size=4)
    scheduler = Scheduler(config, manager)
    scheduler.add(make_seq(0, 60, max_new_tokens=16))   # holds 16 to 19 of the 20 blocks
    run_step(scheduler)
    for request_id in range(1, 5001):
        scheduler.add(make_seq(request_id, 24))           # 6 blocks each: none fits
    manager.num_can_allocate_calls = 0
    for _ in range(10):
        run_step(scheduler)
    assert manager.num_can_allocate_calls <= 10


def test_the_ratio_rule_refuses_without_scanning_the_queue() -> None:
    manager = CountingBlockManager(num_blocks=1000, block_size=4)
    config = SchedulerConfig(
        max_batch_prefill_tokens=64, max_batch_total_tokens=10_000, block_size=4,
        waiting_served_ratio=2.0, max_waiting_tokens=1000,
    )
    scheduler = Scheduler(config, manager)
    for request_id in range(4):
        scheduler.add(make_seq(request_id, 2, max_new_tokens=50))
    run_step(scheduler)
    for request_id in range(4, 9):          # 5 waiting < floor(4 * 2.0): refused before any check
        scheduler.add(make_seq(request_id, 2))
    manager.num_can_allocate_calls = 0
    run_step(scheduler)
    assert manager.num_can_allocate_calls == 0
