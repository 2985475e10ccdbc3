"""Names, labels, selectors and owner references of the objects built for one TextGenerationService."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from textgen_operator import FIELD_MANAGER, GROUP, KIND, VERSION

Body = dict[str, Any]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_SERVICE = f"{GROUP}/service"           # the owning TGS name: how child events find their owner
ANNOTATION_TEMPLATE_HASH = f"{GROUP}/template-hash"
ANNOTATION_APPLIED_HASH = f"{GROUP}/applied-hash"
APP_NAME = "textgen"


def tgs_name(tgs: Body) -> str:
    return str(tgs["metadata"]["name"])


def tgs_namespace(tgs: Body) -> str:
    return str(tgs["metadata"]["namespace"])


def headless_service_name(tgs: Body) -> str:
    return f"{tgs_name(tgs)}-headless"


def selector_labels(tgs: Body) -> dict[str, str]:
    """The pod selector: immutable on a StatefulSet, so it never includes anything that may change."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: tgs_name(tgs)}


def selector_string(tgs: Body) -> str:
    """selector_labels as the string the scale subresource wants."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(tgs).items()))


def common_labels(tgs: Body) -> dict[str, str]:
    """Labels on every object the operator creates (and on pods)."""
    return {
        **selector_labels(tgs),
        LABEL_COMPONENT: "server",
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_PART_OF: APP_NAME,
        LABEL_SERVICE: tgs_name(tgs),
    }


def owner_reference(tgs: Body) -> dict[str, Any]:
    """Controller reference to the TGS: garbage collection deletes the children with it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": tgs_name(tgs),
        "uid": tgs["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(tgs: Body, name: str) -> dict[str, Any]:
    """metadata of a child object: name, namespace, labels, owner reference."""
    return {
        "name": name,
        "namespace": tgs_namespace(tgs),
        "labels": common_labels(tgs),
        "ownerReferences": [owner_reference(tgs)],
    }


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able value that does not depend on dict ordering."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
