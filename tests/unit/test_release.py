import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import yaml

from boshlab.release import JobSpec, ReleaseError, create_release, read_release

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


def test_write_then_read_a_release(tmp_path):
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


def test_fingerprint_changes_with_content(tmp_path):
    src = make_source(tmp_path / "s")
    a = create_release(src, tmp_path / "a.tgz")
    (src / "jobs" / "web" / "templates" / "ctl.erb").write_text("changed\n")
    b = create_release(src, tmp_path / "b.tgz")
    assert a.jobs[0].fingerprint != b.jobs[0].fingerprint
    assert a.packages[0].fingerprint == b.packages[0].fingerprint


def _retar(src: Path, dst: Path, mutate) -> None:
    with tarfile.open(src) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    mutate(files)
    with tarfile.open(dst, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_tampered_job_is_rejected(tmp_path):
    out = tmp_path / "r.tgz"
    create_release(make_source(tmp_path / "s"), out)

    def swap(files):
        data = files["./jobs/web.tgz"]
        files["./jobs/web.tgz"] = data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]
    _retar(out, tmp_path / "bad.tgz", swap)
    with pytest.raises(ReleaseError, match="jobs/web.tgz: sha1 mismatch"):
        read_release(tmp_path / "bad.tgz", tmp_path / "x")


def test_missing_job_tarball_and_manifest_are_named(tmp_path):
    out = tmp_path / "r.tgz"
    create_release(make_source(tmp_path / "s"), out)
    _retar(out, tmp_path / "nojob.tgz", lambda f: f.pop("./jobs/web.tgz"))
    with pytest.raises(ReleaseError, match="jobs/web.tgz is missing"):
        read_release(tmp_path / "nojob.tgz", tmp_path / "x1")
    _retar(out, tmp_path / "nomf.tgz", lambda f: f.pop("./release.MF"))
    with pytest.raises(ReleaseError, match="no release.MF"):
        read_release(tmp_path / "nomf.tgz", tmp_path / "x2")


def test_source_errors_are_named(tmp_path):
    src = make_source(tmp_path / "s")
    (src / "jobs" / "web" / "templates" / "ctl.erb").unlink()
    with pytest.raises(ReleaseError, match="template 'ctl.erb' is missing"):
        create_release(src, tmp_path / "r.tgz")
    src = make_source(tmp_path / "t")
    (src / "src" / "app" / "hello.txt").unlink()
    with pytest.raises(ReleaseError, match="no file matches 'app/\\*.txt'"):
        create_release(src, tmp_path / "r2.tgz")


def test_job_spec_validation():
    with pytest.raises(ReleaseError, match="has no name"):
        JobSpec.parse("templates: {}")
    with pytest.raises(ReleaseError, match="must be relative"):
        JobSpec.parse("name: x\ntemplates: {a.erb: ../../etc/passwd}")


def test_workshop_job_is_the_decks_job_mf():
    spec = JobSpec.parse((WORKSHOP / "jobs" / "redis" / "spec").read_text())
    assert spec.name == "redis"
    assert spec.packages == ["redis"]
    assert spec.templates == {
        "config/redis.conf.erb": "config/redis.conf", "bin/redis_ctl": "bin/redis_ctl",
        "bin/monit_debugger": "bin/monit_debugger", "data/properties.sh.erb": "data/properties.sh",
        "helpers/ctl_setup.sh": "helpers/ctl_setup.sh", "helpers/ctl_utils.sh": "helpers/ctl_utils.sh"}
    assert spec.properties["redis.port"]["default"] == 6379
    assert spec.properties["redis.password"]["default"] == "r3d!s"
