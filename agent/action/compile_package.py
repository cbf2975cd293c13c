"""``compile_package(blobstore_id, sha1, name, version, deps)`` (async) -> ``{"result": {"blobstore_id", "sha1"}}``
(protocol.md §8).

1. Remove every installed package; install each dependency (compiled) and link /var/vcap/packages/<dep>.
2. Fetch the source blob (sha1 checked), unpack into /var/vcap/data/compile/<name>.
3. Empty install dir /var/vcap/data/packages/<name>/<sha1(version)>, linked as /var/vcap/packages/<name>.
4. ``bash -x packaging`` in the compile dir with BOSH_COMPILE_TARGET, BOSH_INSTALL_TARGET (the link),
   BOSH_PACKAGE_NAME, BOSH_PACKAGE_VERSION; output in /var/vcap/sys/log/compilation/packaging.{stdout,stderr}.log.
5. tar+gzip the install dir's contents (gzip level 1: the blob crosses a local network once, and level 9 took
   seconds on redis's binaries for ~10 % less), upload it under a new uuid with the agent's credentials.
6. Remove the compiled package and its dependencies; the compile dir (a build tree of thousands of files) is
   moved aside at once and deleted in the background, after the answer.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

from boshlab.contracts import CompileResult
from boshlab.dav import BlobstoreError

from ..applier import ApplyError
from ..log import log
from ..paths import replace_symlink
from ..spec import BlobRef, SpecError, check_blob_ref, check_name
from .base import Action, ActionError, Arg

OUTPUT_LIMIT = 10 * 1024
GZIP_LEVEL = 1
_CLEANUPS: set[asyncio.Task[None]] = set()     # background removals of compile dirs (kept referenced)


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def tar_compiled(src: Path, out: Path) -> None:
    """``out`` (tar.gz, gzip level 1) with the contents of ``src`` as ``./...`` entries, sorted, owned by
    root. Blocking."""
    with tarfile.open(out, "w:gz", compresslevel=GZIP_LEVEL, format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(src)):
            tar.add(src / entry, arcname=f"./{entry}", filter=_owned_by_root)


async def remove_later(path: Path) -> None:
    """Move ``path`` aside now (a new compile of the same package may start at once), delete it in the
    background."""
    trash = path if path.name.startswith(".removing-") else path.with_name(
        f".removing-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        if trash != path:
            await asyncio.to_thread(os.rename, path, trash)
    except FileNotFoundError:
        return
    except OSError:
        await asyncio.to_thread(shutil.rmtree, path, True)
        return
    task = asyncio.create_task(asyncio.to_thread(shutil.rmtree, trash, True), name=f"remove {trash}")
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - OUTPUT_LIMIT))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def packaging_env(name: str, version: str, compile_dir: Path, install_target: Path) -> dict[str, str]:
    return {**os.environ, "BOSH_COMPILE_TARGET": str(compile_dir), "BOSH_INSTALL_TARGET": str(install_target),
            "BOSH_PACKAGE_NAME": name, "BOSH_PACKAGE_VERSION": version}


class CompilePackage(Action):
    name = "compile_package"
    args = (Arg("blobstore id", str), Arg("sha1", str), Arg("package name", str), Arg("package version", str),
            Arg("dependencies", dict))

    def is_async(self, protocol: int) -> bool:
        return True

    async def run(self, blob_id: str, sha1: str, name: str, version: str,
                  deps: dict[str, Any]) -> CompileResult:
        try:
            check_name(name, "package")
            dep_refs: dict[str, BlobRef] = {check_name(d, "dependency"): check_blob_ref(r, f"dependency '{d}'")
                                            for d, r in deps.items()}
        except SpecError as e:
            raise ActionError(str(e)) from None
        svc = self.services
        paths, applier = svc.paths, svc.applier
        compile_dir = paths.compile_dir(name)
        install_dir = paths.package_versions(name) / hashlib.sha1(version.encode()).hexdigest()
        log.info("Compiling package '%s' %s (source blob %s, dependencies: %s)", name, version, blob_id,
                 ", ".join(sorted(dep_refs)) or "none")
        await asyncio.to_thread(applier.keep_only, None, {})
        if not _CLEANUPS:     # compile dirs an agent restart left half-removed
            for stale in compile_dir.parent.glob(".removing-*"):
                await remove_later(stale)
        try:
            async with svc.blobstore() as dav:
                for dep, ref in sorted(dep_refs.items()):
                    await applier.install_package(dav, dep, ref)
                with applier.staging() as staging:
                    source: BlobRef = {"name": name, "version": version, "sha1": sha1, "blobstore_id": blob_id}
                    await applier.download(dav, source, staging / "source.tgz", f"package '{name}' source")
                    unpack = compile_dir.with_name(f"{name}-bosh-agent-unpack")
                    for old in (unpack, compile_dir, install_dir):
                        await asyncio.to_thread(shutil.rmtree, old, True)
                    await applier.extract(staging / "source.tgz", unpack, f"package '{name}' source (blob {blob_id})")
                    os.rename(unpack, compile_dir)
                    install_dir.mkdir(parents=True)
                    replace_symlink(paths.package_link(name), install_dir)
                    if (compile_dir / "packaging").is_file():
                        await self.packaging(name, version, compile_dir)
                    else:
                        log.warning("Package '%s' has no packaging script: nothing to run", name)
                    compiled = staging / "compiled.tgz"
                    await asyncio.to_thread(tar_compiled, install_dir, compiled)
                    new_id, digest = await dav.put_file(compiled)
                    log.info("Uploaded compiled package '%s' as blob %s (sha1 %s)", name, new_id, digest)
        except (ApplyError, BlobstoreError) as e:
            raise ActionError(f"Compiling package '{name}': {e}") from None
        finally:
            await asyncio.to_thread(applier.keep_only, None, {})
            await remove_later(compile_dir)
        return {"result": {"blobstore_id": new_id, "sha1": digest}}

    async def packaging(self, name: str, version: str, compile_dir: Path) -> None:
        logs = self.services.paths.sys / "log" / "compilation"
        await asyncio.to_thread(shutil.rmtree, logs, True)
        logs.mkdir(parents=True)
        out_path, err_path = logs / "packaging.stdout.log", logs / "packaging.stderr.log"
        env = packaging_env(name, version, compile_dir, self.services.paths.package_link(name))
        log.info("Running 'bash -x packaging' in %s", compile_dir)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = await asyncio.create_subprocess_exec("bash", "-x", "packaging", cwd=compile_dir, env=env,
                                                        stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err)
            code = await proc.wait()
        if code != 0:
            raise ActionError(f"Command exited with {code}; Stdout: {_tail(out_path)}, Stderr: {_tail(err_path)}")
        log.info("Packaging of '%s' succeeded", name)
