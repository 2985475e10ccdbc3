"""plan_applies: apply only what is missing or drifted; never what the API server merely defaulted."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from textgen_operator.builders import build_desired
from textgen_operator.config import OperatorConfig
from textgen_operator.limits import URGENT
from textgen_operator.plan import Urgency, apply_urgency, is_subset, object_key, plan_applies


@pytest.mark.parametrize("want, have, expected", [
    ({"a": 1}, {"a": 1, "b": 2}, True),                     # extra live fields (defaults, other managers)
    ({"a": 1}, {"a": 2}, False),                            # a managed field changed by hand
    ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 0}}, True),
    ({"l": [{"x": 1}]}, {"l": [{"x": 1, "y": 2}]}, True),    # list items gain defaulted fields
    ({"l": [1, 2]}, {"l": [1]}, False),                      # an item removed
    ({"l": [1]}, {"l": [1, 2]}, False),                      # an item added by hand to a list we own
    ({"m": "1Gi"}, {"m": "1024Mi"}, True),                    # canonicalised quantities
    ({"m": "8"}, {"m": 8}, True),
    ({"m": "500m"}, {"m": "0.5"}, True),
    ({"m": "1Gi"}, {"m": "1G"}, False),
    ({"f": True}, {"f": "true"}, False),
    ({"a": 1}, {}, False),
    ({"a": {}}, {"a": {}}, True),
])
def test_is_subset(want: Any, have: Any, expected: bool) -> None:
    assert is_subset(want, have) is expected


def live_copy(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any] | None]:
    """What the API server would return: our fields plus defaults and server-owned metadata."""
    live: dict[tuple[str, str], dict[str, Any] | None] = {}
    for obj in objs:
        copy_ = copy.deepcopy(obj)
        copy_["metadata"].update(uid="x", resourceVersion="7", managedFields=[{"manager": "textgen-operator"}])
        copy_.setdefault("status", {"observedGeneration": 1})
        live[object_key(obj)] = copy_
    return live


def test_nothing_to_do_when_everything_matches(make_tgs: Any) -> None:
    desired = build_desired(make_tgs(), OperatorConfig())
    assert plan_applies(desired, live_copy(desired)) == []


def test_missing_objects_are_applied_in_order(make_tgs: Any) -> None:
    desired = build_desired(make_tgs(), OperatorConfig())
    observed = live_copy(desired)
    observed[object_key(desired[0])] = None
    del observed[object_key(desired[-1])]
    assert plan_applies(desired, observed) == [desired[0], desired[-1]]


def test_a_hand_edit_of_a_managed_field_is_put_back(make_tgs: Any) -> None:
    desired = build_desired(make_tgs(), OperatorConfig())
    observed = live_copy(desired)
    sts = observed[object_key(desired[-1])]
    assert sts is not None
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest"
    assert plan_applies(desired, observed) == [desired[-1]]


def test_a_spec_change_reapplies_only_what_it_touches(make_tgs: Any) -> None:
    before = build_desired(make_tgs(), OperatorConfig())
    after = build_desired(make_tgs(replicas=3), OperatorConfig())
    assert [o["kind"] for o in plan_applies(after, live_copy(before))] == ["StatefulSet"]


@pytest.mark.parametrize("kind, exists, expected", [
    ("StatefulSet", False, Urgency.BRING_UP),        # the pods wait on it
    ("ServiceAccount", False, Urgency.BRING_UP),     # admission refuses the pods until it exists
    ("Service", False, Urgency.CREATE),
    ("PodDisruptionBudget", False, Urgency.CREATE),
    ("StatefulSet", True, Urgency.REPAIR),           # drift correction of an object that already serves
    ("Service", True, Urgency.REPAIR),
])
def test_apply_urgency(kind: str, exists: bool, expected: Urgency) -> None:
    obj = {"kind": kind, "metadata": {"name": "x"}}
    assert apply_urgency(obj, {"kind": kind} if exists else None) is expected


def test_urgency_order_puts_bring_up_first_and_events_last() -> None:
    assert sorted(Urgency) == [Urgency.BRING_UP, Urgency.CREATE, Urgency.REPAIR, Urgency.STATUS, Urgency.EVENT]
    assert Urgency.BRING_UP == URGENT     # only bring-up may use the limit's reserve
