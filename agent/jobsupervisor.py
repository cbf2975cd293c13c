"""Job supervision: the JobSupervisor interface and monit behind it (protocol.md §6).

monit 5.33 serves its HTTP API on 127.0.0.1:2822 with the credentials in ``/var/vcap/monit/monit.user``:

* ``GET /_status2?format=xml``: services, their status/monitor/pendingaction, the service groups, and the
  server's ``incarnation`` (it changes on every reload).
* ``POST /<service>`` ``action=start|stop|unmonitor``: 5.33 wants a CSRF token, the same value as cookie
  ``securitytoken`` and form field ``securitytoken``, and answers 302 (offline-images.md).

Only services in group ``vcap`` are the jobs' (every job's monit file must put its checks in that group).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from boshlab.contracts import ProcessState
from boshlab.httpauth import basic_auth

from . import httpclient
from .log import log
from .paths import Paths

VCAP_GROUP = "vcap"
MONIT_URL = "http://127.0.0.1:2822"
RELOAD_COMMAND = ("sv", "hup", "/etc/service/monit")


class JobSupervisorError(Exception):
    pass


class MonitUnavailable(JobSupervisorError):
    pass


# --- status ----------------------------------------------------------------------------------------

@dataclass
class MonitService:
    name: str
    status: int = 0
    monitor: int = 0          # 0 not monitored, 1 monitored, 2 initializing
    pending_action: int = 0
    status_message: str = ""
    uptime: int | None = None
    mem_kb: int = 0
    mem_percent: float = 0.0
    cpu_percent: float = 0.0

    @property
    def state(self) -> str:
        """Per-service state (AGENT monit status.go): unknown, starting, running or failing."""
        if self.monitor == 0:
            return "unknown"
        if self.monitor == 2:
            return "starting"
        return "running" if self.status == 0 else "failing"

    @property
    def busy(self) -> bool:
        """Still monitored or with an action pending (what ``stop`` waits out)."""
        return self.monitor != 0 or self.pending_action != 0


@dataclass
class MonitStatus:
    incarnation: str
    services: dict[str, MonitService] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def group(self, name: str = VCAP_GROUP) -> list[MonitService]:
        return [self.services[s] for s in self.groups.get(name, []) if s in self.services]


def _int(el: ET.Element | None, path: str, default: int = 0) -> int:
    text = el.findtext(path) if el is not None else None
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _float(el: ET.Element | None, path: str) -> float:
    text = el.findtext(path) if el is not None else None
    try:
        return float(text) if text is not None else 0.0
    except ValueError:
        return 0.0


def parse_status(xml: bytes | str) -> MonitStatus:
    """Parse monit's ``/_status2?format=xml`` (also the older form with ``<name>`` children)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise JobSupervisorError(f"monit status is not XML: {e}") from None
    incarnation = root.findtext("server/incarnation") or root.get("incarnation") or ""
    status = MonitStatus(incarnation=incarnation)
    for svc in root.iter("service"):
        if svc.find("status") is None:  # <servicegroup><service>NAME</service> entries
            continue
        name = svc.get("name") or svc.findtext("name") or ""
        uptime = svc.findtext("uptime")
        status.services[name] = MonitService(
            name=name, status=_int(svc, "status"), monitor=_int(svc, "monitor"),
            pending_action=_int(svc, "pendingaction"), status_message=svc.findtext("status_message") or "",
            uptime=int(uptime) if uptime and uptime.isdigit() else None,
            mem_kb=_int(svc, "memory/kilobytetotal"), mem_percent=_float(svc, "memory/percenttotal"),
            cpu_percent=_float(svc, "cpu/percenttotal"))
    for grp in root.iter("servicegroup"):
        status.groups[grp.get("name") or grp.findtext("name") or ""] = [
            s.text.strip() for s in grp.findall("service") if s.text and s.text.strip()]
    return status


def job_state(status: MonitStatus | None, stopped: bool) -> str:
    """§6.4: unknown (monit unreachable) > stopped (marker) > starting > failing > running (also: no jobs)."""
    if status is None:
        return "unknown"
    if stopped:
        return "stopped"
    states = [s.state for s in status.group()]
    if "starting" in states:
        return "starting"
    if any(st != "running" for st in states):
        return "failing"
    return "running"


def process_entry(svc: MonitService) -> ProcessState:
    """One ``processes`` entry of get_state (protocol.md §3)."""
    return {"name": svc.name, "state": svc.state, "uptime": {"secs": svc.uptime or 0},
            "mem": {"kb": svc.mem_kb, "percent": svc.mem_percent},
            "cpu": {"total": max(svc.cpu_percent, 0.0)}}  # monit says -1 until it has measured twice


# --- monit files -----------------------------------------------------------------------------------

_CHECK = re.compile(r"^\s*check\s", re.IGNORECASE)
_ONREBOOT = re.compile(r"\bonreboot\b", re.IGNORECASE)


def add_onreboot_nostart(monit: str) -> str:
    """Append ``onreboot nostart`` to every ``check`` block that sets no ``onreboot`` itself.

    Why: apply installs the job's monit file and reloads monit, but the job must not run before the
    ``start`` message. The 2013 agent added ``mode manual`` to each check for that; monit 5.33 still
    starts a newly loaded ``check process`` on reload despite ``mode manual``, while ``onreboot nostart``
    leaves it "not monitored" until ``POST action=start`` (checked, offline-images.md). Keeping the file
    installed at apply (rather than writing it at ``start``, as today's agent does) matches the deck's
    sequence and lets ``monit summary`` show the job, not monitored, between apply and start.
    """
    lines = monit.splitlines()
    starts = [i for i, line in enumerate(lines) if _CHECK.match(line)]
    for n, begin in reversed(list(enumerate(starts))):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        block = lines[begin:end]
        if any(_ONREBOOT.search(line.split("#", 1)[0]) for line in block):
            continue
        last = max(i for i in range(begin, end) if lines[i].strip() and not lines[i].lstrip().startswith("#"))
        lines.insert(last + 1, "  onreboot nostart")
    return "\n".join(lines) + "\n"


_CHECK_PROCESS = re.compile(r"^\s*check\s+process\s+(\S+)", re.IGNORECASE)
_PIDFILE = re.compile(r"\bpidfile\s+\"?([^\"\s]+)", re.IGNORECASE)


def monit_pidfiles(monitrc_dir: Path) -> dict[str, Path]:
    """``{service: pidfile}`` of the ``check process ... with pidfile ...`` blocks in the installed job files."""
    out: dict[str, Path] = {}
    for f in sorted(monitrc_dir.glob("*.monitrc")):
        name: str | None = None
        for line in f.read_text().splitlines():
            code = line.split("#", 1)[0]
            if _CHECK.match(code):
                m = _CHECK_PROCESS.match(code)
                name = m.group(1) if m else None
            pid = _PIDFILE.search(code)
            if name and pid:
                out[name] = Path(pid.group(1))
    return out


def process_alive(pidfile: Path | None) -> bool:
    """Whether the pid in ``pidfile`` is a live process (no pidfile known: assume it may be)."""
    if pidfile is None:
        return True
    try:
        os.kill(int(pidfile.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


# --- the interface ---------------------------------------------------------------------------------

class JobSupervisor(ABC):
    @abstractmethod
    async def status(self) -> MonitStatus | None:
        """The services, or None when the supervisor cannot be asked."""
    @abstractmethod
    def job_state(self, status: MonitStatus | None) -> str: ...
    @abstractmethod
    async def start(self) -> None: ...
    @abstractmethod
    async def stop_and_wait(self) -> None: ...
    @abstractmethod
    async def unmonitor(self) -> None: ...
    @abstractmethod
    async def reload(self) -> None: ...
    @abstractmethod
    def install_jobs(self, jobs: Sequence[tuple[str, str]]) -> None: ...


# --- monit -----------------------------------------------------------------------------------------

class MonitClient:
    """monit's HTTP API. The credentials are read from monit.user on every call (the agent owns the file)."""

    def __init__(self, paths: Paths, url: str = MONIT_URL, timeout: float = 10.0) -> None:
        self.paths = paths
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _auth(self) -> dict[str, str]:
        try:
            user, _, password = self.paths.monit_user.read_text().strip().partition(":")
        except OSError as e:
            raise MonitUnavailable(f"cannot read monit credentials {self.paths.monit_user}: {e.strerror}") from None
        return basic_auth(user, password)

    async def status(self) -> MonitStatus:
        try:
            r = await httpclient.request("GET", f"{self.url}/_status2?format=xml", headers=self._auth(),
                                         timeout=self.timeout)
        except (TimeoutError, OSError) as e:
            raise MonitUnavailable(f"monit is not reachable at {self.url}: {describe(e)}") from None
        if r.status != 200:
            raise MonitUnavailable(f"monit status answered {r.status}")
        return parse_status(r.body)

    async def action(self, service: str, action: str) -> None:
        token = secrets.token_hex(16)
        form = urlencode({"action": action, "securitytoken": token}).encode()
        try:
            r = await httpclient.request(
                "POST", f"{self.url}/{service}", body=form, timeout=self.timeout,
                headers={**self._auth(), "Cookie": f"securitytoken={token}",
                         "Content-Type": "application/x-www-form-urlencoded"})
        except (TimeoutError, OSError) as e:
            raise MonitUnavailable(f"monit is not reachable at {self.url}: {describe(e)}") from None
        if r.status not in (200, 302):
            raise JobSupervisorError(f"monit {action} {service} answered {r.status}: {r.text()[:200]}")


def describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


class MonitJobSupervisor(JobSupervisor):
    def __init__(self, paths: Paths, client: MonitClient | None = None,
                 reload_command: Sequence[str] = RELOAD_COMMAND, poll: float = 0.5,
                 stop_timeout: float = 300.0, reload_wait: float = 10.0, attempts: int = 20) -> None:
        self.paths = paths
        self.client = client or MonitClient(paths)
        self.reload_command = list(reload_command)
        self.poll = poll
        self.stop_timeout = stop_timeout
        self.reload_wait = reload_wait
        self.attempts = attempts
        self._last_state: str | None = None

    async def status(self) -> MonitStatus | None:
        try:
            return await self.client.status()
        except MonitUnavailable:
            return None

    async def _status_retrying(self) -> MonitStatus:
        """Status with retries (monit may be starting or reloading): up to ``attempts`` × 1 s."""
        for attempt in range(self.attempts):
            try:
                return await self.client.status()
            except MonitUnavailable:
                if attempt == self.attempts - 1:
                    raise
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    def _pauses(self) -> Iterator[float]:
        """Pauses between looks at monit while waiting for it: from 50 ms, growing by half, at most ``poll``.
        Most waits (a stop, a reload) end within a few hundred ms: a fixed ``poll`` made each a poll late."""
        pause = min(0.05, self.poll)
        while True:
            yield pause
            pause = min(pause * 1.5, self.poll)

    def job_state(self, status: MonitStatus | None) -> str:
        state = job_state(status, self.paths.stopped_marker.exists())
        if state != self._last_state:
            log.info("Job state: %s -> %s", self._last_state or "(boot)", state)
            self._last_state = state
        return state

    async def _each(self, action: str) -> list[str]:
        names = [s.name for s in (await self._status_retrying()).group()]
        for name in names:
            await self.client.action(name, action)
        return names

    def _health(self, state: str) -> None:
        self.paths.instance.mkdir(parents=True, exist_ok=True)
        (self.paths.instance / "health.json").write_text(json.dumps({"state": state}))

    async def start(self) -> None:
        names = await self._each("start")
        self.paths.stopped_marker.unlink(missing_ok=True)
        self._health("running")
        log.info("monit: start %s", ", ".join(names) or "(no vcap services)")

    async def unmonitor(self) -> None:
        names = await self._each("unmonitor")
        self._health("unmonitored")
        log.info("monit: unmonitor %s", ", ".join(names) or "(no vcap services)")

    async def _settled(self, deadline: float, names: Sequence[str] | None = None) -> MonitStatus:
        """Status once no (named) vcap service has an action pending or is still unmonitored-but-asked."""
        pauses = self._pauses()
        while True:
            status = await self._status_retrying()
            waiting = [s for s in status.group() if (names is None or s.name in names)
                       and (s.pending_action or (names is not None and s.monitor == 0))]
            if not waiting or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(next(pauses))

    async def stop_and_wait(self) -> None:
        """Stop every vcap service, write the stopped marker, wait until none is monitored or pending.

        monit 5.33 skips the stop program of a service it does not monitor (control.c ``_doStop``), and
        ``drain`` has just unmonitored them all: services whose process is still alive are monitored again
        first (a dead one would be restarted by monit, so it is left alone: there is nothing to stop)."""
        deadline = time.monotonic() + self.stop_timeout
        status = await self._settled(deadline)
        pidfiles = monit_pidfiles(self.paths.monit_jobs)
        revive = [s.name for s in status.group() if s.monitor == 0 and process_alive(pidfiles.get(s.name))]
        for name in revive:
            await self.client.action(name, "monitor")
        if revive:
            log.info("monit: monitor %s again so that it can be stopped", ", ".join(revive))
            status = await self._settled(deadline, revive)
        names = [s.name for s in status.group()]
        for name in names:
            await self.client.action(name, "stop")
        self.paths.stopped_marker.parent.mkdir(parents=True, exist_ok=True)
        self.paths.stopped_marker.touch()
        self._health("stopped")
        log.info("monit: stop %s", ", ".join(names) or "(no vcap services)")
        pauses = self._pauses()
        while True:
            busy = [s.name for s in (await self._status_retrying()).group() if s.busy]
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise JobSupervisorError(
                    f"Timed out waiting for services '{', '.join(busy)}' to stop after {self.stop_timeout:g} seconds")
            await asyncio.sleep(next(pauses))

    async def reload(self) -> None:
        """Reload monit (SIGHUP through runit) and wait until its incarnation changes (3 tries)."""
        before = (await self._status_retrying()).incarnation
        if before == str(int(time.time())):
            await asyncio.sleep(1.05 - time.time() % 1)  # incarnation has 1 s resolution
        for attempt in range(3):
            proc = await asyncio.create_subprocess_exec(
                *self.reload_command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise JobSupervisorError(f"reloading monit ({' '.join(self.reload_command)}) exited with "
                                         f"{proc.returncode}: {out.decode(errors='replace').strip()}")
            waited = 0.0
            pauses = self._pauses()
            while waited < self.reload_wait:
                pause = next(pauses)
                await asyncio.sleep(pause)
                waited += pause
                status = await self.status()
                if status is not None and status.incarnation != before:
                    log.info("monit reloaded (incarnation %s -> %s)", before, status.incarnation)
                    return
            log.warning("monit incarnation still %s after reload attempt %d", before, attempt + 1)
        raise JobSupervisorError("monit did not reload: its incarnation did not change after 3 attempts")

    def install_jobs(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Replace ``/var/vcap/monit/job/*.monitrc`` by ``NNNN_<job>.monitrc`` for ``(job, monit text)``,
        NNNN counted from the end of the list (the last job gets 0000), as BOSH does."""
        d = self.paths.monit_jobs
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.monitrc"):
            old.unlink()
        for i, (job, text) in enumerate(jobs):
            path = d / f"{len(jobs) - 1 - i:04d}_{job}.monitrc"
            path.write_text(add_onreboot_nostart(text))
            path.chmod(0o600)
