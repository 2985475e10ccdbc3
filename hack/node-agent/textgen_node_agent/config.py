"""The agent's one configuration object, built once from the command line."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class AgentConfig:
    """Where the agent keeps state, which nodes it plays and how pods run."""

    kubeconfig: Path
    state_dir: Path                       # pods' logs, volumes, claims' directories
    node_names: tuple[str, ...]           # which profiles of nodes.py, as "<profile>=<node name>"
    pod_cidr: ipaddress.IPv4Network       # loopback addresses handed to pods
    venv_bin: Path                        # first on every container's PATH (the image is not pulled)
    lease_seconds: int                    # node Lease duration; renewed every quarter of it
    storage_class: str                    # the StorageClass whose claims this agent provisions
    provisioner_name: str
    kubelet_port: int                     # the logs endpoint on 127.0.0.1 (0: none)
    serving_cert: Path | None
    serving_key: Path | None

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def claims_dir(self) -> Path:
        return self.state_dir / "claims"


def parse_args(argv: list[str]) -> AgentConfig:
    """The agent's config from its arguments (see --help)."""
    parser = argparse.ArgumentParser(prog="textgen-node-agent", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True,
                        help="pod logs (pods/<ns>_<name>_<uid>/<container>/<restart>.log), volumes, claims")
    parser.add_argument("--node", action="append", default=[], metavar="PROFILE=NAME",
                        help="a node to play: profile nvidia, gaudi or cpu (nodes.py), and its name; repeatable. "
                             "Default: nvidia=agent-gpu-0 gaudi=agent-gaudi-0 cpu=agent-cpu-0")
    parser.add_argument("--pod-cidr", default="127.1.0.0/24",
                        help="loopback range of pod IPs (must lie in 127.0.0.0/8)")
    parser.add_argument("--venv-bin", type=Path, default=Path(sys.executable).parent,
                        help="put first on each container's PATH (default: this Python's bin dir)")
    parser.add_argument("--lease-seconds", type=int, default=20)
    parser.add_argument("--storage-class", default="textgen-local")
    parser.add_argument("--provisioner-name", default="textgen.dev/node-agent")
    parser.add_argument("--kubelet-port", type=int, default=0,
                        help="serve `kubectl logs` on 127.0.0.1:PORT over HTTPS (0: not served)")
    parser.add_argument("--serving-cert", type=Path, help="TLS certificate of the logs endpoint")
    parser.add_argument("--serving-key", type=Path, help="its key")
    args = parser.parse_args(argv)
    if args.kubelet_port and not (args.serving_cert and args.serving_key):
        parser.error("--kubelet-port needs --serving-cert and --serving-key (the API server speaks HTTPS to it)")
    cidr = ipaddress.IPv4Network(args.pod_cidr)
    if not cidr.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        parser.error(f"--pod-cidr {cidr} is not inside 127.0.0.0/8: pods may only get loopback addresses")
    nodes = args.node or ["nvidia=agent-gpu-0", "gaudi=agent-gaudi-0", "cpu=agent-cpu-0"]
    for node in nodes:
        if "=" not in node:
            parser.error(f"--node {node!r}: expected PROFILE=NAME, e.g. cpu=agent-cpu-1")
    return AgentConfig(
        kubeconfig=args.kubeconfig, state_dir=args.state_dir.resolve(), node_names=tuple(nodes), pod_cidr=cidr,
        venv_bin=args.venv_bin, lease_seconds=args.lease_seconds, storage_class=args.storage_class,
        provisioner_name=args.provisioner_name, kubelet_port=args.kubelet_port, serving_cert=args.serving_cert,
        serving_key=args.serving_key,
    )


def container_base_env(config: AgentConfig) -> dict[str, str]:
    """What an image's ENV would give every container: the checkout's venv first on PATH."""
    return {
        "PATH": f"{config.venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONUNBUFFERED": "1",
        "HOSTNAME": "",  # replaced by the pod's name
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
