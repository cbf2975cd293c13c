"""Why an agent does not answer ``ping``: named from what the VM shows, within seconds, instead of BOSH's
"Timed out pinging to <agent> after 600 seconds".

The agent logs every failed attempt (``/var/vcap/bosh/log/current``): registry answers, NATS connection
errors. The director reads the tail of that log with ``docker exec`` while it waits, and names the cause as
soon as one shows up twice (a single failure may be a race at boot: NATS restarting, DNS not ready)."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    # settings_not_found | registry_credentials | registry_unreachable | nats_credentials | nats_unreachable | agent_failed
    kind: str
    reason: str     # one sentence for the task's error

    def __str__(self) -> str:
        return self.reason


_REGISTRY_FAIL = re.compile(r"Fetching settings from the registry failed \(attempt \d+/\d+\): (?P<detail>.*)")
_NATS_FAIL = re.compile(r"NATS connection failed \((?P<detail>.*)\), retrying")
_NATS_ERROR = re.compile(r"NATS error: (?P<detail>.*)")
_AGENT_FATAL = re.compile(r"(?:ERROR|FATAL): Cannot configure the agent: (?P<detail>.*)")


def _registry(detail: str) -> Diagnosis:
    if re.search(r"answered 404", detail):
        return Diagnosis("settings_not_found", "its settings are not in the registry (the registry answered 404 for "
                         "this VM's instance id: the VM was made outside a deploy, or its registry entry was deleted)")
    if re.search(r"answered 401|answered 403", detail):
        return Diagnosis("registry_credentials", "wrong registry credentials (the registry refused the user and "
                         "password in the VM's user data)")
    return Diagnosis("registry_unreachable", f"the registry is unreachable from the VM ({detail.strip()})")


def _nats(detail: str, errors: list[str]) -> Diagnosis:
    text = " ".join([detail, *errors])
    if re.search(r"authoriz|authentic|auth(entication)? (violation|error|fail)", text, re.I):
        return Diagnosis("nats_credentials", "wrong NATS credentials: nats-server refused the user and password of the "
                         "mbus URL in the agent's settings (Authorization Violation)")
    cause = errors[-1] if errors else detail
    return Diagnosis("nats_unreachable", f"NATS is unreachable from the VM ({cause.strip()})")


SLOW_FACTOR = 3


def _timeout(detail: str) -> bool:
    return bool(re.search(r"timeout|timed out", detail, re.I))


def diagnose_agent_log(text: str, min_repeats: int = 2) -> Diagnosis | None:
    """Name the agent's boot failure from its log, or None when the log shows none (yet).

    Only the lines after the agent's last start count (runit restarts it), NATS trouble only after its last
    successful connection, and a failure must have been logged ``min_repeats`` times (the agent and nats-py
    retry: one failure can be a race at boot)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "INFO: Starting agent" in line]
    if starts:
        lines = lines[starts[-1]:]
    connected = [i for i, line in enumerate(lines) if "Connected to NATS" in line or "Reconnected to NATS" in line]
    since_connect = lines[connected[-1] + 1:] if connected else lines
    fatal = [m.group("detail") for line in lines if (m := _AGENT_FATAL.search(line))]
    registry = [m.group("detail") for line in lines if (m := _REGISTRY_FAIL.search(line))]
    nats_failed = [m.group("detail") for line in since_connect if (m := _NATS_FAIL.search(line))]
    nats_errors = [m.group("detail") for line in since_connect if (m := _NATS_ERROR.search(line))]
    # A timeout is no proof: a busy director (the registry) or NATS may just be slow. Be patient with those.
    slow = min_repeats * SLOW_FACTOR
    if registry and not connected and (len(registry) >= (slow if _timeout(registry[-1]) else min_repeats) or fatal):
        return _registry(registry[-1])
    nats_all = nats_failed + nats_errors
    if nats_all and len(nats_all) >= (slow if all(_timeout(x) for x in nats_all) else min_repeats):
        return _nats(nats_failed[-1] if nats_failed else "", [e for e in nats_errors if not _timeout(e)][-5:] or nats_errors[-1:])
    if fatal:
        return Diagnosis("agent_failed", f"the agent could not configure itself: {fatal[-1]}")
    return None


def tail(text: str, n: int = 12) -> str:
    return "\n".join(text.splitlines()[-n:])
