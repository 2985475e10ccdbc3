"""`python -m textgen_node_agent --kubeconfig ... --state-dir ...` (hack/cluster starts it)."""
from __future__ import annotations

import asyncio
import logging
import sys

from textgen_node_agent.agent import Agent
from textgen_node_agent.config import parse_args


def main() -> None:
    config = parse_args(sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(Agent(config).run())


if __name__ == "__main__":
    main()
