"""Spec problems that need cluster facts (the CRD's schema and CEL rules catch the rest). Pure."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from textgen_operator.builders.accelerators import profile_for
from textgen_operator.names import Body


@dataclass(frozen=True)
class Problem:
    """Something the user must fix. Blocking problems stop the operator from (re)applying the workload."""

    reason: str          # CamelCase, becomes the Degraded condition's reason and the Event's reason
    message: str         # what is wrong, the value, and what to do
    blocking: bool = True


def check_token_secret(tgs: Body, secret_exists: bool | None) -> list[Problem]:
    """The hub-token Secret must exist (None: not checked, e.g. no tokenSecretRef)."""
    ref = tgs["spec"]["model"].get("tokenSecretRef")
    if not ref or secret_exists is None or secret_exists:
        return []
    namespace = tgs["metadata"]["namespace"]
    return [Problem("SecretNotFound",
                    f"spec.model.tokenSecretRef names Secret {ref['name']!r} in namespace {namespace!r}, which "
                    f"does not exist; create it (kubectl -n {namespace} create secret generic {ref['name']} "
                    f"--from-literal={ref.get('key', 'token')}=hf_...) or remove tokenSecretRef")]


def check_accelerator_count(tgs: Body, max_devices_per_node: Mapping[str, int] | None) -> list[Problem]:
    """accelerator.count devices must fit on one node: no pod can span nodes.

    max_devices_per_node maps a device resource to the most any node offers; an absent resource means no node
    has it. None means the node list is not known yet, and nothing is reported.
    """
    resource = profile_for(tgs["spec"]).resource
    if resource is None or max_devices_per_node is None:
        return []
    count = int(tgs["spec"]["accelerator"].get("count", 1))
    largest = max_devices_per_node.get(resource, 0)
    if count <= largest:
        return []
    if largest == 0:
        return [Problem("NoAcceleratorNodes",
                        f"spec.accelerator.count={count} {resource} requested, but no node offers {resource}; "
                        f"add such nodes (and their device plugin) or change spec.accelerator.type")]
    return [Problem("AcceleratorCountUnsatisfiable",
                    f"spec.accelerator.count={count} {resource} per pod, but the largest node offers {largest}; "
                    f"a pod cannot span nodes: lower spec.accelerator.count to at most {largest}")]


def find_problems(tgs: Body, secret_exists: bool | None,
                  max_devices_per_node: Mapping[str, int] | None) -> list[Problem]:
    """Every problem of a spec, given what the cluster has."""
    return check_token_secret(tgs, secret_exists) + check_accelerator_count(tgs, max_devices_per_node)
