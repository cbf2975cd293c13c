"""Tar helpers shared by director and agent: safe extraction and deterministic gzip tars of a directory.

``safe_extract`` never uses ``tarfile``'s ``extractall`` (nor its ``filter=``, which Debian bookworm's Python
3.11.2 lacks): it walks the members itself and writes each one itself. It refuses

* absolute names and names with a ``..`` component;
* device, fifo and other special members (only files, directories, symlinks and hard links are written);
* a member whose real destination, following the symlinks earlier members made, leaves the target;
* a symlink whose target is absolute or, resolved from the link's real directory (following existing
  links), leaves the target; every symlink is checked again once the whole archive is out, so a later
  link cannot turn an earlier one into an escape;
* a hard link to anything but a regular file an earlier member of the same archive wrote;
* more than ``max_members`` members, a file larger than ``max_member_bytes``, more than ``max_bytes`` in all.

Files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (an existing entry is unlinked first, never written
through); modes lose setuid/setgid/sticky and group/other write (as ``tarfile.tar_filter`` does); owners are
not restored. Everything is extracted into a fresh temporary directory next to the target and renamed into
place at the end, so a refused archive leaves nothing behind.

Limits: ``TarLimits`` (defaults ``MAX_BYTES``, ``MAX_MEMBERS``, ``MAX_MEMBER_BYTES``), overridable per call
and, when a call passes none, with the environment variables ``BOSH_LAB_TAR_MAX_BYTES``,
``BOSH_LAB_TAR_MAX_MEMBERS`` and ``BOSH_LAB_TAR_MAX_MEMBER_BYTES`` (director and agent alike).
"""
from __future__ import annotations

import errno
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass

MAX_BYTES = 4 << 30            # total of the regular files' sizes in one archive (4 GiB)
MAX_MEMBERS = 100_000          # entries in one archive
MAX_MEMBER_BYTES = 4 << 30     # one regular file
MAX_SYMLINK_HOPS = 40          # as Linux's MAXSYMLINKS
_CHUNK = 1 << 20


class UnsafeTarball(ValueError):
    """An archive was refused: an entry would land (or link) outside its target directory, is a device,
    fifo or other special file, breaks a limit, or the archive cannot be read. The text names the entry."""


class TarballTooLarge(UnsafeTarball):
    """An archive breaks one of the ``TarLimits``; the text names the entry and the limit."""


class CorruptTarball(UnsafeTarball, tarfile.TarError):
    """The archive is not a readable (gzipped/bzipped/xz or plain) tar."""


def env_int(name: str, default: int) -> int:
    """A positive integer from the environment variable ``name``, else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class TarLimits:
    max_bytes: int = MAX_BYTES
    max_members: int = MAX_MEMBERS
    max_member_bytes: int = MAX_MEMBER_BYTES

    @classmethod
    def from_env(cls) -> TarLimits:
        return cls(env_int("BOSH_LAB_TAR_MAX_BYTES", MAX_BYTES),
                   env_int("BOSH_LAB_TAR_MAX_MEMBERS", MAX_MEMBERS),
                   env_int("BOSH_LAB_TAR_MAX_MEMBER_BYTES", MAX_MEMBER_BYTES))


def _member_parts(name: str, what: str = "tar entry") -> list[str]:
    """The components of an archive name, refusing absolute names and ``..``; ``[]`` for the root."""
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeTarball(f"{what} {name!r} would land outside the target directory (it has an absolute name)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeTarball(f"{what} {name!r} would land outside the target directory (it has a '..' component)")
    return parts


def _resolve(root: str, parts: list[str], name: str) -> list[str]:
    """Where ``parts`` (relative to ``root``) really is, following the symlinks now on disk, as components
    with no symlink among the existing ones; refuses anything that leaves ``root`` on the way."""
    out: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if not out:
                raise UnsafeTarball(f"tar entry {name!r} would land outside the target directory")
            out.pop()
            continue
        path = os.path.join(root, *out, c)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            out.append(c)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise UnsafeTarball(f"tar entry {name!r}: too many levels of symbolic links")
            target = os.readlink(path)
            if target.startswith("/"):
                raise UnsafeTarball(f"tar entry {name!r} would go through a link to an absolute path ({target!r})")
            todo = target.split("/") + todo
            continue
        out.append(c)
    return out


def _mode(mode: int, directory: bool) -> int:
    m = mode & 0o755                     # no setuid/setgid/sticky, no group/other write
    return m | 0o700 if directory else m  # we (and whoever cleans up) must be able to enter directories


def _utime(fd: int, mtime: float) -> None:
    try:
        os.utime(fd, (mtime, mtime))
    except (OverflowError, OSError, ValueError):   # an absurd time in the archive: keep the current one
        pass


class _Extractor:
    def __init__(self, root: str, limits: TarLimits) -> None:
        self.root = root
        self.limits = limits
        self.members = 0
        self.total = 0
        self.files: dict[str, tuple[int, int]] = {}           # archive name -> (dev, inode) we wrote
        self.dirs: dict[tuple[str, ...], tuple[int, int]] = {}  # real path -> (mode, mtime)
        self.links: list[list[str]] = []                       # real paths of the symlinks we made
        self.root_mode: int | None = None

    def path(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts)

    def check(self, m: tarfile.TarInfo) -> list[str]:
        name = m.name
        self.members += 1
        if self.members > self.limits.max_members:
            raise TarballTooLarge(f"tar entry {name!r}: the archive has more than {self.limits.max_members} "
                                  f"entries (limit max_members, BOSH_LAB_TAR_MAX_MEMBERS)")
        parts = _member_parts(name)
        if m.ischr() or m.isblk():
            raise UnsafeTarball(f"tar entry {name!r} is a device file")
        if m.isfifo():
            raise UnsafeTarball(f"tar entry {name!r} is a fifo")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeTarball(f"tar entry {name!r} has an unsupported type {m.type!r}")
        if m.isreg():
            if m.size > self.limits.max_member_bytes:
                raise TarballTooLarge(f"tar entry {name!r} is {m.size} bytes, more than the limit of "
                                      f"{self.limits.max_member_bytes} bytes for one entry "
                                      f"(max_member_bytes, BOSH_LAB_TAR_MAX_MEMBER_BYTES)")
            self.total += m.size
            if self.total > self.limits.max_bytes:
                raise TarballTooLarge(f"tar entry {name!r}: the archive holds more than {self.limits.max_bytes} "
                                      f"bytes (limit max_bytes, BOSH_LAB_TAR_MAX_BYTES)")
        if not parts and not m.isdir():
            raise UnsafeTarball(f"tar entry {name!r} names the target directory itself")
        return parts

    def parent(self, parts: list[str], name: str) -> list[str]:
        """The real directory a member goes into, created (as plain directories) where missing."""
        real = _resolve(self.root, parts[:-1], name)
        for i in range(len(real)):
            p = self.path(real[:i + 1])
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                os.mkdir(p, 0o700)
                self.dirs.setdefault(tuple(real[:i + 1]), (0o755, -1))
                continue
            if not stat.S_ISDIR(st.st_mode):   # _resolve followed every link, so this is a file
                raise UnsafeTarball(f"tar entry {name!r}: {'/'.join(real[:i + 1])!r} is not a directory")
        return real

    def make_room(self, dest: str, name: str, directory: bool) -> bool:
        """Clear ``dest`` for a new entry (never following a link there); True when it is a directory
        that stays (a directory member over a directory)."""
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if directory:
                return True
            raise UnsafeTarball(f"tar entry {name!r} would replace a directory")
        os.unlink(dest)                      # a file or symlink of an earlier member: replaced, not followed
        return False

    def extract(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = m.name
        parts = self.check(m)
        if not parts:                        # "./": the target directory's own mode
            self.root_mode = _mode(m.mode, True)
            return
        real = self.parent(parts, name) + [parts[-1]]
        dest = self.path(real)
        if m.isdir():
            if not self.make_room(dest, name, True):
                os.mkdir(dest, 0o700)
            self.dirs[tuple(real)] = (_mode(m.mode, True), int(m.mtime))
        elif m.issym():
            target = m.linkname
            if not target:
                raise UnsafeTarball(f"tar entry {name!r} is a symlink with an empty target")
            if target.startswith("/"):
                raise UnsafeTarball(f"tar entry {name!r} links to an absolute path ({target!r})")
            try:
                _resolve(self.root, real[:-1] + target.split("/"), name)
            except UnsafeTarball:
                raise UnsafeTarball(f"tar entry {name!r} links outside the target directory ({target!r})") from None
            self.make_room(dest, name, False)
            os.symlink(target, dest)
            self.links.append(real)
        elif m.islnk():
            key = "/".join(_member_parts(m.linkname, f"tar entry {name!r}: hard link target"))
            if key not in self.files:
                raise UnsafeTarball(f"tar entry {name!r} is a hard link to {m.linkname!r}, "
                                    f"which is not a file extracted before it")
            src = self.path(_resolve(self.root, key.split("/"), name))
            st = os.lstat(src) if os.path.lexists(src) else None
            if st is None or not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != self.files[key]:
                raise UnsafeTarball(f"tar entry {name!r} is a hard link to {m.linkname!r}, "
                                    f"which is no longer the file extracted for it")
            if src != dest:                  # a hard link to itself: the file is already there
                self.make_room(dest, name, False)
                os.link(src, dest, follow_symlinks=False)
            self.files["/".join(parts)] = self.files[key]
        else:
            self.make_room(dest, name, False)
            self.files["/".join(parts)] = self.write(tar, m, dest)

    def write(self, tar: tarfile.TarFile, m: tarfile.TarInfo, dest: str) -> tuple[int, int]:
        """Write a regular member at ``dest`` (which must not exist: never through a link); (dev, inode)."""
        src = tar.extractfile(m)
        assert src is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(dest, flags, 0o600)
        try:
            left = m.size
            with os.fdopen(os.dup(fd), "wb") as out:
                while left > 0:
                    chunk = src.read(min(_CHUNK, left))
                    if not chunk:
                        raise CorruptTarball(f"tar entry {m.name!r} is truncated")
                    out.write(chunk)
                    left -= len(chunk)
            os.fchmod(fd, _mode(m.mode, False))
            _utime(fd, m.mtime)
            st = os.fstat(fd)
            return st.st_dev, st.st_ino
        finally:
            os.close(fd)

    def finish(self) -> None:
        for real in self.links:              # a later member may have made an earlier link point outside
            try:
                _resolve(self.root, real, "/".join(real))
            except UnsafeTarball:
                raise UnsafeTarball(f"tar entry {'/'.join(real)!r} links outside the target directory "
                                    f"({os.readlink(self.path(real))!r}, through links of later entries)") from None
        for real_t in sorted(self.dirs, key=len, reverse=True):
            mode, mtime = self.dirs[real_t]
            fd = os.open(self.path(list(real_t)), os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.fchmod(fd, mode)
                if mtime >= 0:
                    _utime(fd, mtime)
            finally:
                os.close(fd)


_UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def _open(archive: str | os.PathLike[str] | bytes) -> tarfile.TarFile:
    try:
        if isinstance(archive, bytes):
            return tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
        return tarfile.open(name=os.fspath(archive), mode="r:*")
    except _UNREADABLE as e:
        raise CorruptTarball(f"not a tar archive: {e}") from None


def _move_into(tmp: str, dest: str) -> None:
    """Move the entries of ``tmp`` into the existing, non-empty directory ``dest``; all or none."""
    names = sorted(os.listdir(tmp))
    for n in names:
        if os.path.lexists(os.path.join(dest, n)):
            raise UnsafeTarball(f"tar entry {n!r} would replace {os.path.join(dest, n)}, which already exists")
    moved: list[str] = []
    try:
        for n in names:
            os.rename(os.path.join(tmp, n), os.path.join(dest, n))
            moved.append(n)
    except BaseException:
        for n in reversed(moved):
            os.rename(os.path.join(dest, n), os.path.join(tmp, n))
        raise


def safe_extract(archive: str | os.PathLike[str] | bytes, dest: str | os.PathLike[str],
                 limits: TarLimits | None = None) -> None:
    """Extract a (gzipped, bzipped, xz or plain) tar into ``dest``, refusing every entry that escapes it
    (see the module's text) with an ``UnsafeTarball`` naming the entry. ``dest`` is created if missing; when
    it exists it gets the archive's entries beside its own, none of which may be replaced. Nothing is left
    behind when the archive is refused. ``limits`` defaults to ``TarLimits.from_env()``.
    Blocking: call through ``asyncio.to_thread``."""
    limits = limits if limits is not None else TarLimits.from_env()
    target = os.path.realpath(dest)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    existed = os.path.lexists(target)
    if existed and not os.path.isdir(target):
        raise NotADirectoryError(errno.ENOTDIR, "cannot extract into a file", os.fspath(dest))
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(target)}.extracting-")
    try:
        with _open(archive) as tar:
            ex = _Extractor(tmp, limits)
            try:
                for m in tar:
                    ex.extract(tar, m)
            except UnsafeTarball:
                raise
            except _UNREADABLE as e:
                raise CorruptTarball(f"not a readable tar archive: {e}") from None
            ex.finish()
        if existed and os.listdir(target):
            _move_into(tmp, target)
            os.rmdir(tmp)
            return
        mode = ex.root_mode if ex.root_mode is not None else \
            (stat.S_IMODE(os.stat(target).st_mode) if existed else 0o755)
        os.chmod(tmp, mode)
        os.rename(tmp, target)           # replaces ``target`` when it is an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def tar_directory(src: str | os.PathLike[str], out: str | os.PathLike[str], prefix: str = ".") -> None:
    """Write ``out`` (tar.gz) with the contents of ``src`` relative to it (entries ``./x``), sorted and with
    fixed owners and times so the same content gives the same bytes. Blocking."""
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
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            raw = data.encode() if isinstance(data, str) else data
            info = _normalise(tarfile.TarInfo(name))
            info.size = len(raw)
            info.mode = (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()
