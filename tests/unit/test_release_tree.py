"""create-release from a release tree, as ``bosh create-release`` takes it (issue 11): names, versions, git
state, blobs.yml, package globs and dependencies, job specs, license, fingerprints, streaming."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from boshlab.release import (
    ReleaseError,
    build_release,
    create_release,
    next_dev_version,
    next_final_version,
    read_release,
)

# os-conf-release's disable_agent job (github.com/cloudfoundry/os-conf-release, 23.0.2): the bosh CLI gave it
# this fingerprint (releases/os-conf/os-conf-23.0.2.yml), so ours must be the same.
DISABLE_AGENT_SPEC = """---
name: disable_agent

templates:
  post-start: bin/post-start

properties:
  wait_before_killing:
    description: "Seconds to wait before shutting off the agent"
    default: 300
"""
DISABLE_AGENT_POST_START = """#!/bin/bash

echo "`date`: Queued disable agent"

(
  echo "`date`: In 60 secs..."
  sleep <%= p("wait_before_killing") %>

  echo "`date`: Stopping bosh-agent permanently"
  sv stop agent

  echo "`date`: Killing bosh-agent just in case"
  sv kill agent

  mv /var/vcap/bosh/bin/bosh-agent{,-os-conf-disabled}
) &

disown

exit 0
"""
DISABLE_AGENT_FINGERPRINT = "f568f6dc59616f8cc94a87d604721fc4d0c6d40d180149537cad6063d92ee8e4"

HAVE_GIT = shutil.which("git") is not None


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def tree(root: Path, *, blob: bytes | None = None) -> Path:
    """A release tree: jobs web (package app, provides/consumes) and worker, packages app (src/) -> lib
    (blobs/lib/lib.tar.gz when ``blob``), a LICENSE."""
    write(root / "config" / "final.yml", "final_name: demo\nblobstore:\n  provider: s3\n  options: {bucket_name: b}\n")
    write(root / "jobs" / "web" / "spec", yaml.safe_dump({
        "name": "web", "packages": ["app"], "templates": {"ctl.erb": "bin/ctl", "web.conf.erb": "config/web.conf"},
        "properties": {"web.port": {"default": 80}},
        "provides": [{"name": "web", "type": "http", "properties": ["web.port"]}],
        "consumes": [{"name": "db", "type": "db", "optional": True}]}, sort_keys=False))
    write(root / "jobs" / "web" / "monit", "check process web\n  group vcap\n")
    write(root / "jobs" / "web" / "templates" / "ctl.erb", "#!/bin/bash\nexec web -p <%= p('web.port') %>\n", 0o755)
    write(root / "jobs" / "web" / "templates" / "web.conf.erb", "port <%= p('web.port') %>\n")
    write(root / "jobs" / "worker" / "spec", "name: worker\ntemplates: {}\npackages: []\n")
    write(root / "jobs" / "worker" / "monit", "")
    write(root / "packages" / "app" / "spec", yaml.safe_dump({
        "name": "app", "dependencies": ["lib"], "files": ["app/**/*"], "excluded_files": ["app/**/*.pyc"]}))
    write(root / "packages" / "app" / "packaging", "cp -a app ${BOSH_INSTALL_TARGET}\n")
    write(root / "src" / "app" / "main.py", "print('hi')\n")
    write(root / "src" / "app" / "sub" / "run", "#!/bin/sh\n", 0o755)
    write(root / "src" / "app" / "main.pyc", b"\0compiled")
    write(root / "packages" / "lib" / "spec", yaml.safe_dump({"name": "lib", "files": ["lib/*.tar.gz"]}))
    write(root / "packages" / "lib" / "packaging", "tar xzf lib/*.tar.gz\n")
    if blob is not None:
        write(root / "blobs" / "lib" / "lib.tar.gz", blob)
        write(root / "config" / "blobs.yml", yaml.safe_dump({"lib/lib.tar.gz": {
            "size": len(blob), "object_id": "0b1d", "sha": "sha256:" + hashlib.sha256(blob).hexdigest()}}))
    else:
        write(root / "src" / "lib" / "lib.tar.gz", b"not really a tarball")
    write(root / "LICENSE", "Apache-2.0\n")
    return root


def members(tgz: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tgz) as t:
        return {m.name: m for m in t.getmembers()}


def read_member(tgz: Path, name: str) -> bytes:
    with tarfile.open(tgz) as t:
        f = t.extractfile(name)
        assert f is not None
        return f.read()


# --- fingerprints: the bosh CLI's ------------------------------------------------------------------

def test_job_fingerprint_is_the_bosh_clis(tmp_path: Path) -> None:
    root = tmp_path / "os-conf"
    write(root / "config" / "final.yml", "final_name: os-conf\n")
    write(root / "jobs" / "disable_agent" / "spec", DISABLE_AGENT_SPEC)
    write(root / "jobs" / "disable_agent" / "monit", "")
    write(root / "jobs" / "disable_agent" / "templates" / "post-start", DISABLE_AGENT_POST_START)
    m = create_release(root, tmp_path / "r.tgz", style="bosh")
    assert m.jobs[0].fingerprint == DISABLE_AGENT_FINGERPRINT
    assert m.jobs[0].version == DISABLE_AGENT_FINGERPRINT        # bosh style: versioned by fingerprint
    lab = create_release(root, tmp_path / "lab.tgz", version="7")
    assert (lab.jobs[0].version, lab.jobs[0].fingerprint) == ("7", DISABLE_AGENT_FINGERPRINT)


def test_package_fingerprint_follows_the_bosh_cli_recipe(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    m = create_release(root, tmp_path / "r.tgz")

    def sha(p: Path) -> str:
        return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    src = root / "src"
    # v2, then per file (sorted): name, digest, mode (none for packaging), then the dependencies joined by ','
    want = hashlib.sha256(("v2" + "app/main.py" + sha(src / "app/main.py") + "100644"
                           + "app/sub/run" + sha(src / "app/sub/run") + "100755"
                           + "packaging" + sha(root / "packages/app/packaging") + "lib").encode()).hexdigest()
    app = next(p for p in m.packages if p.name == "app")
    assert app.fingerprint == want
    assert app.dependencies == ["lib"]
    # the fingerprint changes with content, not with another package's
    write(src / "app" / "main.py", "print('bye')\n")
    again = create_release(root, tmp_path / "r2.tgz")
    assert next(p for p in again.packages if p.name == "app").fingerprint != want
    assert next(p for p in again.packages if p.name == "lib").fingerprint == \
        next(p for p in m.packages if p.name == "lib").fingerprint


def test_the_same_tree_gives_the_same_bytes(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", blob=b"blob" * 1000)
    create_release(root, tmp_path / "a.tgz", version="1")
    create_release(root, tmp_path / "b.tgz", version="1")
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()


# --- what the tarball holds -------------------------------------------------------------------------

def test_release_mf_jobs_packages_license_and_read_back(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", blob=b"\x1f\x8b pretend")
    built = build_release(root, tmp_path / "demo-((version)).tgz", version=None, style="bosh")
    assert built.tarball == tmp_path / "demo-0+dev.1.tgz"
    doc = yaml.safe_load(read_member(built.tarball, "./release.MF"))
    assert list(doc) == ["name", "version", "commit_hash", "uncommitted_changes", "jobs", "packages", "license"]
    assert (doc["name"], doc["version"], doc["commit_hash"], doc["uncommitted_changes"]) == \
        ("demo", "0+dev.1", "non-git", False)
    assert [(j["name"], j["packages"]) for j in doc["jobs"]] == [("web", ["app"]), ("worker", [])]
    assert [(p["name"], p["dependencies"]) for p in doc["packages"]] == [("app", ["lib"]), ("lib", [])]
    for item in doc["jobs"] + doc["packages"]:
        assert item["version"] == item["fingerprint"] and len(item["fingerprint"]) == 64
        kind = "jobs" if item in doc["jobs"] else "packages"
        assert item["sha1"] == hashlib.sha1(read_member(built.tarball, f"./{kind}/{item['name']}.tgz")).hexdigest()
    assert set(doc["license"]) == {"version", "fingerprint", "sha1"}
    names = set(members(built.tarball))
    assert {"./license.tgz", "./LICENSE"} <= names

    rel = read_release(built.tarball, tmp_path / "x")
    assert rel.manifest.license is not None and rel.manifest.license.sha1 == doc["license"]["sha1"]
    web = rel.jobs["web"]
    assert web.spec.extra["provides"][0]["name"] == "web" and web.spec.extra["consumes"][0]["optional"] is True
    # bosh style: job.MF is the spec, byte for byte; the template keeps its execute bit
    assert read_member(rel.job_path("web"), "./job.MF") == (root / "jobs/web/spec").read_bytes()
    job_members = members(rel.job_path("web"))
    assert job_members["./templates/ctl.erb"].mode == 0o755 and job_members["./templates/web.conf.erb"].mode == 0o644
    pkg = members(rel.package_path("app"))
    assert sorted(pkg) == ["./app/main.py", "./app/sub/run", "./packaging"]      # main.pyc excluded
    assert pkg["./app/sub/run"].mode == 0o755
    assert sorted(members(rel.package_path("lib"))) == ["./lib/lib.tar.gz", "./packaging"]   # from blobs/


def test_lab_style_job_mf_carries_provides_and_consumes(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    create_release(root, tmp_path / "r.tgz")
    rel = read_release(tmp_path / "r.tgz", tmp_path / "x")
    mf = yaml.safe_load(read_member(rel.job_path("web"), "./job.MF"))
    assert list(mf)[:3] == ["name", "templates", "packages"]
    assert mf["provides"] == [{"name": "web", "type": "http", "properties": ["web.port"]}]
    assert mf["consumes"] == [{"name": "db", "type": "db", "optional": True}]
    assert {(j.name, j.version) for j in rel.manifest.jobs} == {("web", "1"), ("worker", "1")}


def test_a_spec_with_a_tab_inside_a_value_is_read_as_go_yaml_reads_it(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")       # os-conf-release's harden_sshd spec has "forwarding<TAB>is allowed"
    spec = root / "jobs" / "worker" / "spec"
    write(spec, "name: worker\ntemplates: {}\nproperties:\n  x:\n    description: device forwarding\tis allowed\n")
    create_release(root, tmp_path / "r.tgz", style="bosh")
    rel = read_release(tmp_path / "r.tgz", tmp_path / "x")
    assert rel.jobs["worker"].spec.properties["x"]["description"] == "device forwarding is allowed"


# --- names and versions -----------------------------------------------------------------------------

def test_the_name_comes_from_the_flag_final_yml_or_dev_yml(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    assert create_release(root, tmp_path / "a.tgz").name == "demo"
    assert create_release(root, tmp_path / "b.tgz", name="other").name == "other"
    write(root / "config" / "final.yml", "name: plain\n")
    assert create_release(root, tmp_path / "c.tgz").name == "plain"
    write(root / "config" / "final.yml", "blobstore: {provider: local}\n")
    write(root / "config" / "dev.yml", "dev_name: demo-dev\n")
    assert create_release(root, tmp_path / "d.tgz").name == "demo-dev"
    (root / "config" / "dev.yml").unlink()
    with pytest.raises(ReleaseError, match=r"no name: give --name, or set 'final_name' \(or 'name'\) in "
                                           r"config/final.yml or 'dev_name' in config/dev.yml"):
        create_release(root, tmp_path / "e.tgz")
    write(root / "config" / "final.yml", "name: a\nfinal_name: b\n")
    with pytest.raises(ReleaseError, match="config/final.yml has both name"):
        create_release(root, tmp_path / "f.tgz")


def test_version_arithmetic_is_the_bosh_clis() -> None:
    assert next_dev_version(None) == "0+dev.1"
    assert next_dev_version("0+dev.9") == "0+dev.10"
    assert next_dev_version("3") == "3+dev.1"
    assert next_dev_version("23.0.2") == "23.0.2+dev.1"
    assert next_final_version(None) == "1"
    assert next_final_version("3") == "4"
    assert next_final_version("1.9+dev.4") == "1.10"


def test_dev_and_final_releases_are_recorded_as_the_bosh_cli_does(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    one = build_release(root, None, version=None, style="bosh")
    assert one.manifest.version == "0+dev.1"
    assert one.tarball == root / "dev_releases" / "demo" / "demo-0+dev.1.tgz" and one.tarball.is_file()
    assert build_release(root, None, version=None, style="bosh").manifest.version == "0+dev.2"
    index = yaml.safe_load((root / "dev_releases" / "demo" / "index.yml").read_text())
    assert index["format-version"] == "2"
    assert sorted(b["version"] for b in index["builds"].values()) == ["0+dev.1", "0+dev.2"]
    assert yaml.safe_load((root / "dev_releases" / "demo" / "demo-0+dev.2.yml").read_text())["version"] == "0+dev.2"

    final = build_release(root, None, version=None, final=True, style="bosh")
    assert final.manifest.version == "1"
    assert final.tarball == root / "releases" / "demo" / "demo-1.tgz"
    assert build_release(root, None, version=None, style="bosh").manifest.version == "1+dev.1"
    assert build_release(root, None, version=None, final=True, style="bosh").manifest.version == "2"
    with pytest.raises(ReleaseError, match=r"release 'demo' version '2' already exists in releases/demo/index.yml"):
        build_release(root, None, version="2", final=True, style="bosh")
    # the lab style reads the indexes but writes nothing into the tree
    before = sorted(p.name for p in (root / "dev_releases" / "demo").iterdir())
    assert build_release(root, tmp_path / "x.tgz", version=None).manifest.version == "2+dev.1"
    assert sorted(p.name for p in (root / "dev_releases" / "demo").iterdir()) == before


# --- git ----------------------------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main",
                           *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.mark.skipif(not HAVE_GIT, reason="needs git")
def test_git_state_commit_hash_and_dirty_trees(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    git(root, "init", "-q")
    m = create_release(root, tmp_path / "empty.tgz", force=True)
    assert (m.commit_hash, m.uncommitted_changes) == ("empty", True)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    head = git(root, "rev-parse", "--short", "HEAD").strip()
    m = create_release(root, tmp_path / "clean.tgz", force=False)
    assert (m.commit_hash, m.uncommitted_changes) == (head, False)
    write(root / "src" / "app" / "main.py", "print('changed')\n")
    write(root / "jobs" / "web" / "new-file", "x")
    with pytest.raises(ReleaseError, match=r"(?s)local modifications \(use --force.*M src/app/main.py.*\?\? jobs/web/new-file"):
        build_release(root, tmp_path / "dirty.tgz", force=False)
    built = build_release(root, tmp_path / "dirty.tgz", force=True)
    assert (built.manifest.commit_hash, built.manifest.uncommitted_changes) == (head, True)
    assert " M src/app/main.py" in built.changes


# --- blobs ----------------------------------------------------------------------------------------------

def test_blob_size_and_digest_mismatches_name_the_blob(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", blob=b"the real blob")
    blobs_yml = root / "config" / "blobs.yml"
    entry = yaml.safe_load(blobs_yml.read_text())
    write(root / "blobs" / "lib" / "lib.tar.gz", b"the fake blob")      # same size, other content
    with pytest.raises(ReleaseError, match=r"blob 'lib/lib.tar.gz' \(blobs/lib/lib.tar.gz\): sha256 mismatch: "
                                           r"config/blobs.yml says sha256:[0-9a-f]{64}, the file has sha256:"):
        create_release(root, tmp_path / "r.tgz")
    assert not (tmp_path / "r.tgz").exists()
    write(root / "blobs" / "lib" / "lib.tar.gz", b"short")
    with pytest.raises(ReleaseError, match=r"blob 'lib/lib.tar.gz' .* size mismatch: config/blobs.yml says 13 bytes, "
                                           r"the file has 5"):
        create_release(root, tmp_path / "r.tgz")
    write(root / "blobs" / "lib" / "lib.tar.gz", b"the real blob")
    entry["lib/lib.tar.gz"]["sha"] = hashlib.sha1(b"something else").hexdigest()   # a sha1, as older trees have
    write(blobs_yml, yaml.safe_dump(entry))
    with pytest.raises(ReleaseError, match=r"sha1 mismatch: config/blobs.yml says [0-9a-f]{40}, the file has"):
        create_release(root, tmp_path / "r.tgz")
    entry["lib/lib.tar.gz"]["sha"] = hashlib.sha1(b"the real blob").hexdigest()
    write(blobs_yml, yaml.safe_dump(entry))
    create_release(root, tmp_path / "r.tgz")
    entry["lib/lib.tar.gz"]["sha"] = "md5:abc"
    write(blobs_yml, yaml.safe_dump(entry))
    with pytest.raises(ReleaseError, match=r"config/blobs.yml: blob 'lib/lib.tar.gz': sha 'md5:abc' is not"):
        create_release(root, tmp_path / "r.tgz")


def test_a_missing_blob_is_named_and_a_local_blobstore_is_read(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", blob=b"from the blobstore")
    (root / "blobs" / "lib" / "lib.tar.gz").unlink()
    with pytest.raises(ReleaseError, match=r"blob 'lib/lib.tar.gz' \(config/blobs.yml, object_id 0b1d\) is missing "
                                           r"from blobs/: bosh-lab does not download blobs from a release's blobstore "
                                           r"\(config/final.yml blobstore provider 's3'\)"):
        create_release(root, tmp_path / "r.tgz")
    store = tmp_path / "store"
    write(store / "0b1d", b"from the blobstore")
    write(root / "config" / "final.yml", f"final_name: demo\nblobstore:\n  provider: local\n  options:\n"
                                         f"    blobstore_path: {store}\n")
    create_release(root, tmp_path / "r.tgz")
    assert (root / "blobs" / "lib" / "lib.tar.gz").read_bytes() == b"from the blobstore"
    (root / "blobs" / "lib" / "lib.tar.gz").unlink()
    write(store / "0b1d", b"from the blobstorX")
    with pytest.raises(ReleaseError, match="sha256 mismatch"):
        create_release(root, tmp_path / "r.tgz")
    assert not (root / "blobs" / "lib" / "lib.tar.gz").exists()


# --- malformed trees: errors name the file and the problem -------------------------------------------

@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "jobs/web/spec").unlink(), r"jobs/web/spec is missing"),
    (lambda r: write(r / "jobs/web/spec", "name: web\ntemplates: [oops\n"), r"jobs/web/spec is not valid YAML"),
    (lambda r: (r / "jobs/web/templates/ctl.erb").unlink(), r"jobs/web/spec: template 'ctl.erb' is missing"),
    (lambda r: (r / "jobs/web/monit").unlink(), r"jobs/web/monit is missing"),
    (lambda r: write(r / "jobs/web/spec", "name: web\npackages: [nope]\n"),
     r"jobs/web/spec: package 'nope' is not a package of the release \(packages: app, lib\)"),
    (lambda r: write(r / "jobs/web/spec", "name: webby\n"), r"jobs/web/spec: name must be 'web'"),
    (lambda r: (r / "packages/app/spec").unlink(), r"packages/app/spec is missing"),
    (lambda r: (r / "packages/app/packaging").unlink(), r"packages/app/packaging is missing"),
    (lambda r: write(r / "packages/app/spec", "name: app\nfiles: [nothing/*]\n"),
     r"packages/app/spec: no file matches 'nothing/\*' \(a 'files' pattern; looked in src/, blobs/\)"),
    (lambda r: write(r / "packages/app/spec", "name: app\ndependencies: [ghost]\nfiles: [app/*]\n"),
     r"packages/app/spec: dependency 'ghost' is not a package of the release"),
    (lambda r: write(r / "packages/lib/spec", "name: lib\ndependencies: [app]\nfiles: [lib/*]\n"),
     r"packages/app/spec: dependency cycle app -> lib -> app"),
    (lambda r: write(r / "packages/app/pre_packaging", "echo\n"), r"packages/app/pre_packaging: pre_packaging"),
    (lambda r: write(r / "config/blobs.yml", "../escape: {size: 1, sha: abc}\n"), r"must be relative and stay inside blobs/"),
])
def test_malformed_trees_name_the_file_and_the_problem(tmp_path: Path, breakage: object, message: str) -> None:
    root = tree(tmp_path / "t")
    breakage(root)      # type: ignore[operator]
    with pytest.raises(ReleaseError, match=message):
        create_release(root, tmp_path / "r.tgz")
    assert not (tmp_path / "r.tgz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["t"]      # no temporary file left


def test_not_a_release_directory(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="no such release directory"):
        create_release(tmp_path / "nope", tmp_path / "r.tgz")
    with pytest.raises(ReleaseError, match="not a release directory"):
        create_release(tmp_path, tmp_path / "r.tgz")


# --- streaming ---------------------------------------------------------------------------------------

BIG = 200 << 20


_MEASURE = """
import json, resource, sys, time, tracemalloc
from boshlab.release import create_release
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.monotonic()
create_release(sys.argv[1], sys.argv[2])
took = time.monotonic() - t0
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"peak": peak, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0, "took": took}))
"""


def test_a_large_blob_streams_with_flat_memory(tmp_path: Path) -> None:
    """A 200 MB blob (sparse: zeros) goes through hashing, the package tarball and the release tarball without
    being held in memory. Measured in a fresh interpreter (its peak RSS is its own): Python's allocations peak
    under 8 MiB and the peak RSS grows by less than 32 MiB over the interpreter with boshlab imported."""
    root = tree(tmp_path / "t")
    big = root / "blobs" / "lib" / "big.tar.gz"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as w:
        w.truncate(BIG)
    sha1 = hashlib.sha1()
    with open(big, "rb") as f:
        while chunk := f.read(1 << 20):
            sha1.update(chunk)
    write(root / "config" / "blobs.yml", yaml.safe_dump({"lib/big.tar.gz": {"size": BIG, "sha": sha1.hexdigest()}}))
    out = tmp_path / "big.tgz"
    p = subprocess.run([sys.executable, "-c", _MEASURE, str(root), str(out)], capture_output=True, text=True,
                       timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["peak"] < 8 << 20, f"Python allocations peaked at {got['peak']} bytes"
    assert got["rss_kib"] < 32 << 10, f"peak RSS grew by {got['rss_kib']} KiB"
    with tarfile.open(out) as t:
        inner = t.extractfile("./packages/lib.tgz")
        assert inner is not None
        with tarfile.open(fileobj=inner, mode="r:gz") as pkg:
            assert pkg.getmember("./lib/big.tar.gz").size == BIG
    print(f"200 MB blob: {got['took']:.1f} s, tracemalloc peak {got['peak'] >> 10} KiB, RSS growth {got['rss_kib']} KiB")


def test_gzip_of_the_tarballs_is_deterministic(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    create_release(root, tmp_path / "r.tgz")
    with open(tmp_path / "r.tgz", "rb") as f:
        head = f.read(10)
    assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0"       # mtime 0
    assert gzip.decompress((tmp_path / "r.tgz").read_bytes())[257:262] == b"ustar"
    assert oct(os.stat(tmp_path / "r.tgz").st_mode & 0o777) == oct(0o644)
