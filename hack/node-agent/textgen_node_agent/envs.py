"""A container's environment and command line, resolved as the kubelet does. Pure functions.

Order (the kubelet's): envFrom sources first, then `env` entries in order; each `env` value may refer to
variables defined before it with $(VAR); `command`/`args` are expanded against the final environment.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

# (kind "secret" | "configmap", name) -> its data decoded to str, or None when it does not exist
Lookup = Callable[[str, str], Mapping[str, str] | None]
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(Exception):
    """The container cannot start yet (CreateContainerConfigError): a missing Secret/ConfigMap or key."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: $(VAR) -> its value when defined (else left as is), $$ -> $."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    """The downward API's fieldRef values the kubelet supports."""
    meta, status, spec = pod["metadata"], pod.get("status") or {}, pod["spec"]
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""), "status.podIP": status.get("podIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"fieldRef {path!r} is not supported by the node agent")


def _key_ref(ref: Mapping[str, Any], kind: str, lookup: Lookup) -> str | None:
    data = lookup(kind, ref["name"])
    optional = bool(ref.get("optional"))
    label = "secret" if kind == "secret" else "configmap"
    if data is None:
        if optional:
            return None
        raise ContainerConfigError(f'{label} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {ref['key']} in {label.capitalize()} "
                                   f"{ref.get('namespace', '')}/{ref['name']}".replace(" /", " "))
    return data[ref["key"]]


def _value_from(source: Mapping[str, Any], pod: Mapping[str, Any], lookup: Lookup) -> str | None:
    if "fieldRef" in source:
        return field_ref(pod, source["fieldRef"]["fieldPath"])
    if "secretKeyRef" in source:
        return _key_ref(source["secretKeyRef"], "secret", lookup)
    if "configMapKeyRef" in source:
        return _key_ref(source["configMapKeyRef"], "configmap", lookup)
    raise ContainerConfigError(f"env valueFrom {sorted(source)} is not supported by the node agent "
                               "(resourceFieldRef, fileKeyRef)")


def _env_from(sources: list[Mapping[str, Any]], lookup: Lookup) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in sources:
        kind, ref = ("secret", source["secretRef"]) if "secretRef" in source else ("configmap", source["configMapRef"])
        data = lookup(kind, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
        prefix = source.get("prefix", "")
        # Keys that are not valid variable names are skipped (the kubelet records an event).
        env.update({prefix + k: v for k, v in data.items() if ENV_NAME.match(prefix + k)})
    return env


def build_env(container: Mapping[str, Any], pod: Mapping[str, Any], base: Mapping[str, str],
              lookup: Lookup) -> dict[str, str]:
    """The container's environment: image-like base, envFrom, then env with $(VAR) expansion."""
    env = dict(base)
    env.update(_env_from(container.get("envFrom") or [], lookup))
    for entry in container.get("env") or []:
        if "valueFrom" in entry and entry["valueFrom"]:
            value = _value_from(entry["valueFrom"], pod, lookup)
            if value is None:
                continue
        else:
            value = expand(entry.get("value") or "", env)
        env[entry["name"]] = value
    return env


def build_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args, expanded. Without `command` there is no image ENTRYPOINT to fall back on: refused."""
    command = container.get("command") or []
    if not command:
        raise ContainerConfigError(
            f"container {container['name']!r} has no command: the node agent pulls no image, so it has no "
            "ENTRYPOINT to run; set command (e.g. [textgen-launcher] or [python, -c, ...])")
    return [expand(a, env) for a in [*command, *(container.get("args") or [])]]
