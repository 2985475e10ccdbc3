"""The one place a rollout acts: deletes the pods the plan names, records its Events and its duration.

Everything else a rollout changes (the StatefulSet's template, replicas and annotations) goes out with the
reconciler's ordinary server-side apply of the StatefulSet that `step.plan_step` returns.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from textgen_operator.cache import ObjectCache
from textgen_operator.kube import ApiError, Kube
from textgen_operator.limits import PriorityLimit
from textgen_operator.metrics import ROLLOUT_SECONDS
from textgen_operator.plan import Urgency
from textgen_operator.rollout.model import Plan, Recorded

log = logging.getLogger("textgen_operator.rollout")
SendEvent = Callable[[str, str, str], Awaitable[None]]     # (type, reason, message)


async def act(kube: Kube, cache: ObjectCache, requests: PriorityLimit, namespace: str, plan: Plan,
              recorded: Recorded, now: float, send_event: SendEvent) -> None:
    """Deletes the plan's pods (uid precondition: a pod recreated meanwhile under the same name is not ours to
    delete), puts each answer (the pod with its deletionTimestamp) in the cache so that the next reconcile
    counts it as leaving even before its watch event arrives, then sends the step's Events."""
    for pod in plan.delete:
        try:
            async with requests.slot(Urgency.REPAIR):
                answer = await kube.delete_pod(namespace, pod.name, pod.uid)
        except ApiError as error:
            if error.status == 409:      # the uid precondition failed: that pod is gone already
                continue
            raise
        if answer is not None and answer.get("kind") == "Pod":
            cache.put(answer)
        log.info("rollout of %s: deleted pod %s (revision %s) for revision %s", namespace, pod.name,
                 pod.revision, plan.target)
    if plan.finished is not None and recorded.started is not None:
        ROLLOUT_SECONDS.labels(result=plan.finished).observe(max(0.0, now - recorded.started))
    for event_type, reason, message in plan.events:
        async with requests.slot(Urgency.EVENT):
            await send_event(event_type, reason, message)
