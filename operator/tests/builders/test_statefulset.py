"""build_statefulset, table-driven: what each part of the spec turns into."""
from __future__ import annotations

from typing import Any

import pytest

from textgen_operator.builders import build_statefulset
from textgen_operator.config import OperatorConfig
from textgen_operator.names import ANNOTATION_TEMPLATE_HASH

CONFIG = OperatorConfig(image_nvidia="img/cuda:1", image_gaudi="img/gaudi:1", image_cpu="img/cpu:1")


def pod_of(sts: dict[str, Any]) -> dict[str, Any]:
    return dict(sts["spec"]["template"]["spec"])


def container_of(sts: dict[str, Any]) -> dict[str, Any]:
    return dict(pod_of(sts)["containers"][0])


def env_of(sts: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_of(sts).get("env", [])}


@pytest.mark.parametrize("accelerator, device, resource, taint, image, caps", [
    ({"type": "nvidia", "count": 4}, "cuda", "nvidia.com/gpu", "nvidia.com/gpu", "img/cuda:1", None),
    ({"type": "gaudi", "count": 8}, "hpu", "habana.ai/gaudi", "habana.ai/gaudi", "img/gaudi:1", None),
    ({"type": "cpu", "count": 1}, "cpu", None, None, "img/cpu:1", None),
])
def test_accelerator_devices_taints_images_and_capabilities(make_tgs: Any, accelerator: dict[str, Any], device: str,
                                                            resource: str | None, taint: str | None,
                                                            image: str, caps: list[str] | None) -> None:
    sts = build_statefulset(make_tgs(accelerator=accelerator), CONFIG)
    container = container_of(sts)
    args = container["args"]
    assert args[args.index("--num-shard") + 1] == str(accelerator["count"])
    assert args[args.index("--device") + 1] == device
    assert container["image"] == image
    requests = container.get("resources", {}).get("requests", {})
    if resource:
        assert requests[resource] == container["resources"]["limits"][resource] == str(accelerator["count"])
        assert {"key": taint, "operator": "Exists", "effect": "NoSchedule"} in pod_of(sts)["tolerations"]
    else:
        assert not any("/" in k for k in requests) and "tolerations" not in pod_of(sts)
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"] and security["capabilities"].get("add") == caps
    assert security["allowPrivilegeEscalation"] is False and pod_of(sts)["securityContext"]["runAsNonRoot"]


@pytest.mark.parametrize("count, lazy", [(1, False), (2, True), (8, True)])
def test_gaudi_environment(make_tgs: Any, count: int, lazy: bool) -> None:
    tgs = make_tgs(accelerator={"type": "gaudi", "count": count},
                   gaudi={"batchBucketSize": 32, "prefillBatchBucketSize": 2, "padSequenceToMultipleOf": 256,
                          "hpuGraphs": True, "limitHpuGraphs": False, "flashAttention": True,
                          "quantConfig": "/q/maxabs.json"})
    sts = build_statefulset(tgs, CONFIG)
    env = env_of(sts)
    assert env["OMPI_MCA_btl_vader_single_copy_mechanism"] == "none"
    assert ("PT_HPU_ENABLE_LAZY_COLLECTIVES" in env) is lazy
    assert env["BATCH_BUCKET_SIZE"] == "32" and env["PREFILL_BATCH_BUCKET_SIZE"] == "2"
    assert env["PAD_SEQUENCE_TO_MULTIPLE_OF"] == "256" and env["QUANT_CONFIG"] == "/q/maxabs.json"
    assert env["ENABLE_HPU_GRAPH"] == "true" and env["LIMIT_HPU_GRAPH"] == "false"
    assert env["USE_FLASH_ATTENTION"] == "true"
    assert "HABANA_VISIBLE_DEVICES" not in env, "devices come from the device plugin"
    resources = container_of(sts)["resources"]
    assert resources["requests"]["hugepages-2Mi"] == resources["limits"]["hugepages-2Mi"] == f"{count}Gi"


def test_limits_become_tgi_flags_and_extra_args_come_last(make_tgs: Any) -> None:
    tgs = make_tgs(limits={"maxInputTokens": 1024, "maxTotalTokens": 2048, "maxBatchPrefillTokens": 4096,
                           "maxBatchTotalTokens": 65536, "maxBatchSize": 256, "maxConcurrentRequests": 512,
                           "maxWaitingTokens": 7, "waitingServedRatio": 1.2},
                   model={"id": "m/x", "revision": "abc", "dtype": "bfloat16", "trustRemoteCode": True},
                   kvCacheMemory="4Gi", args=["--json-output"])
    args = container_of(build_statefulset(tgs, CONFIG))["args"]
    pairs = dict(zip(args[::1], args[1::1]))
    assert pairs["--max-input-tokens"] == "1024" and pairs["--max-total-tokens"] == "2048"
    assert pairs["--max-batch-prefill-tokens"] == "4096" and pairs["--max-batch-total-tokens"] == "65536"
    assert pairs["--max-batch-size"] == "256" and pairs["--max-concurrent-requests"] == "512"
    assert pairs["--max-waiting-tokens"] == "7" and pairs["--waiting-served-ratio"] == "1.2"
    assert pairs["--model-id"] == "m/x" and pairs["--revision"] == "abc" and pairs["--dtype"] == "bfloat16"
    assert pairs["--port"] == "80" and pairs["--kv-cache-memory"] == "4Gi" and "--trust-remote-code" in args
    assert "--speculate" not in args and "--quantize" not in args, "unset (0) fields emit nothing"
    assert args[-1] == "--json-output"


@pytest.mark.parametrize("limits, flag, value", [
    ({"maxWaitingTokens": 0}, "--max-waiting-tokens", "0"),       # 0 is a value, not "unset"
    ({"waitingServedRatio": 0}, "--waiting-served-ratio", "0.0"),
])
def test_zero_limits_are_passed_not_dropped(make_tgs: Any, limits: dict[str, Any], flag: str, value: str) -> None:
    args = container_of(build_statefulset(make_tgs(limits=limits), CONFIG))["args"]
    assert args[args.index(flag) + 1] == value


def test_token_comes_from_the_secret_never_inline(make_tgs: Any) -> None:
    tgs = make_tgs(model={"id": "m", "tokenSecretRef": {"name": "hf", "key": "tok"}})
    env = env_of(build_statefulset(tgs, CONFIG))
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "tok"}}


@pytest.mark.parametrize("warmup, failures", [(600, 60), (1800, 180), (15, 2)])
def test_probes_and_drain(make_tgs: Any, warmup: int, failures: int) -> None:
    tgs = make_tgs(rollout={"warmupTimeoutSeconds": warmup}, drain={"gracePeriodSeconds": 90})
    sts = build_statefulset(tgs, CONFIG)
    container = container_of(sts)
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= warmup
    assert startup["failureThreshold"] == failures
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert container["ports"] == [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
    # The drain gets its full time: preStop sleep (5) + drain (90) + shard stop margin (15).
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert container["args"][container["args"].index("--graceful-termination-timeout") + 1] == "90"
    assert pod_of(sts)["terminationGracePeriodSeconds"] == 110


@pytest.mark.parametrize("cache, volume, claims", [
    ({"mode": "None", "size": "20Gi"}, {"emptyDir": {"sizeLimit": "20Gi"}}, 0),
    ({"mode": "Shared", "existingClaim": "weights"}, {"persistentVolumeClaim": {"claimName": "weights"}}, 0),
    ({"mode": "PerReplica", "size": "500Gi", "storageClassName": "fast"}, None, 1),
])
def test_model_cache_modes(make_tgs: Any, cache: dict[str, Any], volume: dict[str, Any] | None,
                           claims: int) -> None:
    sts = build_statefulset(make_tgs(cache=cache), CONFIG)
    volumes = {v["name"]: v for v in pod_of(sts)["volumes"]}
    templates = sts["spec"].get("volumeClaimTemplates", [])
    assert len(templates) == claims
    if volume is None:
        assert "model-cache" not in volumes
        assert templates[0]["metadata"]["name"] == "model-cache"
        assert templates[0]["spec"]["resources"]["requests"]["storage"] == "500Gi"
        assert templates[0]["spec"]["storageClassName"] == "fast"
    else:
        assert {k: v for k, v in volumes["model-cache"].items() if k != "name"} == volume
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("count, size, expected", [(1, None, "1Gi"), (8, None, "8Gi"), (2, "16Gi", "16Gi")])
def test_shared_memory_size(make_tgs: Any, count: int, size: str | None, expected: str) -> None:
    spec: dict[str, Any] = {"accelerator": {"type": "nvidia", "count": count}}
    if size:
        spec["sharedMemorySize"] = size
    volumes = {v["name"]: v for v in pod_of(build_statefulset(make_tgs(**spec), CONFIG))["volumes"]}
    assert volumes["shm"]["emptyDir"]["sizeLimit"] == expected


def test_scheduling_fields_pass_through_and_our_labels_win(make_tgs: Any) -> None:
    tgs = make_tgs(scheduling={"nodeSelector": {"zone": "a"}, "priorityClassName": "high",
                               "runtimeClassName": "nvidia",
                               "tolerations": [{"key": "x", "operator": "Exists"}],
                               "affinity": {"podAntiAffinity": {}}},
                   podLabels={"team": "ml", "app.kubernetes.io/name": "spoof"}, podAnnotations={"a": "b"})
    sts = build_statefulset(tgs, CONFIG)
    pod = pod_of(sts)
    assert pod["nodeSelector"] == {"zone": "a"} and pod["priorityClassName"] == "high"
    assert pod["runtimeClassName"] == "nvidia" and pod["affinity"] == {"podAntiAffinity": {}}
    assert {"key": "x", "operator": "Exists"} in pod["tolerations"]
    meta = sts["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "ml" and meta["labels"]["app.kubernetes.io/name"] == "textgen"
    assert meta["annotations"]["a"] == "b"
    assert sts["spec"]["selector"]["matchLabels"].items() <= meta["labels"].items()


def test_template_hash_is_stable_and_follows_the_spec(make_tgs: Any) -> None:
    def digest(**spec: Any) -> str:
        return str(build_statefulset(make_tgs(**spec), CONFIG)["spec"]["template"]["metadata"]["annotations"][
            ANNOTATION_TEMPLATE_HASH])

    assert digest() == digest()
    assert digest() != digest(limits={"maxInputTokens": 10})
    assert digest() == digest(replicas=5), "replicas is not part of the pod template"


def test_owner_reference_and_operator_driven_update(make_tgs: Any) -> None:
    sts = build_statefulset(make_tgs(replicas=3), CONFIG)
    ref = sts["metadata"]["ownerReferences"][0]
    assert ref["kind"] == "TextGenerationService" and ref["uid"] == "uid-1" and ref["controller"] is True
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "demo-headless"
    # The operator's rollout replaces pods (tests/rollout/); the controller must never stop one by itself.
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
