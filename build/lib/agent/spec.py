"""The apply spec (2013 style, protocol.md §9) and its copy on disk, ``/var/vcap/bosh/spec.json``.

The types (``ApplySpec``, ``JobSpec``, ``BlobRef``) are the shared ones of ``boshlab.contracts``, re-exported here."""
from __future__ import annotations

import json
from typing import Any, cast

from boshlab.contracts import ApplySpec as ApplySpec
from boshlab.contracts import BlobRef as BlobRef
from boshlab.contracts import JobSpec as JobSpec

from .paths import Paths
from .settings import write_json_atomic


class SpecError(ValueError):
    pass


def job_templates(spec: ApplySpec) -> list[BlobRef]:
    """The release jobs to install: ``job.templates``, or the single ``job.template`` of older specs."""
    job = spec.get("job")
    if not isinstance(job, dict):
        return []
    templates = job.get("templates")
    if isinstance(templates, list):
        return [t for t in templates if isinstance(t, dict)]
    if isinstance(job.get("template"), str):
        return [{"name": job["template"], "version": str(job.get("version", "")),
                 "sha1": str(job.get("sha1", "")), "blobstore_id": str(job.get("blobstore_id", ""))}]
    return []


def job_names(spec: ApplySpec) -> list[str]:
    return [str(t["name"]) for t in job_templates(spec) if t.get("name")]


def packages(spec: ApplySpec) -> dict[str, BlobRef]:
    pkgs = spec.get("packages")
    return {str(k): v for k, v in pkgs.items() if isinstance(v, dict)} if isinstance(pkgs, dict) else {}


def check_name(name: str, what: str) -> str:
    """Job and package names become path components under /var/vcap: no slashes, no dot names."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise SpecError(f"{what}: {name!r} is not a valid name")
    return name


def check_blob_ref(ref: Any, what: str) -> BlobRef:
    """A job template or package entry must name its blob; the error names what is missing."""
    if not isinstance(ref, dict):
        raise SpecError(f"{what} must be an object")
    for key in ("name", "version", "sha1", "blobstore_id"):
        if not isinstance(ref.get(key), (str, int, float)) or str(ref.get(key)) == "":
            raise SpecError(f"{what} has no {key}")
    check_name(str(ref["name"]), what)
    return cast(BlobRef, ref)


class SpecStore:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def load(self) -> ApplySpec:
        try:
            doc = json.loads(self.paths.spec.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return cast(ApplySpec, doc) if isinstance(doc, dict) else {}

    def save(self, spec: ApplySpec) -> None:
        write_json_atomic(self.paths.spec, spec)
