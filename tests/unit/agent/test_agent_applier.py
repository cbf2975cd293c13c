"""apply, 2013 style, against the in-process DAV blobstore and Ruby's real ERB: layout, modes, links,
property defaults, sha1 and tar-escape rejection, render errors before touching the installed job."""
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, cast

import pytest

from agent.action.apply import Apply
from agent.action.base import ActionError
from agent.applier import ApplyError, bundle_hash
from agent.paths import Paths
from agent.spec import ApplySpec
from boshlab.release import JobSpec, JobTarball
from boshlab.tarball import tar_files

from .conftest import FakeDav

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby renders the templates")

MONIT = ("check process redis\n  with pidfile /var/vcap/sys/run/redis/redis.pid\n"
         '  start program "/var/vcap/jobs/redis/bin/redis_ctl start"\n'
         '  stop program "/var/vcap/jobs/redis/bin/redis_ctl stop"\n  group vcap\n')


def redis_job(conf: str = "port <%= p('redis.port') %>\nrequirepass <%= p('redis.password') %>\n"
                          "index <%= spec.index %> of <%= spec.deployment %>\n") -> bytes:
    spec = JobSpec("redis", {"config/redis.conf.erb": "config/redis.conf", "bin/redis_ctl": "bin/redis_ctl"},
                   ["redis"], {"redis.port": {"default": 6379}, "redis.password": {"default": "r3d!s"}})
    return JobTarball(spec, MONIT, {"config/redis.conf.erb": conf,
                                    "bin/redis_ctl": "#!/bin/bash\n# port <%= p('redis.port') %>\n"}).to_bytes()


def redis_package(text: str = "fake redis") -> bytes:
    return tar_files({"./bin/redis-server": f"#!/bin/sh\necho {text}\n"}, {"./bin/redis-server": 0o755})


def make_spec(dav: FakeDav, job: bytes, pkg: bytes, props: dict[str, Any] | None = None, job_sha1: str | None = None,
              pkg_sha1: str | None = None, pkg_version: str = '1.1') -> ApplySpec:
    job_sha = dav.put("job-blob-1", job)
    pkg_id = f"pkg-blob-{pkg_version}"
    pkg_sha = dav.put(pkg_id, pkg)
    return cast(ApplySpec, {
        "deployment": "redis-solo", "release": {"name": "redis", "version": "1"},
        "job": {"name": "redis", "release": "redis", "template": "redis", "version": "1",
                "sha1": job_sha1 or job_sha, "blobstore_id": "job-blob-1",
                "templates": [{"name": "redis", "version": "1", "sha1": job_sha1 or job_sha,
                               "blobstore_id": "job-blob-1"}]},
        "index": 0, "id": "uuid-1", "name": "redis", "networks": {}, "resource_pool": {},
        "packages": {"redis": {"name": "redis", "version": pkg_version, "sha1": pkg_sha1 or pkg_sha,
                               "blobstore_id": pkg_id}},
        "persistent_disk": 0, "configuration_hash": "cfg-1",
        "properties": {"redis": {"port": 7000}} if props is None else props,
        "template_hashes": {"redis": "t"},
    })


def installed_job(vcap: Paths, spec: ApplySpec) -> Path:
    ref = spec["job"]["templates"][0]
    return vcap.data / "jobs" / "redis" / hashlib.sha1(f"{ref['version']}-{ref['sha1']}".encode()).hexdigest()


async def test_apply_installs_renders_and_links(services: Any, vcap: Paths, dav: FakeDav) -> None:
    spec = make_spec(dav, redis_job(), redis_package())
    assert await Apply(services).run(spec) == "applied"
    job_dir = installed_job(vcap, spec)
    assert os.readlink(vcap.job_link("redis")) == str(job_dir)
    # properties: 7000 from the spec, the password falls back to the job.MF default
    assert (vcap.job_link("redis") / "config/redis.conf").read_text() == \
        "port 7000\nrequirepass r3d!s\nindex 0 of redis-solo\n"
    assert (job_dir / "bin/redis_ctl").stat().st_mode & 0o777 == 0o755
    assert (job_dir / "config/redis.conf").stat().st_mode & 0o777 == 0o644
    assert (job_dir / "monit").read_text() == MONIT
    pkg_dir = vcap.data / "packages" / "redis" / bundle_hash(spec["packages"]["redis"])
    assert os.readlink(vcap.package_link("redis")) == str(pkg_dir)
    assert os.readlink(job_dir / "packages" / "redis") == str(pkg_dir)
    assert (vcap.job_link("redis") / "packages/redis/bin/redis-server").read_text() == "#!/bin/sh\necho fake redis\n"
    assert (vcap.sys / "log" / "redis").is_dir() and (vcap.sys / "run" / "redis").is_dir()
    assert services.supervisor.installed == [("redis", MONIT)]
    assert services.supervisor.calls == ["install_jobs", "reload"]
    assert json.loads(vcap.spec.read_text()) == spec
    assert {p.name: p.read_text() for p in vcap.instance.iterdir()} == {
        "id": "uuid-1", "name": "redis", "deployment": "redis-solo"}
    assert list(vcap.tmp.iterdir()) == []  # staging cleaned up


async def test_reapply_with_new_properties_and_package_cleans_old_versions(services: Any, vcap: Paths,
                                                                           dav: FakeDav) -> None:
    first = make_spec(dav, redis_job(), redis_package())
    await Apply(services).run(first)
    second = make_spec(dav, redis_job(), redis_package("v2"), props={"redis": {"port": 7001, "password": "x"}},
                       pkg_version="1.2")
    await Apply(services).run(second)
    assert (vcap.job_link("redis") / "config/redis.conf").read_text().startswith("port 7001\nrequirepass x\n")
    versions = sorted(p.name for p in (vcap.data / "packages" / "redis").iterdir())
    assert versions == [bundle_hash(second["packages"]["redis"])]
    assert (vcap.package_link("redis") / "bin/redis-server").read_text().endswith("echo v2\n")


async def test_identity_apply_only_saves_the_spec(services: Any, vcap: Paths, dav: FakeDav) -> None:
    spec: ApplySpec = {"deployment": "redis-solo", "job": {"name": "redis"}, "index": 0, "id": "uuid-1", "networks": {}}
    assert await Apply(services).run(spec) == "applied"
    assert json.loads(vcap.spec.read_text()) == spec
    assert dav.requests == [] and services.supervisor.calls == []


async def test_sha1_mismatch_rejects_the_blob_and_installs_nothing(services: Any, vcap: Paths, dav: FakeDav) -> None:
    spec = make_spec(dav, redis_job(), redis_package(), job_sha1="0" * 40)
    real = hashlib.sha1(redis_job()).hexdigest()
    with pytest.raises(ActionError) as e:
        await Apply(services).run(spec)
    assert str(e.value) == (f"Applying: job 'redis': sha1 mismatch for blob job-blob-1: "
                            f"expected {'0' * 40}, got {real}")
    assert not vcap.job_link("redis").exists() and not (vcap.data / "jobs" / "redis").exists()
    assert not vcap.spec.exists() and services.supervisor.calls == []


async def test_package_sha1_mismatch_leaves_the_installed_job(services: Any, vcap: Paths, dav: FakeDav) -> None:
    good = make_spec(dav, redis_job(), redis_package())
    await Apply(services).run(good)
    before = (vcap.job_link("redis") / "config/redis.conf").read_text()
    bad = make_spec(dav, redis_job(), redis_package("v2"), props={"redis": {"port": 1}}, pkg_version="2",
                    pkg_sha1="f" * 40)
    with pytest.raises(ActionError, match=r"package 'redis': sha1 mismatch for blob pkg-blob-2: expected f{40}, got"):
        await Apply(services).run(bad)
    assert (vcap.job_link("redis") / "config/redis.conf").read_text() == before
    assert json.loads(vcap.spec.read_text()) == good


async def test_tar_entries_outside_the_target_are_refused(services: Any, vcap: Paths, dav: FakeDav) -> None:
    evil = tar_files({"./bin/ok": "x", "../../escaped": "gotcha"})
    spec = make_spec(dav, redis_job(), evil)
    with pytest.raises(ActionError, match=r"package 'redis' \(blob pkg-blob-1.1\): cannot unpack blob: tar entry "
                                          r"'../../escaped' would land outside"):
        await Apply(services).run(spec)
    assert not any(p.name == "escaped" for p in vcap.base.rglob("escaped"))
    assert not (vcap.data / "packages" / "redis").exists() and not vcap.job_link("redis").exists()


async def test_render_error_names_job_template_property_before_touching_the_job(services: Any, vcap: Paths,
                                                                                dav: FakeDav) -> None:
    good = make_spec(dav, redis_job(), redis_package())
    await Apply(services).run(good)
    before = (vcap.job_link("redis") / "config/redis.conf").read_text()
    broken = make_spec(dav, redis_job("port <%= p('redis.port') %>\nmax <%= p('redis.maxclients') %>\n"),
                       redis_package(), props={"redis": {"port": 7002}})
    services.supervisor.calls.clear()
    with pytest.raises(ActionError) as e:
        await Apply(services).run(broken)
    assert str(e.value) == ("Applying: Error filling in template 'config/redis.conf.erb' for job 'redis': "
                            "property 'redis.maxclients' has no value and no default")
    assert (vcap.job_link("redis") / "config/redis.conf").read_text() == before
    assert services.supervisor.calls == []


async def test_apply_spec_missing_blob_fields(services: Any, dav: FakeDav) -> None:
    spec = make_spec(dav, redis_job(), redis_package())
    del cast(dict[str, Any], spec["packages"]["redis"])["sha1"]
    with pytest.raises(ActionError, match="Applying: apply spec: package 'redis' has no sha1"):
        await Apply(services).run(spec)


async def test_names_cannot_leave_var_vcap(services: Any, vcap: Paths, dav: FakeDav) -> None:
    spec = make_spec(dav, redis_job(), redis_package())
    spec["job"]["templates"][0]["name"] = "../../etc"
    with pytest.raises(ActionError, match=r"Applying: apply spec: job template 0: '../../etc' is not a valid name"):
        await Apply(services).run(spec)
    spec = make_spec(dav, redis_job(), redis_package())
    spec["packages"] = {"..": spec["packages"]["redis"]}
    with pytest.raises(ActionError, match=r"package: '..' is not a valid name"):
        await Apply(services).run(spec)


async def test_a_broken_job_blob_is_reported(services: Any, dav: FakeDav) -> None:
    spec = make_spec(dav, b"not a tarball", redis_package())
    with pytest.raises(ActionError, match="Applying: job 'redis' blob is not a tarball"):
        await Apply(services).run(spec)


async def test_apply_error_without_applier_error_type(services: Any, dav: FakeDav) -> None:
    with pytest.raises(ApplyError):
        await services.applier.apply({"job": {"templates": [{"name": "x"}]}, "configuration_hash": "c"})
