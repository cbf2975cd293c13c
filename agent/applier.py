"""Installing an apply spec, the 2013 way (protocol.md §9.2): the agent fetches the raw job blobs and the
compiled packages, renders every job.MF template and the monit file with ERB itself, and links it all in.

    /var/vcap/data/jobs/<job>/<sha1(version-sha1)>/       rendered job (bin/ 0755, the rest 0644, monit)
    /var/vcap/data/packages/<pkg>/<sha1(version-sha1)>/   compiled package contents
    /var/vcap/jobs/<job> -> data/jobs/...      /var/vcap/packages/<pkg> -> data/packages/...
    /var/vcap/jobs/<job>/packages/<pkg> -> data/packages/...

Everything is downloaded, checked, unpacked and rendered into a staging dir under /var/vcap/data/tmp first;
only then is anything installed (by rename), so a bad blob or a template error leaves the old job intact.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .jobsupervisor import JobSupervisor
from .log import log
from .paths import Paths, replace_symlink
from .spec import ApplySpec, BlobRef, SpecError, check_blob_ref, check_name, job_templates, packages

# What an apply needs (blobs: aiohttp; job.MF: yaml; tarballs; ERB) is imported by the first apply, not at
# boot: the agent answers ping sooner and a VM that is never applied never loads it.
if TYPE_CHECKING:
    from boshlab import erb
    from boshlab.dav import DavClient
    from boshlab.release import JobTarball

MONIT_KEY = "monit"  # the monit file's name among a job's templates when rendering

Renderer = Callable[[list["erb.JobTemplates"], dict[str, Any]], Any]
BlobstoreFactory = Callable[[], "DavClient"]


class ApplyError(Exception):
    pass


def load_apply_modules() -> None:
    """Import what an apply uses (in a thread: the first apply must not hold up the event loop)."""
    import boshlab.dav
    import boshlab.erb
    import boshlab.properties
    import boshlab.release
    import boshlab.tarball  # noqa: F401


def bundle_hash(ref: BlobRef) -> str:
    """The install dir name: sha1 of ``<version>-<sha1>`` (as the agent names job and package bundles)."""
    return hashlib.sha1(f"{ref['version']}-{ref['sha1']}".encode()).hexdigest()


def file_mode(dest: str) -> int:
    return 0o755 if Path(dest).parts[:1] == ("bin",) else 0o644


@dataclass
class StagedJob:
    name: str
    ref: BlobRef
    dir: Path      # staged, rendered job
    monit: str     # rendered monit file


class Applier:
    def __init__(self, paths: Paths, blobstore: BlobstoreFactory, supervisor: JobSupervisor,
                 renderer: Renderer | None = None) -> None:
        self.paths = paths
        self.blobstore = blobstore
        self.supervisor = supervisor
        self._renderer = renderer

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            from boshlab import erb
            self._renderer = erb.render
        return self._renderer

    # --- blobs ---------------------------------------------------------------------------------------

    async def download(self, dav: DavClient, ref: BlobRef, dest: Path, what: str) -> None:
        blob_id, sha1 = str(ref["blobstore_id"]), str(ref["sha1"])
        from boshlab.dav import BlobstoreError
        log.info("Downloading %s: blob %s", what, blob_id)
        try:
            await dav.get_file(blob_id, dest, sha1)
        except BlobstoreError as e:
            raise ApplyError(f"{what}: {e}") from None
        log.debug("Blob %s sha1 %s ok", blob_id, sha1)

    async def extract(self, archive: Path, dest: Path, what: str) -> None:
        from boshlab.tarball import UnsafeTarball, safe_extract
        try:
            await asyncio.to_thread(safe_extract, archive, dest)
        except (UnsafeTarball, OSError, ValueError) as e:
            raise ApplyError(f"{what}: cannot unpack blob: {e}") from None

    # --- packages ------------------------------------------------------------------------------------

    def package_dir(self, name: str, ref: BlobRef) -> Path:
        return self.paths.package_versions(name) / bundle_hash(ref)

    async def stage_package(self, dav: DavClient, name: str, ref: BlobRef, staging: Path) -> Path | None:
        """Download and unpack a compiled package into ``staging``; None if that version is installed."""
        if self.package_dir(name, ref).is_dir():
            log.debug("Package '%s' %s already installed", name, ref["version"])
            return None
        archive = staging / f"package-{name}.tgz"
        await self.download(dav, ref, archive, f"package '{name}'")
        out = staging / f"package-{name}"
        await self.extract(archive, out, f"package '{name}' (blob {ref['blobstore_id']})")
        archive.unlink()
        return out

    def commit_package(self, name: str, ref: BlobRef, staged: Path | None) -> Path:
        final = self.package_dir(name, ref)
        if staged is not None and not final.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, final)
            log.info("Installed package '%s' %s into %s", name, ref["version"], final)
        replace_symlink(self.paths.package_link(name), final)
        return final

    async def install_package(self, dav: DavClient, name: str, ref: BlobRef) -> Path:
        """Fetch, unpack and link one compiled package now (compile_package's dependencies)."""
        with self.staging() as staging:
            return self.commit_package(name, ref, await self.stage_package(dav, name, ref, staging))

    # --- jobs ----------------------------------------------------------------------------------------

    async def stage_job(self, dav: DavClient, ref: BlobRef, spec: ApplySpec, staging: Path) -> StagedJob:
        name = str(ref["name"])
        archive = staging / f"job-{name}.tgz"
        await self.download(dav, ref, archive, f"job '{name}'")
        from boshlab.release import JobTarball, ReleaseError
        try:
            job = await asyncio.to_thread(JobTarball.read_file, archive, f"job '{name}' blob")
        except ReleaseError as e:
            raise ApplyError(str(e)) from None
        if job.spec.name != name:
            log.warning("job.MF of job '%s' says name '%s'", name, job.spec.name)
        if MONIT_KEY in job.templates:
            raise ApplyError(f"job '{name}': a template source named '{MONIT_KEY}' clashes with the monit file")
        rendered = await self.render(name, job, spec)
        out = staging / f"job-{name}"

        def write() -> None:
            out.mkdir()
            for src, dest in job.spec.templates.items():
                target = out / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(rendered[src])
                target.chmod(file_mode(dest))
            (out / "monit").write_text(rendered[MONIT_KEY])
            (out / "monit").chmod(0o644)
        await asyncio.to_thread(write)
        return StagedJob(name, ref, out, rendered[MONIT_KEY])

    async def render(self, name: str, job: JobTarball, spec: ApplySpec) -> dict[str, str]:
        """Every job.MF template and the monit file, with job.MF defaults under the spec's properties."""
        from boshlab import erb
        from boshlab.properties import merge_properties
        props = merge_properties(job.spec.properties, spec.get("properties"))
        context: dict[str, Any] = {**spec, "properties": props}
        for src, dest in job.spec.templates.items():
            log.info("Rendering template '%s' of job '%s' -> %s", src, name, dest)
        try:
            result = await self.renderer([erb.JobTemplates(name, {**job.templates, MONIT_KEY: job.monit})], context)
        except erb.TemplateError as e:
            raise ApplyError(str(e)) from None
        rendered: dict[str, str] = result[name]
        return rendered

    def commit_job(self, staged: StagedJob, package_dirs: dict[str, Path], trash: Path) -> None:
        for pkg, target in package_dirs.items():
            replace_symlink(staged.dir / "packages" / pkg, target)
        final = self.paths.job_versions(staged.name) / bundle_hash(staged.ref)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # same job version, maybe new properties: swap the rendered tree
            os.rename(final, trash / f"old-job-{staged.name}")
        os.rename(staged.dir, final)
        replace_symlink(self.paths.job_link(staged.name), final)
        for d in (self.paths.job_log_dir(staged.name), self.paths.job_run_dir(staged.name),
                  self.paths.data / staged.name):
            d.mkdir(parents=True, exist_ok=True)
        log.info("Installed job '%s' %s into %s", staged.name, staged.ref["version"], final)

    # --- apply ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A temp dir under /var/vcap/data/tmp: the same filesystem as the install dirs, so installs are renames."""
        self.paths.tmp.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="staging-", dir=self.paths.tmp, ignore_cleanup_errors=True) as tmp:
            yield Path(tmp)

    async def apply(self, spec: ApplySpec) -> None:
        try:
            jobs = [check_blob_ref(t, f"job template {i}") for i, t in enumerate(job_templates(spec))]
            pkgs = {check_name(n, "package"): check_blob_ref(r, f"package '{n}'") for n, r in packages(spec).items()}
        except SpecError as e:
            raise ApplyError(f"apply spec: {e}") from None
        await asyncio.to_thread(load_apply_modules)
        log.info("Applying deployment '%s', job '%s' (%s), packages %s", spec.get("deployment"),
                 spec.get("job", {}).get("name"), ", ".join(str(j["name"]) for j in jobs) or "none",
                 ", ".join(sorted(pkgs)) or "none")
        with self.staging() as staging:
            async with self.blobstore() as dav:
                staged_jobs = [await self.stage_job(dav, ref, spec, staging) for ref in jobs]
                staged_pkgs = {n: await self.stage_package(dav, n, r, staging) for n, r in pkgs.items()}
            # Everything is fetched, checked and rendered: install.
            package_dirs = {n: self.commit_package(n, pkgs[n], staged) for n, staged in staged_pkgs.items()}
            for staged in staged_jobs:
                self.commit_job(staged, package_dirs, staging)
        self.supervisor.install_jobs([(j.name, j.monit) for j in staged_jobs])
        await self.supervisor.reload()
        await asyncio.to_thread(self.keep_only, {j.name: bundle_hash(j.ref) for j in staged_jobs},
                                {n: bundle_hash(r) for n, r in pkgs.items()})

    def keep_only(self, jobs: dict[str, str] | None, pkgs: dict[str, str]) -> None:
        """Remove job and package versions (and links) not in ``{name: bundle hash}`` (jobs None: keep all)."""
        for kind, wanted in (("jobs", jobs), ("packages", pkgs)):
            if wanted is None:
                continue
            for d in _children(self.paths.data / kind):
                for version in _children(d):
                    if wanted.get(d.name) != version.name:
                        log.debug("Removing unused %s version %s", kind[:-1], version)
                        shutil.rmtree(version, ignore_errors=True)
                if d.name not in wanted:
                    shutil.rmtree(d, ignore_errors=True)
            for link in _children(self.paths.base / kind):
                if link.name not in wanted and link.is_symlink():
                    link.unlink()

    def write_instance_files(self, spec: ApplySpec) -> None:
        self.paths.instance.mkdir(parents=True, exist_ok=True)
        for key in ("id", "name", "deployment", "az"):
            if spec.get(key) is not None:
                (self.paths.instance / key).write_text(str(spec.get(key)))


def _children(d: Path) -> Iterable[Path]:
    try:
        return list(d.iterdir())
    except FileNotFoundError:
        return []

