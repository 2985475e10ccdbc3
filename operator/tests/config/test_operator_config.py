"""parse_config: flags, environment fallbacks and their errors."""
from __future__ import annotations

import pytest

from textgen_operator.config import OperatorConfig, parse_config


def test_defaults_are_cluster_wide_with_peering() -> None:
    config = parse_config([], {})
    assert config.clusterwide and config.peering_name == "textgen-operator"
    assert config.liveness_port == 8080 and config.metrics_port == 9090 and config.log_format == "json"


def test_flags_and_environment() -> None:
    config = parse_config(["--namespace", "a", "--namespace", "b", "--standalone", "--metrics-port", "0"],
                          {"TEXTGEN_IMAGE_GAUDI": "my/gaudi:2", "TEXTGEN_LOG_FORMAT": "text"})
    assert config.namespaces == ("a", "b") and not config.clusterwide and config.peering_name is None
    assert config.metrics_port is None and config.image_for("gaudi") == "my/gaudi:2"
    assert config.log_format == "text"
    assert parse_config([], {"TEXTGEN_NAMESPACES": "x, y"}).namespaces == ("x", "y")


def test_bad_values_say_what_to_do() -> None:
    with pytest.raises(SystemExit, match="TEXTGEN_LIVENESS_PORT='abc' is not a port number"):
        parse_config([], {"TEXTGEN_LIVENESS_PORT": "abc"})
    with pytest.raises(ValueError, match="unknown accelerator type 'tpu'"):
        OperatorConfig().image_for("tpu")


def test_concurrency_flags() -> None:
    config = parse_config(["--max-requests-in-flight", "40"], {"TEXTGEN_MAX_CONCURRENT_RECONCILES": "9"})
    assert config.max_requests_in_flight == 40 and config.max_concurrent_reconciles == 9
    assert parse_config([], {}).max_requests_in_flight == 128
    with pytest.raises(SystemExit, match="--max-requests-in-flight=0: must be at least 1"):
        parse_config(["--max-requests-in-flight", "0"], {})
