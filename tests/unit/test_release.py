from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from boshlab.release import JobSpec, JobTarball, ReleaseError, ReleaseManifest, create_release, read_release
from boshlab.tarball import TarLimits

WORKSHOP = Path(__file__).resolve().parents[2] / "workshop" / "release"


def make_source(root: Path) -> Path:
    (root / "config").mkdir(parents=True)
    (root / "config" / "final.yml").write_text("name: demo\n")
    job = root / "jobs" / "web"
    (job / "templates" / "bin").mkdir(parents=True)
    (job / "spec").write_text(yaml.safe_dump({
        "name": "web", "packages": ["app"], "templates": {"ctl.erb": "bin/ctl"},
        "properties": {"web.port": {"default": 80, "description": "port"}}}))
    (job / "monit").write_text("check process web\n  group vcap\n")
    (job / "templates" / "ctl.erb").write_text("port <%= p('web.port') %>\n")
    pkg = root / "packages" / "app"
    pkg.mkdir(parents=True)
    (pkg / "spec").write_text(yaml.safe_dump({"name": "app", "files": ["app/*.txt"], "dependencies": []}))
    (pkg / "packaging").write_text("cp app/*.txt ${BOSH_INSTALL_TARGET}/\n")
    (root / "src" / "app").mkdir(parents=True)
    (root / "src" / "app" / "hello.txt").write_text("hello\n")
    return root


def test_write_then_read_a_release(tmp_path: Path) -> None:
    src = make_source(tmp_path / "src-tree")
    out = tmp_path / "demo.tgz"
    m = create_release(src, out, version="3")
    assert (m.name, m.version) == ("demo", "3")
    assert [(j.name, j.version) for j in m.jobs] == [("web", "3")]
    assert [(p.name, p.dependencies) for p in m.packages] == [("app", [])]
    rel = read_release(out, tmp_path / "x")
    assert rel.manifest.jobs[0].sha1 == hashlib.sha1(rel.job_path("web").read_bytes()).hexdigest()
    job = rel.jobs["web"]
    assert job.spec.templates == {"ctl.erb": "bin/ctl"}
    assert job.templates["ctl.erb"] == "port <%= p('web.port') %>\n"
    with tarfile.open(rel.package_path("app")) as t:
        assert sorted(t.getnames()) == ["./app/hello.txt", "./packaging"]
    # the same source gives the same bytes and fingerprints
    again = create_release(src, tmp_path / "again.tgz", version="3")
    assert again.jobs[0].fingerprint == m.jobs[0].fingerprint
    assert (tmp_path / "again.tgz").read_bytes() == out.read_bytes()


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    src = make_source(tmp_path / "s")
    a = create_release(src, tmp_path / "a.tgz")
    (src / "jobs" / "web" / "templates" / "ctl.erb").write_text("changed\n")
    b = create_release(src, tmp_path / "b.tgz")
    assert a.jobs[0].fingerprint != b.jobs[0].fingerprint
    assert a.packages[0].fingerprint == b.packages[0].fingerprint


def _read(t: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    f = t.extractfile(m)
    assert f is not None
    return f.read()


def _retar(src: Path, dst: Path, mutate: Callable[[dict[str, bytes]], object]) -> None:
    with tarfile.open(src) as t:
        files = {m.name: _read(t, m) for m in t.getmembers() if m.isfile()}
    mutate(files)
    with tarfile.open(dst, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_tampered_job_is_rejected(tmp_path: Path) -> None:
    out = tmp_path / "r.tgz"
    create_release(make_source(tmp_path / "s"), out)

    def swap(files: dict[str, bytes]) -> None:
        data = files["./jobs/web.tgz"]
        files["./jobs/web.tgz"] = data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]
    _retar(out, tmp_path / "bad.tgz", swap)
    with pytest.raises(ReleaseError, match="jobs/web.tgz: sha1 mismatch"):
        read_release(tmp_path / "bad.tgz", tmp_path / "x")


def test_missing_job_tarball_and_manifest_are_named(tmp_path: Path) -> None:
    out = tmp_path / "r.tgz"
    create_release(make_source(tmp_path / "s"), out)
    _retar(out, tmp_path / "nojob.tgz", lambda f: f.pop("./jobs/web.tgz"))
    with pytest.raises(ReleaseError, match="jobs/web.tgz is missing"):
        read_release(tmp_path / "nojob.tgz", tmp_path / "x1")
    _retar(out, tmp_path / "nomf.tgz", lambda f: f.pop("./release.MF"))
    with pytest.raises(ReleaseError, match="no release.MF"):
        read_release(tmp_path / "nomf.tgz", tmp_path / "x2")


def test_source_errors_are_named(tmp_path: Path) -> None:
    src = make_source(tmp_path / "s")
    (src / "jobs" / "web" / "templates" / "ctl.erb").unlink()
    with pytest.raises(ReleaseError, match="template 'ctl.erb' is missing"):
        create_release(src, tmp_path / "r.tgz")
    src = make_source(tmp_path / "t")
    (src / "src" / "app" / "hello.txt").unlink()
    with pytest.raises(ReleaseError, match="no file matches 'app/\\*.txt'"):
        create_release(src, tmp_path / "r2.tgz")


def test_job_spec_validation() -> None:
    with pytest.raises(ReleaseError, match="has no name"):
        JobSpec.parse("templates: {}")
    with pytest.raises(ReleaseError, match="must be relative"):
        JobSpec.parse("name: x\ntemplates: {a.erb: ../../etc/passwd}")


def test_workshop_job_is_the_decks_job_mf() -> None:
    spec = JobSpec.parse((WORKSHOP / "jobs" / "redis" / "spec").read_text())
    assert spec.name == "redis"
    assert spec.packages == ["redis"]
    assert spec.templates == {
        "config/redis.conf.erb": "config/redis.conf", "bin/redis_ctl": "bin/redis_ctl",
        "bin/monit_debugger": "bin/monit_debugger", "data/properties.sh.erb": "data/properties.sh",
        "helpers/ctl_setup.sh": "helpers/ctl_setup.sh", "helpers/ctl_utils.sh": "helpers/ctl_utils.sh"}
    assert spec.properties["redis.port"]["default"] == 6379
    assert spec.properties["redis.password"]["default"] == "r3d!s"


# --- refused archives (issue 8) --------------------------------------------------------------------

def _with_extra(src: Path, dst: Path, extra: list[tarfile.TarInfo], files: dict[str, bytes] | None = None) -> None:
    """``src`` re-tarred at ``dst`` with ``extra`` entries (symlinks and the like) and ``files`` added."""
    with tarfile.open(src) as t:
        content = {m.name: _read(t, m) for m in t.getmembers() if m.isfile()}
    content.update(files or {})
    with tarfile.open(dst, "w:gz") as t:
        for info in extra:
            t.addfile(info)
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize("extra, evil, match", [
    ([_link("./jobs/outside", "../../../outside")], {}, r"'./jobs/outside' links outside"),
    ([_link("a", "."), _link("a/a/up", "../..")], {"up/evil.txt": b"pwned"}, r"'a/a/up' links outside"),
    ([], {"../evil.txt": b"pwned"}, r"'../evil.txt' would land outside the target directory \(it has a '\.\.' "),
])
def test_a_release_with_a_bad_member_is_refused_and_leaves_nothing(tmp_path: Path, extra: list[tarfile.TarInfo],
                                                                   evil: dict[str, bytes], match: str) -> None:
    out = tmp_path / "r.tgz"
    create_release(make_source(tmp_path / "s"), out)
    _with_extra(out, tmp_path / "bad.tgz", extra, evil)
    work = tmp_path / "work" / "x"
    work.mkdir(parents=True)
    with pytest.raises(ReleaseError, match=r"release tarball refused: tar entry " + match):
        read_release(tmp_path / "bad.tgz", work)
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["x"]   # no temporary directory left
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "work" / "evil.txt").exists()


def test_release_limits_are_enforced_with_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "r.tgz"
    create_release(make_source(tmp_path / "s"), out)
    with pytest.raises(ReleaseError, match=r"release tarball refused: tar entry .* \(limit max_members"):
        read_release(out, tmp_path / "x", TarLimits(max_members=2))
    with pytest.raises(ReleaseError, match=r"release tarball refused: tar entry .* more than the limit of 10 bytes"):
        read_release(out, tmp_path / "y", TarLimits(max_member_bytes=10))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_corrupt_release_is_not_a_release_tarball(tmp_path: Path) -> None:
    (tmp_path / "bad.tgz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ReleaseError, match="not a release tarball"):
        read_release(tmp_path / "bad.tgz", tmp_path / "x")


def test_job_tarballs_are_read_within_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.tgz"
    create_release(make_source(tmp_path / "s"), out)
    rel = read_release(out, tmp_path / "x")
    job = JobTarball.read_file(rel.job_path("web"), "jobs/web.tgz")      # streamed from disk
    assert job == rel.jobs["web"]
    with pytest.raises(ReleaseError, match=r"jobs/web.tgz: '\./job.MF' is \d+ bytes, more than the "
                                           r"limit of 20 bytes for a job file \(BOSH_LAB_JOB_MAX_FILE_BYTES\)"):
        JobTarball.read_file(rel.job_path("web"), "jobs/web.tgz", max_file_bytes=20)
    with pytest.raises(ReleaseError, match=r"more than 2 entries"):
        JobTarball.read(rel.job_path("web").read_bytes(), "jobs/web.tgz", max_members=2)
    monkeypatch.setenv("BOSH_LAB_JOB_MAX_BYTES", "40")
    with pytest.raises(ReleaseError, match=r"jobs/web.tgz: job.MF, monit and templates hold more than 40 bytes"):
        read_release(out, tmp_path / "y")


@pytest.mark.parametrize("doc, named", [
    ("name: ../../etc\nversion: '1'\n", "release.MF name"),
    ("name: r\nversion: 1/2\n", "release.MF version"),
    ("name: r\nversion: '1'\njobs:\n- {name: ../x, version: '1', sha1: abc}\n", "jobs[0] name"),
    ("name: r\nversion: '1'\npackages:\n- {name: p, version: '1', sha1: abc, dependencies: [../q]}\n", "dependency"),
    ("name: r\nversion: '1'\npackages:\n- {name: .hidden, version: '1', sha1: abc}\n", "packages[0] name"),
])
def test_release_mf_names_become_paths_so_they_are_checked(doc: str, named: str) -> None:
    with pytest.raises(ReleaseError, match=re.escape(named)):
        ReleaseManifest.parse(doc)


def test_job_mf_names_are_checked() -> None:
    with pytest.raises(ReleaseError, match="job name"):
        JobSpec.parse("name: a/b\ntemplates: {}\n")
    with pytest.raises(ReleaseError, match="package"):
        JobSpec.parse("name: j\npackages: ['..']\n")
    assert JobSpec.parse("name: redis-server_2.8+dev\n").name == "redis-server_2.8+dev"


def test_release_mf_alias_bomb_is_refused() -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    with pytest.raises(ReleaseError, match="expands"):
        ReleaseManifest.parse("name: r\nversion: '1'\n" + bomb)
