"""Fault verbs for game days (``bosh-lab fault``, ``GET/POST/DELETE /faults``): each one breaks one thing the way
it breaks in real life, is recorded (the store's ``faults`` table, so the list and undo survive a director
restart), is shown in ``watch`` (a ``fault`` event on inject and on undo) and can be undone.

    fail-job INSTANCE [--job J]   the job's start program made unexecutable and its process killed: monit cannot
                                  restart it, get_state says ``failing``. Undo: mode restored, ``monit start``
    slow-drain INSTANCE --seconds N   each job's ``bin/drain`` wrapped to sleep N s first (a drain that prints 0 is
                                  added where a job has none). Lasts until undone or until an apply replaces
                                  /var/vcap/jobs. Undo: the scripts put back
    kill-agent INSTANCE           ``sv force-stop /etc/service/agent``: the VM runs, its agent is gone. Undo: ``sv up``
    pause-blobstore               ``docker pause`` of the lab's blobstore (the CPI's ``pause_service``). Undo: unpause
    cut-nats INSTANCE             the agent's NATS user suspended (NatsAuth): nats-server closes its connection and
                                  refuses it. Undo: the user back
    delete-vm INSTANCE            the VM deleted through the CPI, the director's records kept: cloud-check finds
                                  ``missing_vm``. Undo: cloud-check's ``recreate_vm``, as a task

This module knows only what it is given: the instance lookups, the CPI, NatsAuth, a way to start the
recreate task and ``emit`` for the watch timeline. Every command run in a VM has a deadline (in the VM:
``timeout``; here: ``asyncio.wait_for``)."""
from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from boshlab.timeline import DIRECTOR, TimelineEvent

from .cpi import CPI, CPIError
from .nats_auth import NatsAuth, NatsAuthError
from .operations import BadRequest, Conflict, NotFound, Unavailable, pick_instances
from .store import Deployments, FaultRecords, FaultRow, InstanceRow, Instances
from .tasks import DeploymentLocked, TooManyTasks

log = logging.getLogger("director.faults")

KINDS = ("fail-job", "slow-drain", "kill-agent", "pause-blobstore", "cut-nats", "delete-vm")
INSTANCE_KINDS = ("fail-job", "slow-drain", "kill-agent", "cut-nats", "delete-vm")
EXEC_DEADLINE = 20            # seconds any one command in a VM may take
MAX_DRAIN_SECONDS = 3600
MARK = "# bosh-lab fault slow-drain"
MONITRC = "/var/vcap/bosh/etc/monitrc"
AGENT_SERVICE = "/etc/service/agent"

Emit = Callable[[TimelineEvent], object]     # the watch hub's publish (its return value is not used)
Recreate = Callable[[str, str], Awaitable[int]]     # (deployment, instance id) -> the cloud-check task's id

_CHECK_PROCESS = re.compile(r"^\s*check\s+process\s+(\S+)", re.IGNORECASE)
_PIDFILE = re.compile(r"\bpidfile\s+\"?([^\"\s]+)", re.IGNORECASE)
_START = re.compile(r"\bstart\s+program\s*=?\s*\"([^\"]*)\"", re.IGNORECASE)


@dataclass(frozen=True)
class MonitJob:
    """What a job's monit file says: its processes and pidfiles, and the program monit starts it with."""
    services: list[str]
    pidfiles: list[str]
    start_program: str | None


def parse_monit(text: str) -> MonitJob:
    services, pidfiles, program = [], [], None
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        if m := _CHECK_PROCESS.match(code):
            services.append(m.group(1))
        if m := _PIDFILE.search(code):
            pidfiles.append(m.group(1))
        if (m := _START.search(code)) and program is None:
            words = m.group(1).split()
            program = words[0] if words else None
    return MonitJob(services, pidfiles, program)


def job_names(row: InstanceRow) -> list[str]:
    spec = row.apply_spec or {}
    job = spec.get("job") or {}
    names = [str(t.get("name")) for t in job.get("templates") or [] if isinstance(t, dict) and t.get("name")]
    if not names and job.get("template"):
        names = [str(job["template"])]
    return names


def short_name(row: InstanceRow) -> str:
    """``redis/0``: how the watch timeline names an instance."""
    return f"{row.group}/{row.index}"


def fault_json(row: FaultRow) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "deployment": row.deployment, "instance": row.instance,
            "instance_id": row.instance_id, "target": row.target, "state": row.state, "message": row.message,
            "created_at": row.created_at, "undone_at": row.undone_at, "undo_message": row.undo_message,
            "undo": f"bosh-lab fault undo {row.id}", "details": row.details}


class Faults:
    def __init__(self, records: FaultRecords, instances: Instances, deployments: Deployments, cpi: CPI,
                 nats_auth: NatsAuth, recreate: Recreate, emit: Emit, exec_deadline: float = EXEC_DEADLINE) -> None:
        self.records, self.instances, self.deployments = records, instances, deployments
        self.cpi, self.nats_auth, self.recreate, self.emit = cpi, nats_auth, recreate, emit
        self.exec_deadline = exec_deadline
        self._lock = asyncio.Lock()

    # --- queries -----------------------------------------------------------------------------------

    async def listing(self, include_undone: bool = False) -> list[dict[str, Any]]:
        rows = await (self.records.recent(200) if include_undone else self.records.active())
        return [fault_json(r) for r in rows]

    async def restore(self) -> None:
        """At start-up, before the NATS users are synced: agents cut off NATS stay cut off."""
        for row in await self.records.active():
            if row.kind == "cut-nats" and row.details.get("agent_id"):
                self.nats_auth.suspended.add(str(row.details["agent_id"]))

    # --- inject ------------------------------------------------------------------------------------

    async def inject(self, kind: str, deployment: str | None = None, instance: str | None = None,
                     job: str | None = None, seconds: float | None = None) -> dict[str, Any]:
        if kind not in KINDS:
            raise BadRequest(f"unknown fault kind {kind!r} (one of {', '.join(KINDS)})")
        row: InstanceRow | None = None
        if kind in INSTANCE_KINDS:
            if not deployment or not instance:
                raise BadRequest(f"{kind} needs a deployment and an instance (GROUP/INDEX or GROUP/ID)")
            row = await self._instance(deployment, instance)
            target = f"{deployment}/{row.group}/{row.id}"
        else:
            target = "blobstore"
        if kind == "slow-drain":
            if seconds is None or not 0 < seconds <= MAX_DRAIN_SECONDS:
                raise BadRequest(f"slow-drain needs seconds between 1 and {MAX_DRAIN_SECONDS}, got {seconds!r}")
        async with self._lock:
            for f in await self.records.active():
                if f.kind == kind and f.target == target:
                    raise Conflict(f"{kind} is already active on {f.instance or target} (fault {f.id}): "
                                   f"undo it first (bosh-lab fault undo {f.id})")
            fault_id = uuid.uuid4().hex[:8]
            if row is None:
                details, message = await self._pause_blobstore()
            else:
                details, message = await getattr(self, "_" + kind.replace("-", "_"))(row, job, seconds)
            await self.records.add(fault_id, kind, row.deployment if row else None, row.id if row else None,
                                   row.label if row else None, target, details, message)
            stored = await self.records.get(fault_id)
        assert stored is not None
        self._emit(stored, "injected", message, row)
        log.info("fault %s injected: %s", fault_id, message)
        return fault_json(stored)

    async def _instance(self, deployment: str, instance: str) -> InstanceRow:
        if await self.deployments.get(deployment) is None:
            raise NotFound(f"Deployment '{deployment}' doesn't exist")
        group, _, ref = instance.partition("/")
        if not group or not ref:
            raise BadRequest(f"instance must be GROUP/INDEX or GROUP/ID, got {instance!r}")
        return pick_instances(await self.instances.of_deployment(deployment), deployment, group, ref)[0]

    async def _running_vm(self, row: InstanceRow) -> str:
        if not row.vm_cid:
            raise Conflict(f"{row.label} has no VM")
        status = await self.cpi.vm_status(row.vm_cid, tail=0)
        if not status.exists:
            raise Conflict(f"{row.label}: its VM {row.vm_cid[:12]} has no container (deleted? "
                           f"bosh-lab cloud-check -d {row.deployment})")
        if not status.running:
            raise Conflict(f"{row.label}: the container of its VM {row.vm_cid[:12]} is not running ({status.status})")
        return row.vm_cid

    async def _sh(self, cid: str, label: str, script: str) -> str:
        """Run a shell script in the VM with a deadline; its output (Unavailable when it fails)."""
        cmd = ["timeout", str(int(self.exec_deadline)), "sh", "-c", script]
        try:
            rc, out = await asyncio.wait_for(self.cpi.exec(cid, cmd), self.exec_deadline + 5)
        except TimeoutError:
            raise Unavailable(f"{label}: a command in its VM did not finish within {self.exec_deadline:g} s") from None
        except CPIError as e:
            raise Unavailable(f"{label}: {e}") from None
        if rc != 0:
            raise Unavailable(f"{label}: a command in its VM exited {rc}"
                              + (" (timed out)" if rc == 124 else "") + f": {out.strip()[-500:]}")
        return out

    async def _sv(self, cid: str, label: str, action: str) -> None:
        cmd = ["sv", action, AGENT_SERVICE]
        try:
            rc, out = await asyncio.wait_for(self.cpi.exec(cid, cmd), self.exec_deadline)
        except TimeoutError:
            raise Unavailable(f"{label}: `sv {action}` did not finish within {self.exec_deadline:g} s") from None
        except CPIError as e:
            raise Unavailable(f"{label}: {e}") from None
        if rc != 0:
            raise Unavailable(f"{label}: `sv {action} {AGENT_SERVICE}` exited {rc}: {out.strip()[-500:]}")

    async def _fail_job(self, row: InstanceRow, job: str | None, seconds: float | None) -> tuple[dict[str, Any], str]:
        jobs = job_names(row)
        if job is None:
            if not jobs:
                raise Conflict(f"{row.label} runs no job")
            job = jobs[0]
        elif job not in jobs:
            raise NotFound(f"{row.label} has no job '{job}' (its jobs: {', '.join(jobs) or 'none'})")
        cid = await self._running_vm(row)
        q = shlex.quote(job)
        text = await self._sh(cid, row.label, f"for f in /var/vcap/monit/job/*_{q}.monitrc; do "
                                              f'[ -f "$f" ] && cat "$f"; done; true')
        if not text.strip():
            text = await self._sh(cid, row.label, f"cat /var/vcap/jobs/{q}/monit 2>/dev/null; true")
        monit = parse_monit(text)
        if not monit.services:
            raise Conflict(f"{row.label}: job '{job}' has no monit process (no check process in its monit file)")
        program = monit.start_program
        if not program or not program.startswith("/var/vcap/"):
            raise Conflict(f"{row.label}: job '{job}' starts with {program or 'nothing'!r}, not a program of its own "
                           f"under /var/vcap: it cannot be made to fail")
        p = shlex.quote(program)
        kills = " ".join(shlex.quote(f) for f in monit.pidfiles)
        out = await self._sh(cid, row.label,
                             f"[ -f {p} ] || {{ echo 'no such file: '{p}; exit 3; }}; m=$(stat -L -c %a {p}) && "
                             f"chmod a-x {p} && for f in {kills or '/dev/null/none'}; do "
                             f'[ -f "$f" ] && kill -9 $(cat "$f") 2>/dev/null; done; echo "$m"')
        mode = out.strip().splitlines()[-1] if out.strip() else "755"
        if not re.fullmatch(r"[0-7]{3,4}", mode):
            mode = "755"
        details = {"vm_cid": cid, "job": job, "program": program, "mode": mode, "services": monit.services}
        return details, (f"fail-job {short_name(row)} ({row.deployment}): job '{job}' killed and its start program "
                         f"{program} made unexecutable: monit cannot restart it ({', '.join(monit.services)} failing)")

    async def _slow_drain(self, row: InstanceRow, job: str | None, seconds: float | None) -> tuple[dict[str, Any], str]:
        assert seconds is not None
        jobs = job_names(row)
        if job is not None:
            if job not in jobs:
                raise NotFound(f"{row.label} has no job '{job}' (its jobs: {', '.join(jobs) or 'none'})")
            jobs = [job]
        if not jobs:
            raise Conflict(f"{row.label} runs no job")
        cid = await self._running_vm(row)
        n = f"{seconds:g}"
        script = []
        for j in jobs:
            d = shlex.quote(f"/var/vcap/jobs/{j}/bin")
            script.append(
                f"d={d}; mkdir -p \"$d\" || exit 3; had=0; "
                f"if [ -e \"$d/drain\" ]; then mv \"$d/drain\" \"$d/drain.fault-orig\" || exit 3; had=1; fi; "
                f"printf '%s\\n' '#!/bin/sh' '{MARK}' 'sleep {n}' "
                f"'if [ -x \"$0.fault-orig\" ]; then exec \"$0.fault-orig\" \"$@\"; fi' 'echo 0' > \"$d/drain\" "
                f"&& chmod 755 \"$d/drain\" || exit 3; echo {shlex.quote(j)} $had")
        out = await self._sh(cid, row.label, "\n".join(script))
        had = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in jobs:
                had[parts[0]] = parts[1] == "1"
        details = {"vm_cid": cid, "jobs": jobs, "seconds": seconds, "had_drain": had}
        return details, (f"slow-drain {short_name(row)} ({row.deployment}): the drain of {', '.join(jobs)} sleeps "
                         f"{n} s more (until undone or the next apply replaces /var/vcap/jobs)")

    async def _kill_agent(self, row: InstanceRow, job: str | None, seconds: float | None) -> tuple[dict[str, Any], str]:
        cid = await self._running_vm(row)
        await self._sv(cid, row.label, "force-stop")
        return ({"vm_cid": cid, "agent_id": row.agent_id},
                f"kill-agent {short_name(row)} ({row.deployment}): its agent is stopped (sv force-stop), the VM runs on")

    async def _cut_nats(self, row: InstanceRow, job: str | None, seconds: float | None) -> tuple[dict[str, Any], str]:
        if not self.nats_auth.enabled:
            raise Conflict("this director has no per-agent NATS users (BOSH_LAB_NATS_AUTH_DIR is not set): "
                           "an agent cannot be cut off NATS")
        if not row.agent_id:
            raise Conflict(f"{row.label} has no VM")
        await self._running_vm(row)
        try:
            await self.nats_auth.suspend(row.agent_id)
        except NatsAuthError as e:
            raise Unavailable(f"{row.label}: suspending its NATS user: {e}") from None
        return ({"vm_cid": row.vm_cid, "agent_id": row.agent_id},
                f"cut-nats {short_name(row)} ({row.deployment}): its agent's NATS user is suspended: nats-server "
                f"closed its connection and refuses it")

    async def _delete_vm(self, row: InstanceRow, job: str | None, seconds: float | None) -> tuple[dict[str, Any], str]:
        if not row.vm_cid:
            raise Conflict(f"{row.label} has no VM")
        if not await self.cpi.has_vm(row.vm_cid):
            raise Conflict(f"{row.label}: its VM {row.vm_cid[:12]} has no container already")
        try:
            await asyncio.wait_for(self.cpi.delete_vm(row.vm_cid), self.exec_deadline + 10)
        except (CPIError, TimeoutError) as e:
            raise Unavailable(f"{row.label}: deleting its VM: {e or 'timed out'}") from None
        return ({"vm_cid": row.vm_cid, "agent_id": row.agent_id},
                f"delete-vm {short_name(row)} ({row.deployment}): VM {row.vm_cid[:12]} deleted behind the director's "
                f"back (cloud-check finds missing_vm)")

    async def _pause_blobstore(self) -> tuple[dict[str, Any], str]:
        try:
            await asyncio.wait_for(self.cpi.pause_service("blobstore", True), self.exec_deadline)
        except (CPIError, TimeoutError) as e:
            raise Unavailable(f"pausing the blobstore: {e or 'timed out'}") from None
        return {"service": "blobstore"}, "pause-blobstore: the blobstore is paused (requests hang until undone)"

    # --- undo --------------------------------------------------------------------------------------

    async def undo(self, fault_id: str) -> dict[str, Any]:
        async with self._lock:
            f = await self.records.get(fault_id)
            if f is None:
                raise NotFound(f"Fault '{fault_id}' doesn't exist")
            if f.state != "active":
                raise Conflict(f"fault {fault_id} ({f.kind} on {f.instance or f.target}) was undone already")
            row = await self.instances.get(f.instance_id) if f.instance_id else None
            message, task = await self._undo(f, row)
            await self.records.undone(f.id, message)
            stored = await self.records.get(f.id)
        assert stored is not None
        self._emit(stored, "undone", message, row)
        log.info("fault %s undone: %s", f.id, message)
        out = fault_json(stored)
        if task is not None:
            out["task"] = task
        return out

    async def undo_all(self) -> list[dict[str, Any]]:
        """Undo every active fault; one that cannot be undone is reported (``error``) and stays active."""
        out = []
        for f in await self.records.active():
            try:
                out.append(await self.undo(f.id))
            except (Unavailable, Conflict, NotFound, BadRequest, DeploymentLocked, TooManyTasks) as e:
                out.append({**fault_json(f), "error": str(e)})
        return out

    async def _undo(self, f: FaultRow, row: InstanceRow | None) -> tuple[str, int | None]:
        d = f.details
        who = f"{f.kind} {short_name(row) if row else f.instance or f.target}" + (f" ({f.deployment})" if f.deployment else "")
        if f.kind == "pause-blobstore":
            try:
                await asyncio.wait_for(self.cpi.pause_service("blobstore", False), self.exec_deadline)
            except (CPIError, TimeoutError) as e:
                raise Unavailable(f"unpausing the blobstore: {e or 'timed out'}") from None
            return "undone pause-blobstore: the blobstore runs again", None
        if f.kind == "cut-nats":
            try:
                await self.nats_auth.resume(str(d.get("agent_id")))
            except NatsAuthError as e:
                raise Unavailable(f"{who}: restoring its NATS user: {e}") from None
            return f"undone {who}: its agent's NATS user is back (the agent reconnects within seconds)", None
        if row is None:
            return f"undone {who}: the instance is gone, nothing to undo", None
        if f.kind == "delete-vm":
            if row.vm_cid and row.vm_cid != d.get("vm_cid"):
                return f"undone {who}: the instance has a new VM already ({row.vm_cid[:12]}): nothing to do", None
            task = await self.recreate(row.deployment, row.id)    # scan and fix: recreate_vm, or a VM for none
            return f"undone {who}: task {task} recreates its VM (cloud-check recreate_vm)", task
        if row.vm_cid != d.get("vm_cid") or not row.vm_cid or not await self.cpi.has_vm(row.vm_cid):
            return f"undone {who}: its VM {str(d.get('vm_cid'))[:12]} was replaced or deleted meanwhile: nothing to undo", None
        cid = row.vm_cid
        if f.kind == "kill-agent":
            await self._sv(cid, row.label, "up")
            return f"undone {who}: its agent runs again (sv up)", None
        if f.kind == "fail-job":
            p = shlex.quote(str(d.get("program")))
            mode = str(d.get("mode") or "755")
            starts = "; ".join(f"monit -c {MONITRC} start {shlex.quote(str(s))} >/dev/null 2>&1"
                               for s in d.get("services") or [])
            await self._sh(cid, row.label, f"[ -e {p} ] && chmod {shlex.quote(mode)} {p}; {starts or ':'}; true")
            return f"undone {who}: job '{d.get('job')}' can start again (monit starts it)", None
        if f.kind == "slow-drain":
            script = []
            for j in d.get("jobs") or []:
                dr = shlex.quote(f"/var/vcap/jobs/{j}/bin")
                script.append(f"d={dr}; if grep -qF {shlex.quote(MARK)} \"$d/drain\" 2>/dev/null; then "
                              f"if [ -e \"$d/drain.fault-orig\" ]; then mv -f \"$d/drain.fault-orig\" \"$d/drain\"; "
                              f"else rm -f \"$d/drain\"; fi; fi")
            await self._sh(cid, row.label, "\n".join(script) + "\ntrue")
            return f"undone {who}: its drain scripts are back as they were", None
        raise BadRequest(f"fault {f.id}: unknown kind {f.kind!r}")

    # --- the watch timeline ------------------------------------------------------------------------

    def _emit(self, f: FaultRow, action: str, text: str, row: InstanceRow | None) -> None:
        event: TimelineEvent = {
            "ts": time.time(), "kind": "fault", "src": DIRECTOR,
            "dst": short_name(row) if row else f.target, "deployment": f.deployment,
            "instance": short_name(row) if row else None, "instance_id": f.instance_id,
            "agent_id": (row.agent_id if row else None) or f.details.get("agent_id"), "text": text,
            "fault": {"id": f.id, "kind": f.kind, "target": f.target, "action": action}}
        try:
            self.emit(event)
        except Exception as e:  # noqa: BLE001 - the timeline must never break a fault verb
            log.warning("publishing fault event: %s", e)
