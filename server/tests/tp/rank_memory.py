"""Measure one rank's resident memory for its weights: `python rank_memory.py MODEL_DIR RANK WORLD_SIZE PORT`.

Prints one JSON line: {"rank", "rss_before", "rss_after", "hwm_after", "param_bytes"} in bytes, where the "before"
figure is taken after torch, transformers and the process group are up, so the difference is the weights (and
whatever loading them leaves behind). Used by test_tp_memory.py and hack/bench-tp.py.
"""
from __future__ import annotations

import json
import sys


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main() -> None:
    model_dir, rank, world_size, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    import gc

    import transformers  # noqa: F401 - imported before the "before" figure, as in a shard

    from textgen_server.models.loading import load_model
    from textgen_server.shard.distributed import init_process_group

    init_process_group("cpu", rank, world_size, "127.0.0.1", port, join_timeout_s=120)
    gc.collect()
    before = _status("VmRSS")
    loaded = load_model(model_dir, "auto", "cpu", rank, world_size)
    for parameter in loaded.model.parameters():  # weights may be lazily mapped from the file: touch every page
        float(parameter.detach().sum())
    gc.collect()
    params = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    print(json.dumps({"rank": rank, "rss_before": before, "rss_after": _status("VmRSS"),
                      "hwm_after": _status("VmHWM"), "param_bytes": params}), flush=True)


if __name__ == "__main__":
    main()
