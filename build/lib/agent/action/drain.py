"""``drain(type, new_spec)`` (async, cancelable): run the jobs' ``bin/drain`` scripts (protocol.md §7).

One job with a drain script (the deck's 2013 contract): the action returns that script's integer unchanged.
The director sleeps a positive N, or for a negative N sleeps |N| and asks ``drain("status")`` again (which
re-runs the script with ``job_check_status hash_unchanged``) until the value is >= 0.

Several jobs with a drain script (today's bosh-agent, ``agent/script/drain/concrete_script.go``): each script
runs on its own, all in parallel, and the agent does the waiting per script: a negative N makes the agent sleep
|N| and run THAT script again with ``job_check_status hash_unchanged`` (no ``BOSH_JOB_NEXT_STATE``) until it
answers >= 0; then the agent sleeps that positive value. The action returns 0 once every script is done, so
the director has nothing left to wait for: a job answering 5 and a job answering -2 then 0 take ~5 s in all,
not 7. ``drain status`` with several scripts runs each with ``job_check_status`` and the same loop, and
returns 0.

Order: unmonitor every vcap service (not for ``status``) so monit does not restart what the script stops;
for ``shutdown`` publish ``hm.agent.shutdown.<id>`` first; then run the scripts.

argv: ``update``   -> ``job_new|job_changed  hash_new|hash_unchanged|hash_changed  [updated packages...]``
      ``shutdown`` -> ``job_shutdown hash_unchanged``
      ``status``   -> ``job_check_status hash_unchanged`` (also the agent's own re-runs of one script)
env:  ``BOSH_JOB_STATE`` / ``BOSH_JOB_NEXT_STATE`` = ``{"persistent_disk":N}`` of the current / new spec
      (no NEXT_STATE without a new spec, so none for ``status`` and the agent's re-runs),
      PATH=/usr/sbin:/usr/bin:/sbin:/bin over the agent's environment.
output: stdout, trimmed, must be a signed integer, else "Script did not return a signed integer: '...'".
If some fail: "N of M drain scripts failed. Failed Jobs: a. Successful Jobs: b." (one job: its own error);
a failing script does not stop the others.
Cancel (``cancel_task``): each script runs in its own process group; the group gets SIGTERM, then SIGKILL
after 10 s; the agent's sleeps between re-runs end at once; the task ends failed ("task canceled") and
``get_task`` says so.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

from boshlab.wire import shutdown_subject

from ..jobsupervisor import JobSupervisorError
from ..log import log
from ..spec import ApplySpec, job_names, packages
from .base import Action, ActionError, Arg

DRAIN_TYPES = ("update", "shutdown", "status")
SCRIPT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CANCEL_GRACE = 10.0
_SIGNED_INT = re.compile(r"[+-]?[0-9]+")


def drain_argv(kind: str, current: ApplySpec, new: ApplySpec | None) -> list[str]:
    if kind == "shutdown":
        return ["job_shutdown", "hash_unchanged"]
    if kind == "status":
        return list(STATUS_ARGV)
    new = new or {}
    job_change = "job_new" if not job_names(current) else "job_changed"
    old_hash, new_hash = current.get("configuration_hash"), new.get("configuration_hash")
    hash_change = "hash_new" if not old_hash else "hash_unchanged" if old_hash == new_hash else "hash_changed"
    old_pkgs = packages(current)
    updated = sorted(name for name, ref in packages(new).items()
                     if name not in old_pkgs or old_pkgs[name].get("sha1") != ref.get("sha1"))
    return [job_change, hash_change, *updated]


def _job_state(spec: ApplySpec) -> str:
    disk = spec.get("persistent_disk", 0)
    return json.dumps({"persistent_disk": disk if isinstance(disk, int) else 0}, separators=(",", ":"))


def drain_env(current: ApplySpec, new: ApplySpec | None, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PATH"] = SCRIPT_PATH
    env["BOSH_JOB_STATE"] = _job_state(current)
    if new is not None:
        env["BOSH_JOB_NEXT_STATE"] = _job_state(new)
    else:
        env.pop("BOSH_JOB_NEXT_STATE", None)
    return env


def parse_drain_output(stdout: str) -> int:
    text = stdout.strip()
    if not _SIGNED_INT.fullmatch(text):
        raise ActionError(f"Script did not return a signed integer: {text[:200]!r}")
    return int(text)


STATUS_ARGV = ["job_check_status", "hash_unchanged"]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


async def run_drain_script(path: Path, argv: list[str], env: dict[str, str]) -> int:
    log.info("Running drain script %s %s", path, " ".join(argv))
    try:
        proc = await asyncio.create_subprocess_exec(str(path), *argv, env=env, cwd="/", start_new_session=True,
                                                    stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        raise ActionError(f"Running drain script {path}: {e.strerror or e}") from None
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        log.warning("Drain canceled: SIGTERM to %s (process group %d)", path, proc.pid)
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), CANCEL_GRACE)
        except TimeoutError:
            log.warning("Drain script %s still running after %.0f s: SIGKILL", path, CANCEL_GRACE)
        _signal_group(proc.pid, signal.SIGKILL)   # the script's children too, even if it is gone
        await proc.wait()
        raise
    stdout = out.decode(errors="replace")
    if err.strip():
        log.debug("Drain script %s stderr: %s", path, err.decode(errors="replace").strip()[-2000:])
    value = parse_drain_output(stdout)
    log.info("Drain script %s exited %s and returned %d", path, proc.returncode, value)
    return value


async def drain_until_done(job: str, path: Path, argv: list[str], env: dict[str, str],
                           status_env: dict[str, str]) -> None:
    """One job's drain, the agent doing the waiting (today's bosh-agent): while the script answers N < 0, sleep
    |N| and run it again with ``job_check_status hash_unchanged``; then sleep its N >= 0."""
    value = await run_drain_script(path, argv, env)
    while value < 0:
        log.info("Drain script of job %s returned %d: checking its status again in %d s", job, value, -value)
        await asyncio.sleep(-value)
        value = await run_drain_script(path, STATUS_ARGV, status_env)
    if value > 0:
        log.info("Drain script of job %s returned %d: waiting %d s", job, value, value)
        await asyncio.sleep(value)
    log.info("Drain of job %s done", job)


async def run_all(scripts: list[tuple[str, Path]], argv: list[str], env: dict[str, str],
                  status_env: dict[str, str] | None = None) -> int:
    """One script: its integer, unchanged (the director waits). Several: each script in parallel until it is
    done (:func:`drain_until_done`), then 0. Cancellation reaches (and waits for) every script and sleep."""
    if len(scripts) == 1:
        return await run_drain_script(scripts[0][1], argv, env)
    status_env = env if status_env is None else status_env

    async def one(job: str, path: Path) -> str | None:
        try:
            await drain_until_done(job, path, argv, env, status_env)
            return None
        except ActionError as e:
            return str(e)

    async with asyncio.TaskGroup() as tg:
        runs = [tg.create_task(one(job, path)) for job, path in scripts]
    errors = [r.result() for r in runs]
    failed = [(job, err) for (job, _), err in zip(scripts, errors, strict=True) if err is not None]
    if failed:
        ok = [job for (job, _), err in zip(scripts, errors, strict=True) if err is None]
        raise ActionError(f"{len(failed)} of {len(scripts)} drain scripts failed. Failed Jobs: "
                          f"{', '.join(j for j, _ in failed)}. Successful Jobs: {', '.join(ok) or 'none'}. "
                          + " ".join(f"{j}: {msg}" for j, msg in failed))
    return 0


class Drain(Action):
    name = "drain"
    args = (Arg("drain type", str), Arg("apply spec", dict, required=False, nullable=True))
    cancelable = True

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self, kind: str, new_spec: ApplySpec | None = None) -> int:
        if kind not in DRAIN_TYPES:
            raise ActionError(f"Unknown drain type '{kind}' (expected update, shutdown or status)")
        if kind == "update" and new_spec is None:
            raise ActionError("drain 'update' needs the new apply spec as argument 2")
        svc = self.services
        current = svc.specs.load()
        if kind != "status":
            try:
                await svc.supervisor.unmonitor()
            except JobSupervisorError as e:
                raise ActionError(f"Unmonitoring services: {e}") from None
        if kind == "shutdown":
            await svc.mbus.publish(shutdown_subject(svc.agent_id), b"null")
        scripts = [(job, p) for job in job_names(current)
                   if (p := svc.paths.job_link(job) / "bin" / "drain").is_file()]
        if not scripts:
            log.info("No drain script for job(s) %s: drain returns 0", ", ".join(job_names(current)) or "(none)")
            return 0
        argv = drain_argv(kind, current, new_spec if kind == "update" else None)
        env = drain_env(current, new_spec if kind != "status" else None)
        return await run_all(scripts, argv, env, drain_env(current, None))
