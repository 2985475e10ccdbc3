"""Authentication, RBAC and the audit log: what the operator e2e tests build on.

A ServiceAccount token minted through the TokenRequest API authenticates against the real API server; RBAC
denies it until a RoleBinding grants access; every write lands in the audit log with the writer's name.
"""

from __future__ import annotations

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from e2e.harness import Cluster, apply_yaml, wait_for


def client_with_token(cluster: Cluster, token: str) -> kubernetes.client.ApiClient:
    admin = cluster.api_client().configuration
    conf = kubernetes.client.Configuration()
    conf.host = admin.host
    conf.ssl_ca_cert = admin.ssl_ca_cert
    conf.api_key = {"authorization": f"Bearer {token}"}
    return kubernetes.client.ApiClient(conf)


def mint_token(cluster: Cluster, namespace: str, service_account: str) -> str:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    return str(core.create_namespaced_service_account_token(service_account, namespace, request).status.token)


def test_service_account_token_is_authorized_by_rbac_only(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: robot}\n", namespace)
    robot = kubernetes.client.CoreV1Api(client_with_token(cluster, mint_token(cluster, namespace, "robot")))

    with pytest.raises(ApiException) as denied:
        robot.create_namespaced_config_map(namespace, {"metadata": {"name": "by-robot"}})
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:robot" in denied.value.body

    apply_yaml(cluster, f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmaps}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [create, get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: robot-configmaps}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmaps}}
subjects: [{{kind: ServiceAccount, name: robot, namespace: {namespace}}}]
""", namespace)
    robot.create_namespaced_config_map(namespace, {"metadata": {"name": "by-robot"}})
    with pytest.raises(ApiException) as still_denied:
        robot.list_namespaced_pod(namespace)
    assert still_denied.value.status == 403


def test_writes_are_audited_with_the_writer(cluster: Cluster, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "audited"}})
    core.read_namespaced_config_map("audited", namespace)
    core.delete_namespaced_config_map("audited", namespace)

    def my_events() -> list[tuple[str, str]]:
        return [
            (e["verb"], e["user"]["username"]) for e in cluster.audit_events()
            if e.get("objectRef", {}).get("namespace") == namespace
            and e["objectRef"].get("resource") == "configmaps" and e["objectRef"].get("name") == "audited"
        ]

    # The log backend writes synchronously, but allow a moment for the file to be flushed.
    events = wait_for(lambda: len(my_events()) >= 2 and my_events(), 10, "2 audit events for configmap audited")
    assert events == [("create", "textgen-admin"), ("delete", "textgen-admin")]  # the read is not audited
