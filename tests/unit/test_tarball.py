import io
import tarfile

import pytest

from boshlab.tarball import UnsafeTarball, safe_extract, tar_directory, tar_files


def _tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, target in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(target)
                tar.addfile(info, io.BytesIO(target))
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = target
                tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("entries", [
    [("../evil", "file", b"x")],
    [("ok/../../evil", "file", b"x")],
    [("/etc/evil", "file", b"x")],
    [("link", "sym", "/etc/passwd")],
    [("link", "sym", "../../outside")],
])
def test_entries_escaping_the_target_are_refused_and_nothing_is_written(tmp_path, entries):
    dest = tmp_path / "dest"
    data = _tar([("good.txt", "file", b"fine")] + entries)
    with pytest.raises(UnsafeTarball):
        safe_extract(data, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_safe_extract_of_a_good_tarball(tmp_path):
    data = tar_files({"./bin/x": "#!/bin/sh\n", "./a.txt": "a"}, {"./bin/x": 0o755})
    safe_extract(data, tmp_path)
    assert (tmp_path / "a.txt").read_text() == "a"
    assert (tmp_path / "bin/x").stat().st_mode & 0o111


def test_tar_directory_is_deterministic(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "redis-server").write_bytes(b"\x7fELF")
    (src / "README").write_text("r")
    tar_directory(src, tmp_path / "a.tgz")
    tar_directory(src, tmp_path / "b.tgz")
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()
    with tarfile.open(tmp_path / "a.tgz") as t:
        assert sorted(t.getnames()) == ["./README", "./bin/redis-server"]
