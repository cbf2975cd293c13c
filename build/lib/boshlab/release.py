"""The BOSH release tarball format: write one from a release source tree, read and check one.

::

    release.tgz
    ├── release.MF               name, version, commit_hash, uncommitted_changes, jobs[], packages[]
    ├── jobs/<job>.tgz           job.MF, monit, templates/<src files>
    └── packages/<pkg>.tgz       packaging, plus the package's files

Source tree (``bosh create-release`` layout): ``config/final.yml`` (``name``), ``jobs/<job>/{spec,monit,
templates/}``, ``packages/<pkg>/{spec,packaging}``; package files come from ``src/`` or the blob directories.
Versions of jobs and packages are the release version (2013 dev-release style: '1'); identity is the
fingerprint (sha1 over the item's file names, modes and contents).
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import lzma
import os
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from . import safeyaml
from .tarball import CorruptTarball, TarLimits, UnsafeTarball, env_int, safe_extract, tar_files

# A job tarball is read into memory (its job.MF, monit and templates; the director stores them): limits,
# overridable per call and with BOSH_LAB_JOB_MAX_FILE_BYTES / _MAX_BYTES / _MAX_MEMBERS.
JOB_MAX_FILE_BYTES = 16 << 20    # one of job.MF, monit, templates/*
JOB_MAX_BYTES = 64 << 20         # all of them together
JOB_MAX_MEMBERS = 10_000         # entries in the job tarball


class ReleaseError(ValueError):
    """A release (source tree or tarball) is malformed; the text names the file and the problem."""


# Names become paths (/var/vcap/jobs/<job>, /var/vcap/packages/<package>, blobs, directories): BOSH's
# characters only, never '/', '..' or a leading dot.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def check_name(value: Any, what: str) -> str:
    text = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    if text is None or not _NAME.fullmatch(text) or ".." in text:
        raise ReleaseError(f"{what} {value!r} is not a valid name (letters, digits, '-', '_', '.', '+'; "
                           f"at most 128; no '..')")
    return text


def _yaml(text: str, what: str) -> Any:
    try:
        return safeyaml.load(text, what=what)
    except safeyaml.YamlError as e:
        raise ReleaseError(str(e)) from None


# --- job.MF ----------------------------------------------------------------------------------------

@dataclass
class JobSpec:
    name: str
    templates: dict[str, str]
    packages: list[str]
    properties: dict[str, dict[str, Any]]

    @classmethod
    def parse(cls, text: str, where: str = "job.MF") -> JobSpec:
        doc = _yaml(text, where)
        if not isinstance(doc, dict):
            raise ReleaseError(f"{where} must be a YAML mapping")
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise ReleaseError(f"{where} has no name")
        check_name(name, f"{where}: job name")
        templates = doc.get("templates") or {}
        if not isinstance(templates, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in templates.items()):
            raise ReleaseError(f"{where}: templates must map source file to destination path")
        for src, dst in templates.items():
            for p in (src, dst):
                if p.startswith("/") or ".." in Path(p).parts:
                    raise ReleaseError(f"{where}: template path {p!r} must be relative and stay inside the job")
        packages = doc.get("packages") or []
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise ReleaseError(f"{where}: packages must be a list of names")
        for p in packages:
            check_name(p, f"{where}: package")
        props = doc.get("properties") or {}
        if not isinstance(props, dict):
            raise ReleaseError(f"{where}: properties must be a mapping of dotted names")
        props = {str(k): (v if isinstance(v, dict) else {}) for k, v in props.items()}
        return cls(name, dict(templates), list(packages), props)

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"name": self.name, "templates": self.templates, "packages": self.packages}
        if self.properties:
            doc["properties"] = self.properties
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


@dataclass
class JobTarball:
    """A job as the release carries it: job.MF, the monit file, the template sources."""
    spec: JobSpec
    monit: str
    templates: dict[str, str]  # template source name -> ERB text

    @classmethod
    def read(cls, data: bytes, where: str, *, max_file_bytes: int | None = None,
             max_bytes: int | None = None, max_members: int | None = None) -> JobTarball:
        """A job from the bytes of its tarball (see ``read_file``)."""
        return cls._read(io.BytesIO(data), where, max_file_bytes, max_bytes, max_members)

    @classmethod
    def read_file(cls, path: str | os.PathLike[str], where: str, *, max_file_bytes: int | None = None,
                  max_bytes: int | None = None, max_members: int | None = None) -> JobTarball:
        """A job from its tarball on disk, streamed: only job.MF, monit and ``templates/*`` are read, each
        at most ``max_file_bytes``, ``max_bytes`` together, in an archive of at most ``max_members`` entries
        (defaults: ``JOB_MAX_*``, or the ``BOSH_LAB_JOB_MAX_*`` environment variables). Blocking."""
        with open(path, "rb") as f:
            return cls._read(f, where, max_file_bytes, max_bytes, max_members)

    @classmethod
    def _read(cls, fileobj: IO[bytes], where: str, max_file_bytes: int | None, max_bytes: int | None,
              max_members: int | None) -> JobTarball:
        max_file = max_file_bytes or env_int("BOSH_LAB_JOB_MAX_FILE_BYTES", JOB_MAX_FILE_BYTES)
        max_total = max_bytes or env_int("BOSH_LAB_JOB_MAX_BYTES", JOB_MAX_BYTES)
        max_count = max_members or env_int("BOSH_LAB_JOB_MAX_MEMBERS", JOB_MAX_MEMBERS)
        files: dict[str, bytes] = {}
        kept = count = 0
        try:
            with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
                for m in tar:
                    count += 1
                    if count > max_count:
                        raise ReleaseError(f"{where}: more than {max_count} entries (limit BOSH_LAB_JOB_MAX_MEMBERS)")
                    name = os.path.normpath(m.name)
                    if not m.isfile() or not (name in ("job.MF", "monit") or name.startswith("templates/")):
                        continue
                    if m.size > max_file:
                        raise ReleaseError(f"{where}: {m.name!r} is {m.size} bytes, more than the limit of {max_file} "
                                           f"bytes for a job file (BOSH_LAB_JOB_MAX_FILE_BYTES)")
                    kept += m.size
                    if kept > max_total:
                        raise ReleaseError(f"{where}: job.MF, monit and templates hold more than {max_total} bytes "
                                           f"(limit BOSH_LAB_JOB_MAX_BYTES; at {m.name!r})")
                    f = tar.extractfile(m)
                    assert f is not None
                    files[name] = f.read(m.size)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as e:
            raise ReleaseError(f"{where} is not a tarball: {e}") from None
        if "job.MF" not in files:
            raise ReleaseError(f"{where} has no job.MF")
        spec = JobSpec.parse(files["job.MF"].decode(), f"{where}: job.MF")
        if "monit" not in files:
            raise ReleaseError(f"{where}: job '{spec.name}' has no monit file")
        templates = {}
        for src in spec.templates:
            key = os.path.normpath(os.path.join("templates", src))
            if key not in files:
                raise ReleaseError(f"{where}: job '{spec.name}' is missing template '{src}'")
            templates[src] = files[key].decode()
        return cls(spec, files["monit"].decode(), templates)

    def to_bytes(self) -> bytes:
        files: dict[str, bytes | str] = {"./job.MF": self.spec.to_yaml(), "./monit": self.monit}
        for src, text in self.templates.items():
            files[f"./templates/{src}"] = text
        return tar_files(files)


# --- release.MF ------------------------------------------------------------------------------------

@dataclass
class ReleaseItem:
    name: str
    version: str
    fingerprint: str
    sha1: str
    dependencies: list[str] = field(default_factory=list)

    def to_dict(self, package: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "version": self.version, "fingerprint": self.fingerprint, "sha1": self.sha1}
        if package:
            d["dependencies"] = self.dependencies
        return d


@dataclass
class ReleaseManifest:
    name: str
    version: str
    jobs: list[ReleaseItem]
    packages: list[ReleaseItem]
    commit_hash: str = "00000000"
    uncommitted_changes: bool = False

    def to_yaml(self) -> str:
        return yaml.safe_dump({
            "name": self.name, "version": self.version, "commit_hash": self.commit_hash,
            "uncommitted_changes": self.uncommitted_changes,
            "packages": [p.to_dict(True) for p in self.packages],
            "jobs": [j.to_dict(False) for j in self.jobs],
        }, sort_keys=False)

    @classmethod
    def parse(cls, text: str) -> ReleaseManifest:
        doc = _yaml(text, "release.MF")
        if not isinstance(doc, dict):
            raise ReleaseError("release.MF must be a YAML mapping")
        for key in ("name", "version"):
            if not isinstance(doc.get(key), (str, int, float)) or str(doc.get(key)) == "":
                raise ReleaseError(f"release.MF has no {key}")
            check_name(doc[key], f"release.MF {key}")
        if "compiled_packages" in doc:
            raise ReleaseError("compiled releases are not supported by bosh-lab yet (release.MF has compiled_packages)")

        def items(key: str) -> list[ReleaseItem]:
            out = []
            for i, raw in enumerate(doc.get(key) or []):
                if not isinstance(raw, dict):
                    raise ReleaseError(f"release.MF {key}[{i}] must be a mapping")
                for k in ("name", "version", "sha1"):
                    if raw.get(k) in (None, ""):
                        raise ReleaseError(f"release.MF {key}[{i}] has no {k}")
                check_name(raw["name"], f"release.MF {key}[{i}] name")
                check_name(raw["version"], f"release.MF {key}[{i}] version")
                deps = raw.get("dependencies") or []
                if not isinstance(deps, list):
                    raise ReleaseError(f"release.MF {key}[{i}] dependencies must be a list of package names")
                for d in deps:
                    check_name(d, f"release.MF {key}[{i}] dependency")
                out.append(ReleaseItem(str(raw["name"]), str(raw["version"]), str(raw.get("fingerprint") or raw["version"]),
                                       str(raw["sha1"]), [str(d) for d in deps]))
            return out
        return cls(str(doc["name"]), str(doc["version"]), items("jobs"), items("packages"),
                   str(doc.get("commit_hash") or "00000000"), bool(doc.get("uncommitted_changes")))


# --- reading a release tarball ---------------------------------------------------------------------

@dataclass
class LoadedRelease:
    manifest: ReleaseManifest
    root: Path                       # where the tarball was extracted
    jobs: dict[str, JobTarball]

    def job_path(self, name: str) -> Path:
        return self.root / "jobs" / f"{name}.tgz"

    def package_path(self, name: str) -> Path:
        return self.root / "packages" / f"{name}.tgz"


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_release(tarball: str | os.PathLike[str], workdir: str | os.PathLike[str],
                 limits: TarLimits | None = None) -> LoadedRelease:
    """Extract (safely, within ``limits``: see ``boshlab.tarball``) and check a release tarball: release.MF,
    every job and package present with the sha1 it claims, every job a valid job tarball, package
    dependencies and job packages known. A refused archive leaves ``workdir`` as it was. Blocking."""
    root = Path(workdir)
    try:
        safe_extract(tarball, root, limits)
    except (CorruptTarball, tarfile.TarError) as e:
        raise ReleaseError(f"not a release tarball: {e}") from None
    except UnsafeTarball as e:
        raise ReleaseError(f"release tarball refused: {e}") from None
    mf = root / "release.MF"
    if not mf.is_file():
        raise ReleaseError("release tarball has no release.MF")
    manifest = ReleaseManifest.parse(mf.read_text())
    pkg_names = {p.name for p in manifest.packages}
    for kind, items in (("packages", manifest.packages), ("jobs", manifest.jobs)):
        for item in items:
            path = root / kind / f"{item.name}.tgz"
            if not path.is_file():
                raise ReleaseError(f"release.MF names {kind[:-1]} '{item.name}' but {kind}/{item.name}.tgz is missing")
            got = _sha1(path)
            if got != item.sha1.removeprefix("sha1:"):
                raise ReleaseError(f"{kind}/{item.name}.tgz: sha1 mismatch (release.MF says {item.sha1}, file is {got})")
    for p in manifest.packages:
        for d in p.dependencies:
            if d not in pkg_names:
                raise ReleaseError(f"package '{p.name}' depends on '{d}', which the release does not have")
    jobs: dict[str, JobTarball] = {}
    for j in manifest.jobs:
        job = JobTarball.read_file(root / "jobs" / f"{j.name}.tgz", f"jobs/{j.name}.tgz")
        if job.spec.name != j.name:
            raise ReleaseError(f"jobs/{j.name}.tgz: job.MF names '{job.spec.name}', release.MF '{j.name}'")
        for needed in job.spec.packages:
            if needed not in pkg_names:
                raise ReleaseError(f"job '{j.name}' needs package '{needed}', which the release does not have")
        jobs[j.name] = job
    return LoadedRelease(manifest, root, jobs)


# --- writing a release tarball from a source tree --------------------------------------------------

def fingerprint(files: dict[str, bytes], modes: dict[str, int] | None = None) -> str:
    h = hashlib.sha1()
    for name in sorted(files):
        mode = (modes or {}).get(name, 0o644)
        h.update(f"{name}\0{'x' if mode & 0o111 else '-'}\0{hashlib.sha1(files[name]).hexdigest()}\n".encode())
    return h.hexdigest()


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ReleaseError(f"{path} is missing") from None
    except yaml.YAMLError as e:
        raise ReleaseError(f"{path} is not valid YAML: {e}") from None


def _package_files(src: Path, pkg: str, globs: list[str], blob_dirs: list[Path]) -> tuple[dict[str, bytes], dict[str, int]]:
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for pattern in globs:
        matched = False
        for base in [src / "src", *blob_dirs]:
            for hit in sorted(glob.glob(str(base / pattern), recursive=True)):
                if os.path.isfile(hit):
                    rel = os.path.relpath(hit, base)
                    files.setdefault(rel, Path(hit).read_bytes())
                    modes.setdefault(rel, os.stat(hit).st_mode & 0o777)
                    matched = True
        if not matched:
            places = ", ".join(str(p) for p in [src / "src", *blob_dirs])
            raise ReleaseError(f"package '{pkg}': no file matches '{pattern}' (looked in {places})")
    return files, modes


def create_release(source: str | os.PathLike[str], out: str | os.PathLike[str], *, version: str = "1",
                   name: str | None = None, blob_dirs: list[str | os.PathLike[str]] = ()) -> ReleaseManifest:  # type: ignore[assignment]
    """Build a release tarball from a release source tree. Blocking (reads and gzips files)."""
    src = Path(source)
    blobs = [Path(b) for b in blob_dirs] + [src / "blobs"]
    final = _load_yaml(src / "config" / "final.yml") if (src / "config" / "final.yml").exists() else {}
    rel_name = name or (final or {}).get("final_name") or (final or {}).get("name")
    if not rel_name:
        raise ReleaseError(f"{src}: no release name (config/final.yml name:)")
    outer: dict[str, bytes | str] = {}
    packages: list[ReleaseItem] = []
    for pdir in sorted(p for p in (src / "packages").iterdir() if p.is_dir()) if (src / "packages").is_dir() else []:
        spec = _load_yaml(pdir / "spec")
        if not isinstance(spec, dict) or spec.get("name") != pdir.name:
            raise ReleaseError(f"{pdir / 'spec'}: name must be '{pdir.name}'")
        files, modes = _package_files(src, pdir.name, list(spec.get("files") or []), blobs)
        packaging = pdir / "packaging"
        if not packaging.is_file():
            raise ReleaseError(f"package '{pdir.name}' has no packaging script")
        files["packaging"] = packaging.read_bytes()
        modes["packaging"] = 0o755
        data = tar_files({f"./{k}": v for k, v in files.items()}, {f"./{k}": v for k, v in modes.items()})
        packages.append(ReleaseItem(pdir.name, version, fingerprint(files, modes), hashlib.sha1(data).hexdigest(),
                                    [str(d) for d in spec.get("dependencies") or []]))
        outer[f"./packages/{pdir.name}.tgz"] = data
    jobs: list[ReleaseItem] = []
    for jdir in sorted(p for p in (src / "jobs").iterdir() if p.is_dir()) if (src / "jobs").is_dir() else []:
        spec_path = jdir / "spec"
        if not spec_path.is_file():
            raise ReleaseError(f"job '{jdir.name}' has no spec")
        jspec = JobSpec.parse(spec_path.read_text(), str(spec_path))
        if jspec.name != jdir.name:
            raise ReleaseError(f"{spec_path}: name must be '{jdir.name}'")
        if not (jdir / "monit").is_file():
            raise ReleaseError(f"job '{jdir.name}' has no monit file")
        templates = {}
        for t in jspec.templates:
            tp = jdir / "templates" / t
            if not tp.is_file():
                raise ReleaseError(f"job '{jdir.name}': template '{t}' is missing ({tp})")
            templates[t] = tp.read_text()
        job = JobTarball(jspec, (jdir / "monit").read_text(), templates)
        data = job.to_bytes()
        fp_files = {"job.MF": spec_path.read_bytes(), "monit": job.monit.encode(),
                    **{f"templates/{k}": v.encode() for k, v in templates.items()}}
        jobs.append(ReleaseItem(jdir.name, version, fingerprint(fp_files), hashlib.sha1(data).hexdigest()))
        outer[f"./jobs/{jdir.name}.tgz"] = data
    manifest = ReleaseManifest(str(rel_name), str(version), jobs, packages)
    outer["./release.MF"] = manifest.to_yaml()
    out = Path(out)
    with tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as tmp:
        tmp.write(tar_files(outer))
    os.replace(tmp.name, out)
    return manifest
