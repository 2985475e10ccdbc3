"""One container's life as the kubelet runs it: start, probes, exit, restart with back-off, graceful kill.

Its `status` dict is the container's entry of pod.status.containerStatuses, kept kubelet-shaped (state,
lastState.terminated with exitCode/reason/message, restartCount, started, ready, CrashLoopBackOff).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from textgen_node_agent.envs import ContainerConfigError, build_argv
from textgen_node_agent.kube import background
from textgen_node_agent.launch import Identity, build_container_argv, build_exec_argv, build_identity
from textgen_node_agent.nodes import now_rfc3339
from textgen_node_agent.probes import ExecTarget, probe_once, setting
from textgen_node_agent.restarts import (
    BACKOFF_RESET_AFTER_SECONDS, backoff_delay, exit_code_of, should_restart, termination_message,
)
from textgen_node_agent.sandbox import Sandbox

log = logging.getLogger("node-agent.container")
MIN_GRACE_AFTER_PRESTOP = 2.0   # the kubelet's minimumGracePeriodInSeconds


class PodContext(Protocol):
    pod: dict[str, Any]
    sandbox: Sandbox | None
    volume_paths: dict[str, Path]
    log_dir: Path
    terminating: asyncio.Event

    async def resolve_env(self, container: dict[str, Any]) -> dict[str, str]: ...
    def event(self, reason: str, message: str, kind: str = "Normal", container: str | None = None) -> None: ...
    def changed(self) -> None: ...


class ContainerRunner:
    """Runs one container of a pod until the pod terminates (or, without restarts, until it exits)."""

    def __init__(self, ctx: PodContext, spec: dict[str, Any], restart_count: int = 0) -> None:
        self.ctx, self.spec, self.name = ctx, spec, spec["name"]
        self.process: asyncio.subprocess.Process | None = None
        self.identity: Identity | None = None
        self.env: dict[str, str] = {}
        self.num_backoffs = 0
        self.killing: str | None = None    # why the agent is killing the running process
        self.status: dict[str, Any] = {
            "name": self.name, "image": spec.get("image", ""), "imageID": "", "restartCount": restart_count,
            "ready": False, "started": False, "state": {"waiting": {"reason": "ContainerCreating"}}}

    def _sandbox(self) -> Sandbox:
        assert self.ctx.sandbox is not None, "containers start only once the pod's sandbox exists"
        return self.ctx.sandbox

    def _set(self, **fields: Any) -> None:
        self.status.update(fields)
        self.ctx.changed()

    async def run(self) -> None:
        """The restart loop; returns when the pod terminates or the container stays terminated."""
        while not self.ctx.terminating.is_set():
            started = await self._start()
            if not started:
                await self._sleep_unless_terminating(2.0)
                continue
            terminated, ran_for = await self._wait_exit()
            policy = self.ctx.pod["spec"].get("restartPolicy", "Always")
            if self.ctx.terminating.is_set() or not should_restart(policy, terminated["exitCode"]):
                self._set(state={"terminated": terminated}, ready=False, started=False)
                return
            self.num_backoffs = 0 if ran_for > BACKOFF_RESET_AFTER_SECONDS else self.num_backoffs
            delay = backoff_delay(self.num_backoffs)
            self.num_backoffs += 1
            self._set(lastState={"terminated": terminated}, ready=False, started=False,
                      state={"terminated": terminated})
            if delay:
                pod = self.ctx.pod["metadata"]
                message = (f"back-off {delay:g}s restarting failed container={self.name} "
                           f"pod={pod['name']}_{pod['namespace']}({pod['uid']})")
                self._set(state={"waiting": {"reason": "CrashLoopBackOff", "message": message}})
                self.ctx.event("BackOff", "Back-off restarting failed container "
                               f"{self.name} in pod {pod['name']}_{pod['namespace']}({pod['uid']})", "Warning", self.name)
                await self._sleep_unless_terminating(delay)
            if not self.ctx.terminating.is_set():
                self.status["restartCount"] += 1

    async def _sleep_unless_terminating(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.ctx.terminating.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def log_path(self) -> Path:
        path: Path = self.ctx.log_dir / self.name / f"{self.status['restartCount']}.log"
        return path

    def message_file(self) -> Path:
        path: Path = self.ctx.log_dir / self.name / "termination-log"
        return path

    async def _start(self) -> bool:
        path = self.log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.message_file().write_bytes(b"")
        os.chmod(self.message_file(), 0o666)
        ready_r, ready_w = os.pipe()
        try:
            self.identity = build_identity(self.ctx.pod["spec"], self.spec)
            self.env = await self.ctx.resolve_env(self.spec)
            self.env["HOME"] = self.env.get("HOME") or self.identity.home
            argv = build_container_argv(self._sandbox().nsenter_prefix(), self._with_message_mount(),
                                        self.ctx.volume_paths, self.identity, build_argv(self.spec, self.env),
                                        ready_fd=ready_w)
        except Exception as exc:   # ContainerConfigError, or the API failing while reading a Secret: retried
            os.close(ready_r)
            os.close(ready_w)
            self._set(state={"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}})
            self.ctx.event("Failed", f"Error: {exc}", "Warning", self.name)
            return False
        try:
            with path.open("ab") as out:
                self.process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    env=self.env, start_new_session=True, pass_fds=(ready_w,))
        finally:
            os.close(ready_w)
        await asyncio.to_thread(_read_to_eof, ready_r)   # the mounts are done (or the setup failed)
        self.killing = None
        self._set(state={"running": {"startedAt": now_rfc3339()}}, started=False, ready=False,
                  containerID=f"local-process://{self.process.pid}")
        self.ctx.event("Started", f"Started container {self.name}", container=self.name)
        return True

    def _with_message_mount(self) -> dict[str, Any]:
        """The container spec plus its terminationMessagePath, bind-mounted from a file under the log dir."""
        spec = dict(self.spec)
        target = spec.get("terminationMessagePath") or "/dev/termination-log"
        self.ctx.volume_paths["__termination-log__" + self.name] = self.message_file()
        spec["volumeMounts"] = [*(spec.get("volumeMounts") or []),
                                {"name": "__termination-log__" + self.name, "mountPath": target}]
        return spec

    async def _wait_exit(self) -> tuple[dict[str, Any], float]:
        assert self.process is not None
        started_at, start = self.status["state"]["running"]["startedAt"], time.monotonic()
        probes = asyncio.create_task(self._probe_all())
        returncode = await self.process.wait()
        probes.cancel()
        _kill_group(self.process.pid)   # strays of this container (the runtime kills its whole cgroup)
        code = exit_code_of(returncode)
        terminated: dict[str, Any] = {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started_at,
            "finishedAt": now_rfc3339(), "containerID": self.status.get("containerID")}
        message = termination_message(self.spec.get("terminationMessagePolicy", "File"), code,
                                      self.message_file(), self.log_path())
        if message:
            terminated["message"] = message
        return terminated, time.monotonic() - start

    # ---- probes ----
    async def _probe_all(self) -> None:
        """postStart hook, startupProbe until it succeeds, then readiness and liveness side by side (the
        kubelet's order)."""
        post_start = (self.spec.get("lifecycle") or {}).get("postStart")
        if post_start and not await self._run_hook(post_start, self.grace_seconds(), "PostStart"):
            # The kubelet kills a container whose PostStart hook failed; it restarts by its restartPolicy.
            background(self.kill(self.grace_seconds(), f"FailedPostStartHook: container {self.name}"))
            return
        startup = self.spec.get("startupProbe")
        if startup and not await self._probe_loop("Startup", startup, stop_on_success=True):
            return
        self._set(started=True)
        readiness, liveness = self.spec.get("readinessProbe"), self.spec.get("livenessProbe")
        if not readiness:
            self._set(ready=True)
        loops = [self._probe_loop("Readiness", readiness)] if readiness else []
        loops += [self._probe_loop("Liveness", liveness)] if liveness else []
        if loops:
            await asyncio.gather(*loops)

    async def _probe_loop(self, kind: str, probe: dict[str, Any], stop_on_success: bool = False) -> bool:
        """Probes every periodSeconds; acts when success/failure thresholds are reached. Startup and liveness
        failures kill the container (it restarts by its restartPolicy); readiness sets `ready`."""
        await asyncio.sleep(setting(probe, "initialDelaySeconds"))
        successes = failures = 0
        target = ExecTarget(self.exec_in_container)
        while True:
            ok, message = await probe_once(probe, self.spec, self._sandbox(), target)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if not ok:
                self.ctx.event("Unhealthy", f"{kind} probe failed: {message}", "Warning", self.name)
            if ok and successes >= setting(probe, "successThreshold"):
                if stop_on_success:
                    return True
                if kind == "Readiness" and not self.status["ready"]:
                    self._set(ready=True)
            if not ok and failures >= setting(probe, "failureThreshold"):
                if kind == "Readiness":
                    if self.status["ready"]:
                        self._set(ready=False)
                else:
                    background(self.kill(self.grace_seconds(probe),
                                                  f"Container {self.name} failed {kind.lower()} probe, will be restarted"))
                    return False
            await asyncio.sleep(setting(probe, "periodSeconds"))

    def grace_seconds(self, probe: dict[str, Any] | None = None) -> float:
        """terminationGracePeriodSeconds of the probe (when set) or of the pod (default 30)."""
        if probe and probe.get("terminationGracePeriodSeconds") is not None:
            return float(probe["terminationGracePeriodSeconds"])
        value = self.ctx.pod["spec"].get("terminationGracePeriodSeconds")
        return float(30 if value is None else value)

    async def exec_in_container(self, command: list[str], timeout: float) -> tuple[int, str]:
        """Runs `command` in the running container (exec probes, preStop); (exit code, output)."""
        if self.process is None or self.process.returncode is not None or self.identity is None:
            return 1, "container is not running"
        proc = await asyncio.create_subprocess_exec(
            *build_exec_argv(self.process.pid, self.identity, command), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            _kill_group(proc.pid)
            await proc.wait()
            raise
        return exit_code_of(proc.returncode or 0), output.decode(errors="replace")

    # ---- termination ----
    async def kill(self, grace: float, reason: str) -> None:
        """preStop hook, SIGTERM to the main process, SIGKILL once `grace` seconds have passed since the start
        (at least 2 s after the hook, as the kubelet grants). Returns when the process is gone."""
        process = self.process
        if process is None or process.returncode is not None or self.killing:
            return
        self.killing = reason
        self.ctx.event("Killing", reason, container=self.name)
        deadline = time.monotonic() + grace
        hook = ((self.spec.get("lifecycle") or {}).get("preStop")) or {}
        if hook and grace > 0:
            await self._run_hook(hook, grace, "PreStop")
        if process.returncode is None:
            _signal(process.pid, signal.SIGTERM)
        remaining = max(deadline - time.monotonic(), MIN_GRACE_AFTER_PRESTOP if hook else 0.0)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), remaining)
        except asyncio.TimeoutError:
            _kill_group(process.pid)
            await process.wait()

    async def _run_hook(self, hook: dict[str, Any], timeout: float, kind: str) -> bool:
        """A PostStart/PreStop handler (exec, httpGet, sleep); False, with a Failed<kind>Hook Event, if it failed."""
        try:
            if "exec" in hook:
                code, output = await self.exec_in_container(list(hook["exec"]["command"]), timeout)
                ok, message = code == 0, f"exit {code}: {output[-200:]}"
            elif "httpGet" in hook:
                probe = {"httpGet": hook["httpGet"], "timeoutSeconds": max(1, int(timeout))}
                ok, message = await probe_once(probe, self.spec, self._sandbox(), ExecTarget(self.exec_in_container))
            elif "sleep" in hook:
                await asyncio.sleep(min(float(hook["sleep"]["seconds"]), timeout))
                ok, message = True, ""
            else:
                ok, message = False, f"handler {sorted(hook)} is not supported by the node agent"
        except asyncio.TimeoutError:
            ok, message = False, f"did not finish in {timeout:g}s"
        if not ok:
            self.ctx.event(f"Failed{kind}Hook", f"{kind} hook failed: {message}", "Warning", self.name)
        return ok


def _read_to_eof(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    finally:
        os.close(fd)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
