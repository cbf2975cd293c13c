"""Local users for the ``ssh`` message: useradd/userdel, the passwd database, the VM's ssh host key.
The real one changes the VM; unit tests use a fake with the same interface."""
from __future__ import annotations

import asyncio
import os
import pwd
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .command import run_command

HOST_PUBLIC_KEYS = (Path("/etc/ssh/ssh_host_rsa_key.pub"), Path("/etc/ssh/ssh_host_ed25519_key.pub"),
                    Path("/etc/ssh/ssh_host_ecdsa_key.pub"))
SSHD_SERVICE = "/etc/service/sshd"
SSHD_START_TIMEOUT = 30.0


class UserError(Exception):
    pass


@dataclass(frozen=True)
class UserEntry:
    name: str
    uid: int
    gid: int
    home: Path


class UserAdmin(ABC):
    @abstractmethod
    async def add(self, name: str, base_dir: Path, groups: Sequence[str]) -> UserEntry:
        """Create ``name`` with a 0700 home ``<base_dir>/<name>``, shell bash, in ``groups``."""

    @abstractmethod
    def get(self, name: str) -> UserEntry | None: ...

    @abstractmethod
    def all(self) -> list[UserEntry]: ...

    @abstractmethod
    async def delete(self, name: str) -> None:
        """End the user's processes, remove the user, its home and its own group."""

    @abstractmethod
    def host_public_key(self) -> str: ...

    async def ensure_sshd(self) -> None:
        """sshd runs and has its host keys (the stemcell starts it on the first ``ssh setup``)."""
        return None


async def _run(*argv: str, ok: tuple[int, ...] = (0,)) -> None:
    await run_command(*argv, error=UserError, ok=ok)


def _entry(p: pwd.struct_passwd) -> UserEntry:
    return UserEntry(p.pw_name, p.pw_uid, p.pw_gid, Path(p.pw_dir))


class LinuxUsers(UserAdmin):
    def __init__(self, host_keys: Sequence[Path] = HOST_PUBLIC_KEYS) -> None:
        self.host_keys = tuple(host_keys)

    async def add(self, name: str, base_dir: Path, groups: Sequence[str]) -> UserEntry:
        base_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        await _run("useradd", "-m", "-b", str(base_dir), "-s", "/bin/bash", "-G", ",".join(groups), "--", name)
        entry = self.get(name)
        if entry is None:
            raise UserError(f"useradd succeeded but user {name} is not in the passwd database")
        os.chmod(entry.home, 0o700)
        return entry

    def get(self, name: str) -> UserEntry | None:
        try:
            return _entry(pwd.getpwnam(name))
        except KeyError:
            return None

    def all(self) -> list[UserEntry]:
        return [_entry(p) for p in pwd.getpwall()]

    async def delete(self, name: str) -> None:
        await _run("pkill", "-KILL", "-u", name, ok=(0, 1))   # 1: no process
        await _run("userdel", "-r", "-f", name, ok=(0, 12))   # 12: home could not be removed (gone already)

    async def ensure_sshd(self, port: int = 22, timeout: float = SSHD_START_TIMEOUT) -> None:
        """The stemcell's sshd is "normally down" (``/etc/service/sshd/down``): a VM nobody logs in to never
        pays for it (its host keys, its memory). The first ``ssh setup`` starts it (``sv up``) and waits
        until it has a host key and listens on ``port``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if os.path.isdir(SSHD_SERVICE):
            await asyncio.wait_for(_run("sv", "up", SSHD_SERVICE), timeout)
        while True:
            if any(p.exists() for p in self.host_keys):
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
                except (OSError, TimeoutError):
                    pass
                else:
                    writer.close()
                    return
            if loop.time() >= deadline:
                raise UserError(f"sshd did not start within {timeout:g} s (see /var/log/sshd/current)")
            await asyncio.sleep(0.05)

    def host_public_key(self) -> str:
        for path in self.host_keys:
            try:
                return path.read_text().strip()
            except OSError:
                continue
        raise UserError(f"no ssh host public key ({', '.join(str(p) for p in self.host_keys)}): is sshd set up?")
