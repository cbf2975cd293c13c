"""The BOSH release tarball format: write one from a release tree (``bosh create-release``), read and check one.

::

    release.tgz
    ├── release.MF               name, version, commit_hash, uncommitted_changes, jobs[], packages[], license
    ├── jobs/<job>.tgz           job.MF, monit, [properties_schema.json], templates/<src files>
    ├── packages/<pkg>.tgz       packaging, plus the package's files (from src/ and blobs/)
    └── license.tgz, LICENSE*, NOTICE*   when the tree has LICENSE*/NOTICE* files

Release tree (the bosh CLI's layout): ``config/final.yml`` (``final_name``/``name``, ``blobstore``),
``config/blobs.yml``, ``jobs/<job>/{spec,monit,templates/}``, ``packages/<pkg>/{spec,packaging}``, ``src/``,
``blobs/``. Fingerprints are the bosh CLI's (v2, sha256 over names, contents and modes); archive digests are
sha1 (what the lab's director and agents check). Two styles: ``lab`` (jobs and packages carry the release's
version, as in the deck's 2013 releases) and ``bosh`` (they carry their fingerprint, as the bosh CLI writes
them). What is and is not supported: docs/releases.md.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import lzma
import os
import re
import stat
import subprocess
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

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


_INNER_TABS = re.compile(r"(?<=\S)\t+")


def _yaml(text: str, what: str) -> Any:
    """YAML of a release (spec, job.MF, release.MF, config). A tab inside a plain scalar ("forwarding<TAB>is")
    is YAML that Go's parser (the bosh CLI's, the director's) reads and PyYAML refuses; such tabs are read as
    spaces, as a second try."""
    try:
        return safeyaml.load(text, what=what)
    except safeyaml.YamlError as e:
        if "'\\t' that cannot start any token" in str(e) and _INNER_TABS.search(text):
            try:
                return safeyaml.load(_INNER_TABS.sub(lambda m: " " * len(m.group()), text), what=what)
            except safeyaml.YamlError:
                pass
        raise ReleaseError(str(e)) from None


# --- job.MF ----------------------------------------------------------------------------------------

@dataclass
class JobSpec:
    name: str
    templates: dict[str, str]
    packages: list[str]
    properties: dict[str, dict[str, Any]]
    # Other keys of the spec (provides, consumes, description...): carried into job.MF as they are.
    extra: dict[str, Any] = field(default_factory=dict)

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
        extra = {str(k): v for k, v in doc.items() if k not in ("name", "templates", "packages", "properties")}
        return cls(name, dict(templates), list(packages), props, extra)

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"name": self.name, "templates": self.templates, "packages": self.packages}
        if self.properties:
            doc["properties"] = self.properties
        doc.update(self.extra)
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
    packages: list[str] = field(default_factory=list)     # a job's packages (release.MF ``jobs[].packages``)

    def to_dict(self, package: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "version": self.version, "fingerprint": self.fingerprint, "sha1": self.sha1}
        if package:
            d["dependencies"] = self.dependencies
        else:
            d["packages"] = self.packages
        return d


@dataclass
class ReleaseManifest:
    name: str
    version: str
    jobs: list[ReleaseItem]
    packages: list[ReleaseItem]
    commit_hash: str = "00000000"
    uncommitted_changes: bool = False
    license: ReleaseItem | None = None

    def to_yaml(self) -> str:
        """release.MF as the bosh CLI writes it (its keys, in its order; jobs and packages sorted by name)."""
        doc: dict[str, Any] = {
            "name": self.name, "version": self.version, "commit_hash": self.commit_hash,
            "uncommitted_changes": self.uncommitted_changes,
            "jobs": [j.to_dict(False) for j in self.jobs],
            "packages": [p.to_dict(True) for p in self.packages],
        }
        if self.license is not None:
            doc["license"] = {"version": self.license.version, "fingerprint": self.license.fingerprint,
                              "sha1": self.license.sha1}
        return yaml.safe_dump(doc, sort_keys=False)

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
                pkgs = raw.get("packages") or [] if key == "jobs" else []
                if not isinstance(pkgs, list) or not all(isinstance(x, str) for x in pkgs):
                    raise ReleaseError(f"release.MF {key}[{i}] packages must be a list of package names")
                out.append(ReleaseItem(str(raw["name"]), str(raw["version"]), str(raw.get("fingerprint") or raw["version"]),
                                       str(raw["sha1"]), [str(d) for d in deps], list(pkgs)))
            return out
        lic = doc.get("license")
        license_item = None
        if isinstance(lic, dict) and lic.get("sha1"):
            license_item = ReleaseItem("license", str(lic.get("version") or ""), str(lic.get("fingerprint") or ""),
                                       str(lic["sha1"]))
        return cls(str(doc["name"]), str(doc["version"]), items("jobs"), items("packages"),
                   str(doc.get("commit_hash") or "00000000"), bool(doc.get("uncommitted_changes")), license_item)


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


# --- writing a release tarball from a release tree (``bosh create-release``) -----------------------
#
# What the bosh CLI (v7, github.com/cloudfoundry/bosh-cli ``release/`` and ``releasedir/``) does, and how much
# of it is here: docs/releases.md.

Style = Literal["lab", "bosh"]

GIT_TIMEOUT = 30.0          # seconds for each git command (status, rev-parse)
_GZIP_LEVEL = 6             # gzip's (and ``tar czf``'s) default level
_COPY_BUFSIZE = 1 << 20     # read size when hashing a file


def fingerprint(files: dict[str, bytes], modes: dict[str, int] | None = None) -> str:
    """The bosh CLI's fingerprint of in-memory files (``v2``, sha256; see ``_fingerprint``)."""
    chunks = ["v2"]
    for name in sorted(files):
        mode = (modes or {}).get(name, 0o644)
        chunks.append(f"{name}sha256:{hashlib.sha256(files[name]).hexdigest()}{'100755' if mode & 0o111 else '100644'}")
    return hashlib.sha256("".join(chunks).encode()).hexdigest()


def _fingerprint(entries: list[tuple[str, str, str | None]], chunks: list[str]) -> str:
    """The bosh CLI's ``FingerprinterImpl.Calculate`` with its sha256 digest calculator: sha256 of ``"v2"``,
    then per file, sorted by name, ``name + "sha256:<hex of content>" + mode`` (mode ``100755``/``100644``/
    ``symlink``, or nothing for packaging and license files), then the sorted extra chunks (a package's
    dependencies) joined by ``,``."""
    out = ["v2"]
    for name, digest, mode in sorted(entries):
        out.append(f"{name}sha256:{digest}{mode or ''}")
    if chunks:
        out.append(",".join(sorted(chunks)))
    return hashlib.sha256("".join(out).encode()).hexdigest()


def _rel(src: Path, path: Path) -> str:
    try:
        return str(path.relative_to(src))
    except ValueError:
        return str(path)


def _read_yaml(src: Path, path: Path, *, required: bool = True) -> Any:
    """A YAML file of the release tree; errors name it relative to the tree."""
    where = _rel(src, path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        if not required:
            return None
        raise ReleaseError(f"{where} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseError(f"{where} cannot be read: {e}") from None
    return _yaml(text, where)


# --- versions (go-semi-semantic, as far as release versions need it) ---------------------------------

def _segment(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(c)) if c.isdigit() else (1, c) for c in text.split("."))


def _version_key(v: str) -> tuple[Any, ...]:
    """Sort key: release segment, then pre-release (``-x``, before none), then post-release (``+x``, after none)."""
    main, _, post = v.partition("+")
    rel, _, pre = main.partition("-")
    return (_segment(rel), (0, _segment(pre)) if pre else (1, ()), (1, _segment(post)) if post else (0, ()))


def _increment_last(segment: str) -> str:
    parts = segment.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            parts[i] = str(int(parts[i]) + 1)
            return ".".join(parts)
    raise ReleaseError(f"cannot increment version segment {segment!r}: it has no number")


def next_dev_version(last: str | None) -> str:
    """The bosh CLI's next dev version: ``0+dev.1`` first; after ``X+dev.N`` ``X+dev.N+1``; after a final
    ``X``, ``X+dev.1``."""
    if last is None:
        return "0+dev.1"
    main, sep, post = last.partition("+")
    return f"{main}+{_increment_last(post)}" if sep else f"{main}+dev.1"


def next_final_version(last: str | None) -> str:
    """The bosh CLI's next final version: ``1`` first, else the last one's release segment incremented."""
    if last is None:
        return "1"
    main = last.partition("+")[0].partition("-")[0]
    return _increment_last(main)


@dataclass
class _Index:
    """``dev_releases/<name>/index.yml`` or ``releases/<name>/index.yml``: the builds, as the bosh CLI keeps them."""
    path: Path
    builds: dict[str, dict[str, str]]

    @classmethod
    def load(cls, src: Path, kind: str, name: str) -> _Index:
        path = src / kind / name / "index.yml"
        doc = _read_yaml(src, path, required=False) or {}
        builds = doc.get("builds") if isinstance(doc, dict) else None
        if doc and not isinstance(builds, dict):
            raise ReleaseError(f"{_rel(src, path)}: 'builds' must be a mapping of build id to {{version: ...}}")
        out = {}
        for key, entry in (builds or {}).items():
            if not isinstance(entry, dict) or entry.get("version") in (None, ""):
                raise ReleaseError(f"{_rel(src, path)}: build {key!r} has no version")
            out[str(key)] = {"version": str(entry["version"])}
        return cls(path, out)

    def versions(self) -> list[str]:
        return sorted((b["version"] for b in self.builds.values()), key=_version_key)

    def last(self) -> str | None:
        v = self.versions()
        return v[-1] if v else None

    def add(self, manifest_text: str, name: str, version: str) -> None:
        self.builds[str(uuid.uuid4())] = {"version": version}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / f"{name}-{version}.yml").write_text(manifest_text)
        doc = {"builds": dict(sorted(self.builds.items())), "format-version": "2"}
        _write_atomic(self.path, yaml.safe_dump(doc, sort_keys=False).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


# --- git: commit_hash, uncommitted_changes ---------------------------------------------------------

def _git(src: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
    """``git ARGS`` in ``src``; None when git is not installed."""
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(["git", *args], cwd=src, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"{src}: 'git {' '.join(args)}' took more than {timeout:g} s") from None


def git_state(src: Path, *, force: bool, timeout: float = GIT_TIMEOUT) -> tuple[str, bool, list[str]]:
    """(commit_hash, uncommitted_changes, changed files) as the bosh CLI finds them: ``git status
    --porcelain=1`` (untracked files count) and ``git rev-parse --short HEAD``; ``non-git`` outside a git
    work tree (or without git), ``empty`` in a repository with no commit. A dirty tree is refused unless
    ``force``, naming the changed files."""
    status = _git(src, "status", "--porcelain=1", timeout=timeout)
    if status is None:
        return "non-git", False, []
    if status.returncode != 0:
        if "not a git repository" in status.stderr:
            return "non-git", False, []
        if force:   # git is there but cannot answer (e.g. "dubious ownership"): go on, as a tree without git
            return "non-git", False, []
        raise ReleaseError(f"{src}: 'git status' failed: {status.stderr.strip()}")
    changes = [line for line in status.stdout.splitlines() if line.strip()]
    if changes and not force:
        shown = "\n".join(changes[:50]) + (f"\n... and {len(changes) - 50} more" if len(changes) > 50 else "")
        raise ReleaseError(f"{src}: the git repository has local modifications (use --force to build a release "
                           f"with uncommitted changes):\n{shown}")
    head = _git(src, "rev-parse", "--short", "HEAD", timeout=timeout)
    if head is None or head.returncode != 0:
        return "empty", bool(changes), changes
    return head.stdout.strip(), bool(changes), changes


# --- blobs: config/blobs.yml -----------------------------------------------------------------------

@dataclass
class _Blob:
    path: str                      # key in blobs.yml, relative to blobs/
    size: int
    object_id: str
    digests: dict[str, str]        # algorithm ("sha1", "sha256") -> hex


_HEX = re.compile(r"[0-9a-fA-F]+")
_DIGEST_LEN = {"sha1": 40, "sha256": 64, "sha512": 128}


def _parse_digests(text: str, where: str) -> dict[str, str]:
    """bosh's multiple digest: ``<sha1 hex>``, ``sha256:<hex>``, several joined by ``;``."""
    out = {}
    for part in text.split(";"):
        algo, sep, hexd = part.strip().partition(":")
        if not sep:
            algo, hexd = "sha1", algo
        if algo not in _DIGEST_LEN or not _HEX.fullmatch(hexd) or len(hexd) != _DIGEST_LEN[algo]:
            raise ReleaseError(f"{where}: sha {text!r} is not a sha1 hex digest or 'sha256:<hex>'")
        out[algo] = hexd.lower()
    return out


def _load_blobs(src: Path) -> dict[str, _Blob]:
    path = src / "config" / "blobs.yml"
    doc = _read_yaml(src, path, required=False)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ReleaseError("config/blobs.yml must be a mapping of blob path to {size, object_id, sha}")
    blobs = {}
    for key, raw in doc.items():
        where = f"config/blobs.yml: blob '{key}'"
        if not isinstance(key, str) or not key or key.startswith("/") or ".." in Path(key).parts:
            raise ReleaseError(f"{where}: the path must be relative and stay inside blobs/")
        if not isinstance(raw, dict):
            raise ReleaseError(f"{where} must be a mapping with size, object_id and sha")
        size, sha = raw.get("size"), raw.get("sha")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ReleaseError(f"{where}: size must be a number of bytes")
        if not isinstance(sha, str) or not sha:
            raise ReleaseError(f"{where} has no sha")
        blobs[os.path.normpath(key)] = _Blob(key, size, str(raw.get("object_id") or ""), _parse_digests(sha, where))
    return blobs


def _blobstore(src: Path) -> tuple[str, dict[str, Any]]:
    final = _read_yaml(src, src / "config" / "final.yml", required=False) or {}
    private = _read_yaml(src, src / "config" / "private.yml", required=False) or {}
    store = final.get("blobstore") if isinstance(final, dict) else None
    if not isinstance(store, dict):
        return "", {}
    options = dict(store.get("options") or {})
    pstore = private.get("blobstore") if isinstance(private, dict) else None
    if isinstance(pstore, dict):
        options.update(pstore.get("options") or {})
    return str(store.get("provider") or ""), options


class _HashingReader:
    """Reads ``f`` for tarfile, hashing what goes by (sha256 always, plus the algorithms asked for)."""

    def __init__(self, f: IO[bytes], algos: set[str]) -> None:
        self.f = f
        self.hashes = {a: hashlib.new(a) for a in {"sha256", *algos}}
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        for h in self.hashes.values():
            h.update(data)
        self.size += len(data)
        return data

    def digests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self.hashes.items()}


class _HashingWriter:
    """A file for gzip to write into, keeping the sha1 (and size) of what was written."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.sha1 = hashlib.sha1()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha1.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _hash_file(path: Path, algos: set[str]) -> dict[str, str]:
    with open(path, "rb") as f:
        r = _HashingReader(f, algos)
        while r.read(_COPY_BUFSIZE):
            pass
    return r.digests()


def _check_blob(blob: _Blob, got: dict[str, str], size: int) -> None:
    if size != blob.size:
        raise ReleaseError(f"blob '{blob.path}' (blobs/{blob.path}): size mismatch: config/blobs.yml says {blob.size} "
                           f"bytes, the file has {size}")
    for algo, want in blob.digests.items():
        if got.get(algo) != want:
            prefix = "" if algo == "sha1" else f"{algo}:"
            raise ReleaseError(f"blob '{blob.path}' (blobs/{blob.path}): {algo} mismatch: config/blobs.yml says "
                               f"{prefix}{want}, the file has {prefix}{got.get(algo)}")


def _fetch_blob(src: Path, blob: _Blob, provider: str, options: dict[str, Any]) -> None:
    """A blob missing from blobs/: from a ``local`` provider's directory, checked; any other provider is an
    error (bosh-lab does not download from S3, GCS, DAV... here)."""
    dest = src / "blobs" / blob.path
    if provider == "local" and blob.object_id and options.get("blobstore_path"):
        store = Path(str(options["blobstore_path"]))
        if not store.is_absolute():
            store = src / store
        source = store / blob.object_id
        if not source.is_file():
            raise ReleaseError(f"blob '{blob.path}' is missing from blobs/ and from the local blobstore "
                               f"({source} does not exist)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp, open(source, "rb") as f:
            r = _HashingReader(f, set(blob.digests))
            while chunk := r.read(_COPY_BUFSIZE):
                tmp.write(chunk)
        try:
            _check_blob(blob, r.digests(), r.size)
        except ReleaseError:
            os.unlink(tmp.name)
            raise
        os.replace(tmp.name, dest)
        return
    where = f"config/final.yml blobstore provider '{provider}'" if provider else "no blobstore in config/final.yml"
    raise ReleaseError(f"blob '{blob.path}' (config/blobs.yml, object_id {blob.object_id or '-'}) is missing from "
                       f"blobs/: bosh-lab does not download blobs from a release's blobstore ({where}); put the file "
                       f"at blobs/{blob.path} (only a 'local' provider's blobstore_path is read)")


# --- packages, jobs, license -----------------------------------------------------------------------

@dataclass
class _Entry:
    """One file (or symlink) of a package, job or license archive."""
    name: str                   # path inside the archive (and in the fingerprint)
    path: Path                  # on disk
    fp_mode: str | None         # the fingerprint's mode chunk (None: not part of it)
    link: str | None = None     # symlink target, kept as a symlink
    blob: _Blob | None = None   # a blob of config/blobs.yml: checked while it is read
    data: bytes | None = None   # content given in memory (a normalised job.MF)


def _mode_chunk(st: os.stat_result) -> str:
    return "100755" if st.st_mode & 0o111 else "100644"


def _glob(base: Path, pattern: str) -> list[str]:
    if not base.is_dir():
        return []
    return sorted(glob.glob(pattern, root_dir=base, recursive=True, include_hidden=True))


def _packageable(base: Path, rel: str) -> bool:
    """A file or symlink (not a directory), not reached through a symlinked directory (as the bosh CLI)."""
    path = base / rel
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return False
    if stat.S_ISLNK(st.st_mode):
        return True
    return os.path.realpath(path) == os.path.join(os.path.realpath(base), os.path.normpath(rel))


@dataclass
class _Package:
    name: str
    spec_path: Path
    dependencies: list[str]
    entries: list[_Entry]


def _read_package(src: Path, pdir: Path, bases: list[Path], blobs: dict[str, _Blob]) -> _Package:
    where = f"packages/{pdir.name}/spec"
    if (pdir / "spec.lock").exists():
        raise ReleaseError(f"packages/{pdir.name}/spec.lock: vendored packages (bosh vendor-package) are not "
                           f"supported by bosh-lab's create-release")
    if not (pdir / "spec").is_file():
        raise ReleaseError(f"{where} is missing")
    spec = _read_yaml(src, pdir / "spec")
    if not isinstance(spec, dict):
        raise ReleaseError(f"{where} must be a YAML mapping (name, dependencies, files)")
    if spec.get("name") != pdir.name:
        raise ReleaseError(f"{where}: name must be '{pdir.name}' (the directory's name), not {spec.get('name')!r}")
    check_name(pdir.name, f"{where}: package name")
    lists = {}
    for key in ("files", "excluded_files", "dependencies"):
        value = spec.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ReleaseError(f"{where}: {key} must be a list of strings")
        lists[key] = list(value)
    for d in lists["dependencies"]:
        check_name(d, f"{where}: dependency")
    if (pdir / "pre_packaging").exists():
        raise ReleaseError(f"packages/{pdir.name}/pre_packaging: pre_packaging scripts are not supported by "
                           f"bosh-lab's create-release (they are deprecated in BOSH)")
    if not (pdir / "packaging").is_file():
        raise ReleaseError(f"packages/{pdir.name}/packaging is missing")
    found: dict[str, tuple[Path, str]] = {}       # name -> (base, rel)
    for pattern in lists["files"]:
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise ReleaseError(f"{where}: files pattern '{pattern}' must be relative and stay inside src/ or blobs/")
        matched = False
        for base in bases:
            for rel in _glob(base, pattern):
                if _packageable(base, rel):
                    matched = True
                    found.setdefault(os.path.normpath(rel), (base, rel))
        if not matched:
            places = ", ".join(_rel(src, b) + "/" for b in bases)
            raise ReleaseError(f"{where}: no file matches '{pattern}' (a 'files' pattern; looked in {places})")
    for pattern in lists["excluded_files"]:
        for base in bases:
            for rel in _glob(base, pattern):
                found.pop(os.path.normpath(rel), None)
    if "packaging" in found or "pre_packaging" in found:
        raise ReleaseError(f"{where}: 'packaging' must not be included through 'files'")
    entries = [_Entry("packaging", pdir / "packaging", None)]
    blobs_dir = src / "blobs"
    for name, (base, rel) in sorted(found.items()):
        path = base / rel
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            entries.append(_Entry(name, path, "symlink", link=os.readlink(path)))
        else:
            blob = blobs.get(name) if base == blobs_dir else None
            entries.append(_Entry(name, path, _mode_chunk(st), blob=blob))
    return _Package(pdir.name, pdir / "spec", lists["dependencies"], entries)


def _check_dependencies(packages: dict[str, _Package]) -> None:
    for p in packages.values():
        for d in p.dependencies:
            if d not in packages:
                raise ReleaseError(f"packages/{p.name}/spec: dependency '{d}' is not a package of the release "
                                   f"(packages: {', '.join(sorted(packages)) or 'none'})")
    state: dict[str, int] = {}      # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ReleaseError(f"packages/{name}/spec: dependency cycle {' -> '.join(cycle)}")
        state[name] = 1
        for d in packages[name].dependencies:
            visit(d, [*path, name])
        state[name] = 2
    for name in sorted(packages):
        visit(name, [])


@dataclass
class _Job:
    name: str
    spec: JobSpec
    entries: list[_Entry]


def _read_job(src: Path, jdir: Path, style: Style) -> _Job:
    spec_path = jdir / "spec"
    where = f"jobs/{jdir.name}/spec"
    if not spec_path.is_file():
        raise ReleaseError(f"{where} is missing")
    try:
        text = spec_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ReleaseError(f"{where} cannot be read: {e}") from None
    spec = JobSpec.parse(text, where)
    if spec.name != jdir.name:
        raise ReleaseError(f"{where}: name must be '{jdir.name}' (the directory's name), not '{spec.name}'")
    # The bosh CLI fingerprints the job's files following symlinks, but with the link's own mode bits.
    st = os.lstat(spec_path)
    mf = _Entry("job.MF", spec_path, _mode_chunk(st), data=None if style == "bosh" else spec.to_yaml().encode())
    entries = [mf]
    monit = jdir / "monit"
    if not monit.is_file():
        raise ReleaseError(f"jobs/{jdir.name}/monit is missing (every job needs a monit file, even an empty one)")
    entries.append(_Entry("monit", monit, _mode_chunk(os.lstat(monit))))
    schema = jdir / "properties_schema.json"
    if schema.is_file():
        entries.append(_Entry("properties_schema.json", schema, _mode_chunk(os.lstat(schema))))
    for t in spec.templates:
        tp = jdir / "templates" / t
        if not tp.is_file():
            raise ReleaseError(f"{where}: template '{t}' is missing (jobs/{jdir.name}/templates/{t})")
        entries.append(_Entry(f"templates/{os.path.normpath(t)}", tp, _mode_chunk(os.lstat(tp))))
    return _Job(jdir.name, spec, entries)


def _license(src: Path) -> list[_Entry]:
    hits = sorted(glob.glob("LICENSE*", root_dir=src)) + sorted(glob.glob("NOTICE*", root_dir=src))
    return [_Entry(h, src / h, None) for h in hits if (src / h).is_file()]


def _tarinfo(name: str, *, mode: int, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _write_archive(entries: list[_Entry], out: Path, chunks: Sequence[str] = ()) -> tuple[str, str]:
    """A deterministic tar.gz of ``entries`` (files streamed, never read whole; modes 0755 or 0644 by the owner's
    execute bit, as the bosh CLI stages them; no directory entries). Returns (sha1 of the archive, fingerprint
    over the content read). Blobs are checked against config/blobs.yml as they go by."""
    fp: list[tuple[str, str, str | None]] = []
    by_name = {e.name: e for e in entries}
    names = sorted(by_name, key=lambda n: n.split("/"))
    with open(out, "wb") as raw:
        w = _HashingWriter(raw)
        with gzip.GzipFile(filename="", fileobj=w, mode="wb", mtime=0, compresslevel=_GZIP_LEVEL) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                e = by_name[name]
                if e.link is not None:
                    tar.addfile(_tarinfo(f"./{name}", mode=0o777, kind=tarfile.SYMTYPE, link=e.link))
                    fp.append((name, hashlib.sha256(e.link.encode()).hexdigest(), e.fp_mode))
                    continue
                if e.data is not None:
                    tar.addfile(_tarinfo(f"./{name}", mode=0o644, size=len(e.data)), io.BytesIO(e.data))
                    # the fingerprint is over the source file (the job's spec)
                    fp.append((name, _hash_file(e.path, set())["sha256"], e.fp_mode))
                    continue
                with open(e.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    mode = 0o755 if st.st_mode & 0o100 else 0o644
                    r = _HashingReader(f, set(e.blob.digests) if e.blob else set())
                    try:
                        tar.addfile(_tarinfo(f"./{name}", mode=mode, size=st.st_size), r)
                    except OSError as err:     # tarfile: "unexpected end of data" when the file shrank
                        raise ReleaseError(f"{e.path}: changed while it was read ({err})") from None
                got = r.digests()
                if e.blob is not None:
                    _check_blob(e.blob, got, r.size)
                fp.append((name, got["sha256"], e.fp_mode))
    return w.sha1.hexdigest(), _fingerprint(fp, list(chunks))


@dataclass
class BuiltRelease:
    """What ``build_release`` made: the manifest (release.MF), where the tarball is, the git changes it carries."""
    manifest: ReleaseManifest
    tarball: Path
    changes: list[str] = field(default_factory=list)


def _release_name(src: Path, name: str | None) -> str:
    if name:
        return check_name(name, "release name")
    final = _read_yaml(src, src / "config" / "final.yml", required=False) or {}
    if not isinstance(final, dict):
        raise ReleaseError("config/final.yml must be a YAML mapping")
    n, fn = final.get("name"), final.get("final_name")
    if n and fn and n != fn:
        raise ReleaseError(f"config/final.yml has both name ({n!r}) and final_name ({fn!r}); keep one")
    if n or fn:
        return check_name(n or fn, "config/final.yml name")
    dev = _read_yaml(src, src / "config" / "dev.yml", required=False) or {}
    if isinstance(dev, dict) and dev.get("dev_name"):
        return check_name(dev["dev_name"], "config/dev.yml dev_name")
    raise ReleaseError(f"{src}: the release has no name: give --name, or set 'final_name' (or 'name') in "
                       f"config/final.yml or 'dev_name' in config/dev.yml")


def build_release(source: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                  version: str | None = "1", name: str | None = None,
                  blob_dirs: Sequence[str | os.PathLike[str]] = (), force: bool = True, final: bool = False,
                  style: Style = "lab", git_timeout: float = GIT_TIMEOUT) -> BuiltRelease:
    """Build a release tarball from a release tree, as ``bosh create-release`` does (docs/releases.md).

    ``version``: the release's version; None takes the next one from the tree's indexes (dev:
    ``0+dev.N`` after the last dev or final version in ``dev_releases/<name>/index.yml`` and
    ``releases/<name>/index.yml``; ``final``: the last final version incremented, ``1`` first).
    ``force``: build a git tree with uncommitted changes (without it they are refused, naming the files).
    ``style``: ``"lab"`` (the deck's 2013 layout, the default for the lab's own callers: jobs and packages
    versioned with the release version, job.MF written from the parsed spec) or ``"bosh"`` (the bosh CLI's:
    jobs and packages versioned by fingerprint, the spec copied as job.MF unchanged, and the build recorded in
    ``dev_releases/<name>/`` or, with ``final``, ``releases/<name>/`` as the bosh CLI records it).
    ``out``: the tarball (``((version))`` in it is replaced); None: ``dev_releases/<name>/<name>-<version>.tgz``
    (``releases/...`` when ``final``). ``blob_dirs``: more directories package files are looked up in (after
    ``src/``, before ``blobs/``). Blocking: files are streamed, never read whole."""
    src = Path(source)
    if not src.is_dir():
        raise ReleaseError(f"{src}: no such release directory")
    if not (src / "jobs").is_dir() and not (src / "packages").is_dir():
        raise ReleaseError(f"{src}: not a release directory (it has neither jobs/ nor packages/)")
    rel_name = _release_name(src, name)
    commit, dirty, changes = git_state(src, force=force, timeout=git_timeout)

    dev_index = _Index.load(src, "dev_releases", rel_name)
    final_index = _Index.load(src, "releases", rel_name)
    if version is None or version == "":
        if final:
            version = next_final_version(final_index.last())
        else:
            lasts = [v for v in (dev_index.last(), final_index.last()) if v is not None]
            version = next_dev_version(max(lasts, key=_version_key) if lasts else None)
    version = check_name(str(version), "release version")
    index = final_index if final else dev_index
    if style == "bosh" and version in index.versions():
        raise ReleaseError(f"release '{rel_name}' version '{version}' already exists in {_rel(src, index.path)}")

    blobs = _load_blobs(src)
    provider, options = _blobstore(src)
    for blob in blobs.values():
        local = src / "blobs" / blob.path
        if not local.exists():
            _fetch_blob(src, blob, provider, options)
        elif not local.is_file():
            raise ReleaseError(f"blob '{blob.path}': blobs/{blob.path} is not a file")
        elif local.stat().st_size != blob.size:
            _check_blob(blob, {}, local.stat().st_size)

    bases = [src / "src", *(Path(b) for b in blob_dirs), src / "blobs"]
    packages: dict[str, _Package] = {}
    pdirs = sorted(p for p in (src / "packages").iterdir() if p.is_dir()) if (src / "packages").is_dir() else []
    for pdir in pdirs:
        packages[pdir.name] = _read_package(src, pdir, bases, blobs)
    _check_dependencies(packages)
    jobs: list[_Job] = []
    jdirs = sorted(p for p in (src / "jobs").iterdir() if p.is_dir()) if (src / "jobs").is_dir() else []
    for jdir in jdirs:
        job = _read_job(src, jdir, style)
        for needed in job.spec.packages:
            if needed not in packages:
                raise ReleaseError(f"jobs/{job.name}/spec: package '{needed}' is not a package of the release "
                                   f"(packages: {', '.join(sorted(packages)) or 'none'})")
        jobs.append(job)
    license_entries = _license(src)

    kind = "releases" if final else "dev_releases"
    target = Path(str(out).replace("((version))", version)) if out is not None else \
        src / kind / rel_name / f"{rel_name}-{version}.tgz"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".create-release-") as work:
        wdir = Path(work)
        parts: list[tuple[str, Path]] = []
        pkg_items: list[ReleaseItem] = []
        used: set[str] = set()
        for p in packages.values():
            path = wdir / f"packages/{p.name}.tgz"
            path.parent.mkdir(exist_ok=True)
            sha1, fp = _write_archive(p.entries, path, p.dependencies)
            used.update(e.blob.path for e in p.entries if e.blob is not None)
            pkg_items.append(ReleaseItem(p.name, fp if style == "bosh" else version, fp, sha1, list(p.dependencies)))
            parts.append((f"packages/{p.name}.tgz", path))
        for blob in blobs.values():       # blobs no package uses are checked too (as the bosh CLI's sync does)
            if blob.path not in used and os.path.normpath(blob.path) not in used:
                _check_blob(blob, _hash_file(src / "blobs" / blob.path, set(blob.digests)),
                            (src / "blobs" / blob.path).stat().st_size)
        job_items: list[ReleaseItem] = []
        for j in jobs:
            path = wdir / f"jobs/{j.name}.tgz"
            path.parent.mkdir(exist_ok=True)
            sha1, fp = _write_archive(j.entries, path)
            job_items.append(ReleaseItem(j.name, fp if style == "bosh" else version, fp, sha1,
                                         packages=list(j.spec.packages)))
            parts.append((f"jobs/{j.name}.tgz", path))
        lic: ReleaseItem | None = None
        if license_entries:
            path = wdir / "license.tgz"
            sha1, fp = _write_archive(license_entries, path)
            lic = ReleaseItem("license", fp, fp, sha1)
            parts.append(("license.tgz", path))
            parts.extend((e.name, e.path) for e in license_entries)
        manifest = ReleaseManifest(rel_name, version, job_items, pkg_items, commit, dirty, lic)
        mf = manifest.to_yaml().encode()
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
            try:
                with gzip.GzipFile(filename="", fileobj=tmp, mode="wb", mtime=0, compresslevel=_GZIP_LEVEL) as gz, \
                        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    tar.addfile(_tarinfo("./release.MF", mode=0o644, size=len(mf)), io.BytesIO(mf))
                    for arc, path in parts:
                        with open(path, "rb") as f:
                            size = os.fstat(f.fileno()).st_size
                            tar.addfile(_tarinfo(f"./{arc}", mode=0o644, size=size), f)
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, target)
    if style == "bosh":
        index.add(manifest.to_yaml(), rel_name, version)
    return BuiltRelease(manifest, target, changes)


def create_release(source: str | os.PathLike[str], out: str | os.PathLike[str], *, version: str | None = "1",
                   name: str | None = None, blob_dirs: Sequence[str | os.PathLike[str]] = (), force: bool = True,
                   final: bool = False, style: Style = "lab") -> ReleaseManifest:
    """Build a release tarball at ``out`` from a release tree; its release.MF. See ``build_release``. Blocking."""
    return build_release(source, out, version=version, name=name, blob_dirs=blob_dirs, force=force, final=final,
                         style=style).manifest
