"""The API server enforces schemas: a CRD's OpenAPI schema and the built-in types' validation."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes.client
import pytest

from e2e.harness import Cluster, apply_yaml, wait_for

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
