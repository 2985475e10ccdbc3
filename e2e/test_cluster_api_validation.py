"""The API server enforces schemas: a CRD's OpenAPI schema and the built-in types' validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
import yaml

from e2e.harness import REPO_ROOT, Cluster, apply_yaml, wait_for

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.textgen.dev}
spec:
  group: e2e.textgen.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [accelerator]
            properties:
              replicas: {type: integer, minimum: 1}
              accelerator: {type: string, enum: [nvidia, gaudi, cpu]}
"""


def crd_established(cluster: Cluster) -> bool:
    ext = kubernetes.client.ApiextensionsV1Api(cluster.api_client())
    crd = ext.read_custom_resource_definition("widgets.e2e.textgen.dev")
    return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))


@pytest.fixture(scope="module")
def widget_crd(cluster: Cluster) -> Iterator[None]:
    """A small CRD with a schema (cluster-scoped, so created once for this module and deleted after)."""
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-", input=WIDGET_CRD)
    wait_for(lambda: crd_established(cluster), 30, "the Widget CRD Established")
    yield
    cluster.kubectl("delete", "crd", "widgets.e2e.textgen.dev", "--wait=false")


def widget(name: str, spec: str) -> str:
    return f"apiVersion: e2e.textgen.dev/v1\nkind: Widget\nmetadata: {{name: {name}}}\nspec: {spec}\n"


@pytest.mark.usefixtures("widget_crd")
def test_valid_custom_object_is_accepted(cluster: Cluster, namespace: str) -> None:
    [obj] = apply_yaml(cluster, widget("ok", "{replicas: 2, accelerator: gaudi}"), namespace)
    assert obj["spec"] == {"replicas": 2, "accelerator": "gaudi"}


@pytest.mark.usefixtures("widget_crd")
@pytest.mark.parametrize(("spec", "expected"), [
    ("{replicas: 0, accelerator: nvidia}",
     "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"),
    ("{replicas: 1, accelerator: tpu}", 'spec.accelerator: Unsupported value: "tpu"'),
    ("{replicas: 1}", "spec.accelerator: Required value"),
    # A wrong type is caught even before validation, by server-side apply's typed merge.
    ('{replicas: "two", accelerator: cpu}', ".spec.replicas: expected numeric (int or float), got string"),
])
def test_custom_object_violating_its_schema_is_rejected(
    cluster: Cluster, namespace: str, spec: str, expected: str
) -> None:
    with pytest.raises(RuntimeError) as err:
        apply_yaml(cluster, widget("bad", spec), namespace)

    assert expected in str(err.value), str(err.value)
    assert "widgets" not in cluster.kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout


def test_builtin_object_violating_validation_is_rejected(cluster: Cluster, namespace: str) -> None:
    with pytest.raises(RuntimeError) as err:
        apply_yaml(cluster, """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: bad}
spec:
  replicas: -1
  serviceName: bad
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: other}}
    spec: {containers: [{name: c, image: x}]}
""", namespace)

    message = str(err.value)
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in message, message
    assert "`selector` does not match template `labels`" in message, message


# The TextGenerationService CRD itself, under a group of its own (so that it never collides with the chart's CRD
# that other modules install in the same session cluster): every CEL rule and pattern, on the real API server.
TGS_GROUP = "validation.e2e.textgen.dev"


def tgs_crd_copy() -> str:
    crd = yaml.safe_load((REPO_ROOT / "crds" / "textgen.dev_textgenerationservices.yaml").read_text())
    crd["metadata"] = {"name": f"{crd['spec']['names']['plural']}.{TGS_GROUP}"}
    crd["spec"]["group"] = TGS_GROUP
    for key in ("shortNames", "categories"):     # `tgs` belongs to the real CRD
        crd["spec"]["names"].pop(key, None)
    return str(yaml.safe_dump(crd))


@pytest.fixture(scope="module")
def tgs_crd(cluster: Cluster) -> Iterator[None]:
    name = f"textgenerationservices.{TGS_GROUP}"
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-", input=tgs_crd_copy())
    ext = kubernetes.client.ApiextensionsV1Api(cluster.api_client())
    wait_for(lambda: any(c.type == "Established" and c.status == "True"
                         for c in (ext.read_custom_resource_definition(name).status.conditions or [])),
             30, "the TGS CRD copy Established")
    yield
    cluster.kubectl("delete", "crd", name, "--wait=false")


def tgs(name: str, **spec: Any) -> str:
    body = {"apiVersion": f"{TGS_GROUP}/v1alpha1", "kind": "TextGenerationService", "metadata": {"name": name},
            "spec": {"model": {"id": "org/model"}, "accelerator": {"type": "cpu"}, "rollout": {}, **spec}}
    return str(yaml.safe_dump(body))


@pytest.mark.usefixtures("tgs_crd")
@pytest.mark.parametrize("spec", [
    {"speculate": 0},
    {"limits": {"maxWaitingTokens": 0, "waitingServedRatio": 0}},
    {"kvCacheMemory": "512Mi"},
    {"kvCacheMemory": "1.5Gi"},
    {"accelerator": {"type": "gaudi", "count": 8}, "gaudi": {"batchBucketSize": 8}},
    {"model": {"id": "org/model", "trustRemoteCode": True, "dtype": "bfloat16"}},
    {"speculate": 2, "rollout": {"maxSurge": 2, "autoRollback": True, "paused": True}},
    {"rollout": {"maxSurge": 0, "maxUnavailable": 1}},
], ids=["speculate-0", "zero-limits", "kv-mi", "kv-fraction", "gaudi-8", "trust-remote-code", "speculate-surge",
        "no-surge"])
def test_tgs_specs_the_server_can_serve_are_accepted(cluster: Cluster, namespace: str, spec: dict[str, Any]) -> None:
    [obj] = apply_yaml(cluster, tgs("ok", **spec), namespace)
    given = {"speculate": spec.get("speculate", 0), "maxSurge": spec.get("rollout", {}).get("maxSurge", 1)}
    applied = {"speculate": obj["spec"]["speculate"], "maxSurge": obj["spec"]["rollout"]["maxSurge"]}
    assert applied == given and obj["spec"]["replicas"] == 1, "the CRD's defaults are applied, given values kept"


@pytest.mark.usefixtures("tgs_crd")
@pytest.mark.parametrize("spec, message", [
    ({"model": {"id": "m", "quantize": "gptq"}},
     "spec.model.quantize: gptq is not implemented by the server yet"),
    ({"model": {"id": "m", "quantize": "int3"}}, 'spec.model.quantize: Unsupported value: "int3"'),
    ({"speculate": -1}, "spec.speculate: Invalid value: -1"),
    ({"kvCacheMemory": "4GB"}, "spec.kvCacheMemory: Invalid value"),
    ({"limits": {"maxWaitingTokens": -1}}, "spec.limits.maxWaitingTokens: Invalid value: -1"),
    ({"limits": {"maxInputTokens": 2048, "maxTotalTokens": 2048}}, "maxTotalTokens must be greater"),
    ({"limits": {"maxInputTokens": 2048, "maxBatchPrefillTokens": 1024}}, "maxBatchPrefillTokens must be at least"),
    ({"limits": {"maxTotalTokens": 2048, "maxBatchTotalTokens": 1024}}, "maxBatchTotalTokens must be at least"),
    ({"accelerator": {"type": "gaudi", "count": 3}}, "Gaudi shards must be 1, 2, 4 or 8"),
    ({"gaudi": {"batchBucketSize": 8}}, "spec.gaudi is only valid with spec.accelerator.type: gaudi"),
    ({"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "metric": {"type": "External", "name": "q"}}},
     "autoscaling.metric.averageValue is required"),
    ({"replicas": 3, "autoscaling": {"minReplicas": 5, "maxReplicas": 4}}, "minReplicas must not exceed"),
    ({"cache": {"mode": "Shared"}}, "cache.mode Shared needs cache.existingClaim"),
    ({"cache": {"mode": "PerReplica", "existingClaim": "x"}}, "cache.existingClaim is only used with"),
    ({"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "metric": {"type": "Pods"}}},
     "autoscaling.metric.name is required with type Pods or External"),
    ({"rollout": {"maxSurge": 0}}, "rollout.maxSurge and rollout.maxUnavailable are both 0"),
], ids=["quantize", "quantize-unknown", "speculate", "kv-pattern", "waiting-negative", "total-vs-input",
        "prefill-vs-input", "batch-total-vs-total", "gaudi-count", "gaudi-on-cpu", "autoscaling-target",
        "autoscaling-order", "shared-needs-claim", "claim-needs-shared", "autoscaling", "no-surge-no-unavailable"])
def test_tgs_specs_the_server_cannot_serve_are_refused_with_the_reason(cluster: Cluster, namespace: str,
                                                                       spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeError) as err:
        apply_yaml(cluster, tgs("bad", **spec), namespace)
    assert message in str(err.value), str(err.value)
