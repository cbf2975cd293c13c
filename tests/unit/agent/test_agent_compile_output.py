"""compile_package's output and clean-up: a fast gzip of the install dir (level 1, entries ./..., owned by
root, symlinks kept) and the compile dir moved aside at once, deleted in the background."""
import asyncio
import gzip
import os
import tarfile
from pathlib import Path

from agent.action import compile_package
from agent.action.compile_package import remove_later, tar_compiled


def test_tar_compiled_is_a_fast_gzip_of_the_install_dir(tmp_path: Path) -> None:
    src = tmp_path / "install"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "redis-server").write_bytes(b"\x7fELF" + bytes(range(256)) * 100)
    os.chmod(src / "bin" / "redis-server", 0o755)
    (src / "bin" / "redis-sentinel").symlink_to("redis-server")
    out = tmp_path / "compiled.tgz"
    tar_compiled(src, out)
    raw = out.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[8] == 4      # gzip, XFL 4: the fastest level
    assert gzip.decompress(raw)
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["./bin", "./bin/redis-sentinel", "./bin/redis-server"]
    assert members["./bin/redis-sentinel"].issym() and members["./bin/redis-sentinel"].linkname == "redis-server"
    assert members["./bin/redis-server"].mode & 0o777 == 0o755
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())


async def test_remove_later_moves_the_dir_aside_at_once(tmp_path: Path) -> None:
    d = tmp_path / "compile" / "redis"
    (d / "src").mkdir(parents=True)
    for i in range(200):
        (d / "src" / f"{i}.o").write_bytes(b"x")
    await remove_later(d)
    assert not d.exists()                   # a new compile of redis may use the name now
    for _ in range(500):
        if not compile_package._CLEANUPS:
            break
        await asyncio.sleep(0.01)
    assert list((tmp_path / "compile").iterdir()) == []
    await remove_later(tmp_path / "compile" / "missing")     # nothing there: nothing to do
