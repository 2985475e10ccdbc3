"""Spec problems that need cluster facts (the CRD's schema and CEL rules catch the rest). Pure."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from textgen_operator.builders.accelerators import profile_for
from textgen_operator.builders.container import GENERATED_FLAG_ENV, build_generated_args
from textgen_operator.names import Body
from textgen_operator.spec import TGSSpec, tgs_spec


@dataclass(frozen=True)
class Problem:
    """Something the user must fix. Blocking problems stop the operator from (re)applying the workload."""

    reason: str          # CamelCase, becomes the Degraded condition's reason and the Event's reason
    message: str         # what is wrong, the value, and what to do
    blocking: bool = True


def check_token_secret(tgs: Body, secret_exists: bool | None) -> list[Problem]:
    """The hub-token Secret must exist (None: not checked, e.g. no tokenSecretRef)."""
    ref = tgs_spec(tgs).model.token_secret_ref
    if ref is None or secret_exists is None or secret_exists:
        return []
    namespace = tgs["metadata"]["namespace"]
    return [Problem("SecretNotFound",
                    f"spec.model.tokenSecretRef names Secret {ref.name!r} in namespace {namespace!r}, which "
                    f"does not exist; create it (kubectl -n {namespace} create secret generic {ref.name} "
                    f"--from-literal={ref.key}=hf_...) or remove tokenSecretRef")]


def check_accelerator_count(tgs: Body, max_devices_per_node: Mapping[str, int] | None) -> list[Problem]:
    """accelerator.count devices must fit on one node: no pod can span nodes.

    max_devices_per_node maps a device resource to the most any node offers; an absent resource means no node
    has it. None means the node list is not known yet, and nothing is reported.
    """
    spec = tgs_spec(tgs)
    resource = profile_for(spec).resource
    if resource is None or max_devices_per_node is None:
        return []
    count = spec.accelerator.count
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


def check_not_implemented(spec: TGSSpec) -> list[Problem]:
    """Fields the server cannot honour yet. The CRD's CEL rules refuse them on write; this catches objects
    stored before those rules existed (CEL rules do not re-check unchanged stored objects)."""
    problems = []
    if spec.model.quantize is not None:
        problems.append(Problem("QuantizationNotImplemented",
                                f"spec.model.quantize={spec.model.quantize!r}: the server implements no "
                                "quantization method yet; remove spec.model.quantize (and serve the model in "
                                "spec.model.dtype)"))
    return problems


def _flag_name(arg: str) -> str | None:
    return arg.split("=", 1)[0] if arg.startswith("--") else None


def check_extra_args_and_env(spec: TGSSpec) -> list[Problem]:
    """spec.args and spec.env must not restate what the operator already sets: the launcher would take the last
    flag (or the flag over the environment variable) and silently drop the other."""
    generated = {name for arg in build_generated_args(spec) if (name := _flag_name(arg))}
    repeated = sorted({name for arg in spec.args if (name := _flag_name(arg)) in generated})
    env_twins = {env: flag for flag, env in GENERATED_FLAG_ENV.items() if flag in generated}
    shadowed = sorted(e["name"] for e in spec.env if e.get("name") in env_twins)
    problems = []
    if repeated:
        problems.append(Problem("DuplicateLauncherArgument",
                                f"spec.args repeats {', '.join(repeated)}, which the operator already sets from "
                                "the spec; remove it from spec.args and set the matching spec field instead"))
    if shadowed:
        flags = ", ".join(f"{name} ({env_twins[name]})" for name in shadowed)
        problems.append(Problem("DuplicateLauncherArgument",
                                f"spec.env sets {flags}, which the operator already passes as a flag (the flag would "
                                "win); remove it from spec.env and set the matching spec field instead"))
    return problems


def find_problems(tgs: Body, secret_exists: bool | None,
                  max_devices_per_node: Mapping[str, int] | None) -> list[Problem]:
    """Every problem of a spec, given what the cluster has."""
    spec = tgs_spec(tgs)
    return (check_token_secret(tgs, secret_exists) + check_accelerator_count(tgs, max_devices_per_node)
            + check_not_implemented(spec) + check_extra_args_and_env(spec))
