"""Tar helpers shared by director and agent: safe extraction and deterministic gzip tars of a directory."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path


class UnsafeTarball(ValueError):
    """A tar entry would land outside its target directory (or is a device/fifo)."""


def check_members(tar: tarfile.TarFile, dest: str | os.PathLike[str]) -> list[tarfile.TarInfo]:
    root = os.path.realpath(dest)
    members = tar.getmembers()
    for m in members:
        name = m.name
        target = os.path.realpath(os.path.join(root, name))
        if os.path.isabs(name) or not (target == root or target.startswith(root + os.sep)):
            raise UnsafeTarball(f"tar entry {name!r} would land outside {dest}")
        if m.issym() or m.islnk():
            link = m.linkname
            base = os.path.dirname(target) if m.issym() else root
            ltarget = os.path.realpath(os.path.join(base, link))
            if os.path.isabs(link) or not (ltarget == root or ltarget.startswith(root + os.sep)):
                raise UnsafeTarball(f"tar entry {name!r} links outside {dest} ({link!r})")
        if m.isdev() or m.isfifo():
            raise UnsafeTarball(f"tar entry {name!r} is a device or fifo")
    return members


def safe_extract(archive: str | os.PathLike[str] | bytes, dest: str | os.PathLike[str]) -> None:
    """Extract a (gzipped or plain) tar into ``dest``, refusing every entry that escapes it.
    Nothing is written when any entry is refused. Blocking: call through ``asyncio.to_thread``."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else None
    name = None if fileobj else os.fspath(archive)  # type: ignore[arg-type,unused-ignore]
    with tarfile.open(name=name, fileobj=fileobj, mode="r:*") as tar:
        members = check_members(tar, dest)
        if hasattr(tarfile, "tar_filter"):   # Python >= 3.11.4 (Debian bookworm has 3.11.2)
            tar.extractall(dest, members=members, filter="tar")
        else:
            tar.extractall(dest, members=members)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def tar_directory(src: str | os.PathLike[str], out: str | os.PathLike[str], prefix: str = ".") -> None:
    """Write ``out`` (tar.gz) with the contents of ``src`` relative to it (entries ``./x``), sorted and with
    fixed owners and times so the same content gives the same bytes. Blocking."""
    import gzip

    src = os.fspath(src)
    with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = os.path.relpath(dirpath, src)
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                full = os.path.join(dirpath, name)
                arc = os.path.normpath(os.path.join(prefix, rel, name))
                tar.add(full, arcname=arc if prefix != "." else "./" + arc, recursive=False, filter=_normalise)


def tar_files(files: dict[str, bytes | str], modes: dict[str, int] | None = None) -> bytes:
    """A deterministic tar.gz in memory from ``{archive name: content}``."""
    import gzip

    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            raw = data.encode() if isinstance(data, str) else data
            info = _normalise(tarfile.TarInfo(name))
            info.size = len(raw)
            info.mode = (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()
