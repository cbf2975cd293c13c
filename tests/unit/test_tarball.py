from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from boshlab.tarball import CorruptTarball, TarballTooLarge, TarLimits, UnsafeTarball, safe_extract, tar_directory, tar_files

# (name, kind, payload): kind file -> bytes content; sym/lnk -> link name; dir/chr/blk/fifo -> ignored
Entry = tuple[str, str, "bytes | str"]
DOTDOT = r"would land outside the target directory \(it has a '..' component\)"
ABSOLUTE = r"would land outside the target directory \(it has an absolute name\)"


def _tar(entries: list[Entry], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode = (modes or {}).get(name, 0o755 if kind == "dir" else 0o644)
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "lnk"):
                assert isinstance(payload, str)
                info.linkname = payload
            tar.addfile(info)
    return buf.getvalue()


def _tree(root: Path) -> dict[str, tuple[str, object, int]]:
    """Everything under ``root``: relative path -> (kind, content or link target, permission bits)."""
    out: dict[str, tuple[str, object, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None, stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", p.read_bytes(), stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """``tmp_path/outside.txt`` (a file an archive must not touch) and the parent of the target dir."""
    (tmp_path / "outside.txt").write_text("precious")
    (tmp_path / "x").mkdir()
    return tmp_path


def _refused(lab: Path, data: bytes, match: str, exc: type[Exception] = UnsafeTarball) -> None:
    """Extracting ``data`` into ``lab/x/dest`` is refused; nothing outside changed; nothing left behind."""
    before = _tree(lab)
    with pytest.raises(exc, match=match):
        safe_extract(data, lab / "x" / "dest")
    assert list((lab / "x").iterdir()) == []       # no target, no temporary directory
    assert _tree(lab) == before
    assert (lab / "outside.txt").stat().st_nlink == 1


# --- the escapes -----------------------------------------------------------------------------------

def test_the_issue_exploit_chain_is_refused_and_leaves_nothing(lab: Path) -> None:
    # a -> . makes a/a/up land at the top; up -> ../.. then points two levels above the target
    data = _tar([("a", "sym", "."), ("a/a/up", "sym", "../.."), ("up/evil.txt", "file", b"pwned")])
    _refused(lab, data, r"'a/a/up' links outside")
    assert not (lab / "evil.txt").exists()


def test_the_exploit_chain_is_refused_even_with_a_good_file_first(lab: Path) -> None:
    data = _tar([("good.txt", "file", b"fine"), ("a", "sym", "."), ("a/a/a/up", "sym", "../../../.."),
                 ("up/tmp/evil.txt", "file", b"pwned")])
    _refused(lab, data, r"'a/a/a/up' links outside")


@pytest.mark.parametrize("entries, match", [
    ([("link", "sym", "../outside.txt")], r"'link' links outside"),
    ([("sub/link", "sym", "../../../outside.txt")], r"'sub/link' links outside"),
    ([("link", "sym", "/etc/passwd")], r"'link' links to an absolute path"),
    ([("link", "sym", "")], r"'link' is a symlink with an empty target"),
    ([("loop1", "sym", "loop2"), ("loop2", "sym", "loop1"), ("loop1/f", "file", b"x")],
     r"'loop1/f': too many levels of symbolic links"),
])
def test_symlinks_that_leave_the_target_are_refused(lab: Path, entries: list[Entry], match: str) -> None:
    _refused(lab, _tar([("good.txt", "file", b"fine")] + entries), match)


def test_a_member_through_an_earlier_link_that_a_later_link_turned_outside(lab: Path) -> None:
    # l -> d/.. is the top while d is missing; d -> . then makes l the parent of the target
    data = _tar([("l", "sym", "d/.."), ("d", "sym", "."), ("l/evil.txt", "file", b"pwned")])
    _refused(lab, data, r"'l/evil.txt' would land outside")
    assert not (lab / "x" / "evil.txt").exists()


def test_an_earlier_link_a_later_link_turned_outside_is_refused_at_the_end(lab: Path) -> None:
    _refused(lab, _tar([("l", "sym", "d/.."), ("d", "sym", ".")]), r"'l' links outside")


@pytest.mark.parametrize("entries, match", [
    ([("h", "lnk", "../outside.txt")], r"'h': hard link target '../outside.txt' " + DOTDOT),
    ([("h", "lnk", "/etc/passwd")], r"'h': hard link target '/etc/passwd' " + ABSOLUTE),
    ([("h", "lnk", "not-a-member")], r"'h' is a hard link to 'not-a-member', which is not a file extracted"),
    ([("d", "dir", ""), ("h", "lnk", "d")], r"'h' is a hard link to 'd', which is not a file"),
    # through an escaping symlink chain: the hard link names a path that existed only outside
    ([("a", "sym", "."), ("a/a/up", "sym", "../.."), ("h", "lnk", "up/outside.txt")], r"links outside"),
])
def test_hard_links_to_anything_but_an_extracted_file_are_refused(lab: Path, entries: list[Entry],
                                                                 match: str) -> None:
    _refused(lab, _tar([("good.txt", "file", b"fine")] + entries), match)


@pytest.mark.parametrize("kind, match", [("chr", "is a device file"), ("blk", "is a device file"),
                                         ("fifo", "is a fifo")])
def test_devices_and_fifos_are_refused(lab: Path, kind: str, match: str) -> None:
    _refused(lab, _tar([("good.txt", "file", b"fine"), ("dev", kind, "")]), rf"'dev' {match}")


@pytest.mark.parametrize("name, match", [
    ("../evil", DOTDOT), ("ok/../../evil", DOTDOT), ("ok/..", DOTDOT), ("/etc/evil", ABSOLUTE),
])
def test_absolute_and_dotdot_names_are_refused(lab: Path, name: str, match: str) -> None:
    _refused(lab, _tar([("good.txt", "file", b"fine"), (name, "file", b"x")]), match)
    assert not (lab / "evil").exists()


def test_a_file_over_an_earlier_symlink_replaces_the_link_and_is_not_written_through(lab: Path) -> None:
    dest = lab / "x" / "dest"
    safe_extract(_tar([("target.txt", "file", b"t"), ("f", "sym", "target.txt"), ("f", "file", b"new")]), dest)
    assert not (dest / "f").is_symlink()
    assert (dest / "f").read_bytes() == b"new"
    assert (dest / "target.txt").read_bytes() == b"t"


def test_a_file_over_a_directory_is_refused(lab: Path) -> None:
    _refused(lab, _tar([("d/f", "file", b"x"), ("d", "file", b"y")]), r"'d' would replace a directory")


def test_unreadable_archives_are_refused(lab: Path) -> None:
    # cut in the middle of the second (incompressible) file: the first one was written by then
    data = _tar([("good.txt", "file", b"fine"), ("noise", "file", os.urandom(256 << 10))])
    _refused(lab, b"this is not a tarball", "not a tar archive", CorruptTarball)
    _refused(lab, data[: len(data) // 2], "not a readable tar archive|truncated", CorruptTarball)
    assert issubclass(CorruptTarball, tarfile.TarError) and issubclass(CorruptTarball, ValueError)


# --- limits ----------------------------------------------------------------------------------------

def test_too_many_members(lab: Path) -> None:
    data = _tar([(f"f{i}", "file", b"") for i in range(4)])
    with pytest.raises(TarballTooLarge, match=r"'f3': the archive has more than 3 entries \(limit max_members"):
        safe_extract(data, lab / "x" / "dest", TarLimits(max_members=3))
    assert list((lab / "x").iterdir()) == []
    safe_extract(data, lab / "x" / "ok", TarLimits(max_members=4))


def test_too_large_a_member(lab: Path) -> None:
    data = _tar([("small", "file", b"12345"), ("big", "file", b"x" * 11)])
    with pytest.raises(TarballTooLarge, match=r"'big' is 11 bytes, more than the limit of 10 bytes for one entry"):
        safe_extract(data, lab / "x" / "dest", TarLimits(max_member_bytes=10))
    assert list((lab / "x").iterdir()) == []


def test_too_many_bytes_in_all(lab: Path) -> None:
    data = _tar([("a", "file", b"x" * 8), ("b", "file", b"x" * 8), ("c", "file", b"x" * 8)])
    with pytest.raises(TarballTooLarge, match=r"'c': the archive holds more than 20 bytes \(limit max_bytes"):
        safe_extract(data, lab / "x" / "dest", TarLimits(max_bytes=20))
    assert list((lab / "x").iterdir()) == []


def test_limits_from_the_environment(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _tar([("a", "file", b"x"), ("b", "file", b"y")])
    monkeypatch.setenv("BOSH_LAB_TAR_MAX_MEMBERS", "1")
    with pytest.raises(TarballTooLarge, match="BOSH_LAB_TAR_MAX_MEMBERS"):
        safe_extract(data, lab / "x" / "dest")
    monkeypatch.setenv("BOSH_LAB_TAR_MAX_MEMBERS", "lots")
    with pytest.raises(ValueError, match="BOSH_LAB_TAR_MAX_MEMBERS='lots' is not a whole number"):
        safe_extract(data, lab / "x" / "dest")
    monkeypatch.delenv("BOSH_LAB_TAR_MAX_MEMBERS")
    assert TarLimits.from_env() == TarLimits() == TarLimits(4 << 30, 100_000, 4 << 30)


# --- good archives ---------------------------------------------------------------------------------

def test_a_good_archive_with_inside_links_extracts_as_tarfile_does(tmp_path: Path) -> None:
    entries: list[Entry] = [
        ("./", "dir", ""), ("./bin/", "dir", ""), ("./bin/run", "file", b"#!/bin/sh\n"),
        ("./lib/libx.so.1", "file", b"\x7fELF"), ("./lib/libx.so", "sym", "libx.so.1"),
        ("./lib64", "sym", "lib"), ("./lib64/through-link.txt", "file", b"via lib64"),
        ("./share/doc/README", "file", b"readme"), ("./share/doc/up", "sym", "../../bin/run"),
        ("./share/same", "lnk", "share/doc/README"), ("./dangling", "sym", "not/yet/there"),
        ("./etc/conf", "file", b"a=1\n"),
    ]
    data = _tar(entries, {"./bin/run": 0o755, "./bin/": 0o755})
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    safe_extract(data, ours)
    theirs.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        t.extractall(theirs)   # trusted archive: the reference
    assert _tree(ours) == _tree(theirs)
    assert (ours / "lib" / "through-link.txt").read_bytes() == b"via lib64"
    assert os.path.samefile(ours / "share" / "same", ours / "share" / "doc" / "README")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary left


def test_modes_lose_setuid_setgid_sticky_and_group_other_write(tmp_path: Path) -> None:
    data = _tar([("d", "dir", ""), ("d/suid", "file", b"x"), ("d/open", "file", b"y")],
                {"d": 0o1777, "d/suid": 0o6755, "d/open": 0o666})
    safe_extract(data, tmp_path / "dest")
    assert stat.S_IMODE((tmp_path / "dest" / "d" / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "dest" / "d" / "open").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "dest" / "d").stat().st_mode) == 0o755


def test_safe_extract_of_a_good_tarball(tmp_path: Path) -> None:
    data = tar_files({"./bin/x": "#!/bin/sh\n", "./a.txt": "a"}, {"./bin/x": 0o755})
    safe_extract(data, tmp_path)
    assert (tmp_path / "a.txt").read_text() == "a"
    assert (tmp_path / "bin/x").stat().st_mode & 0o111


def test_an_existing_target_keeps_its_content_and_is_untouched_on_refusal(lab: Path) -> None:
    dest = lab / "x" / "dest"
    dest.mkdir()
    (dest / "mine").write_text("keep")
    safe_extract(_tar([("new", "file", b"n")]), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["mine", "new"]
    with pytest.raises(UnsafeTarball, match="links outside"):
        safe_extract(_tar([("other", "file", b"o"), ("l", "sym", "../../outside.txt")]), dest)
    with pytest.raises(UnsafeTarball, match=r"'mine' would replace"):
        safe_extract(_tar([("zzz", "file", b"z"), ("mine", "file", b"replaced")]), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["mine", "new"]
    assert (dest / "mine").read_text() == "keep"
    assert sorted(p.name for p in (lab / "x").iterdir()) == ["dest"]


def test_extracting_from_a_file_on_disk(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_bytes(b"tool")
    (src / "bin" / "alias").symlink_to("tool")
    tar_directory(src, tmp_path / "a.tgz")
    safe_extract(tmp_path / "a.tgz", tmp_path / "out")
    assert _tree(tmp_path / "out") == _tree(src)


def test_tar_directory_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "redis-server").write_bytes(b"\x7fELF")
    (src / "README").write_text("r")
    tar_directory(src, tmp_path / "a.tgz")
    tar_directory(src, tmp_path / "b.tgz")
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()
    with tarfile.open(tmp_path / "a.tgz") as t:
        assert sorted(t.getnames()) == ["./README", "./bin/redis-server"]
