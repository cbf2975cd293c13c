"""fetch_logs: log types, doublestar filters, a real tgz in the blobstore with its sha1, errors naming what
is wrong, nothing left behind."""
import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.action.fetch_logs import _Padded, glob_regex
from agent.paths import Paths

from .conftest import FakeDav, call


def logs(vcap: Paths) -> None:
    job = vcap.job_logs / "redis"
    (job / "archive").mkdir(parents=True)
    (job / "redis.log").write_text("ready to accept connections\n")
    (job / "redis.log").chmod(0o640)
    os.utime(job / "redis.log", (1_500_000_000, 1_500_000_000))
    (job / "redis.stderr.log").write_text("")
    (job / "archive" / "old.log.gz").write_bytes(b"\x1f\x8b old")
    (job / "pid").write_text("42")
    vcap.agent_logs.mkdir(parents=True, exist_ok=True)
    (vcap.agent_logs / "current").write_text('#[1] INFO: Message: {"method"=>"ping"}\n')


async def fetch(services: Any, dav: FakeDav, *args: Any) -> tuple[dict[str, Any], Any]:
    reply = await call(services, "fetch_logs", list(args))
    if "exception" in reply:
        return reply, None
    blob = dav.get(reply["value"]["blobstore_id"])
    assert hashlib.sha1(blob).hexdigest() == reply["value"]["sha1"]
    return reply, tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz")


@pytest.mark.parametrize("args,names", [
    (["job"], {"./redis/redis.log", "./redis/redis.stderr.log", "./redis/archive/old.log.gz", "./redis/pid"}),
    (["job", None], {"./redis/redis.log", "./redis/redis.stderr.log", "./redis/archive/old.log.gz", "./redis/pid"}),
    (["job", []], {"./redis/redis.log", "./redis/redis.stderr.log", "./redis/archive/old.log.gz", "./redis/pid"}),
    (["agent"], {"./current"}),
    (["job,agent", ["**/*.log"]], {"./redis/redis.log", "./redis/redis.stderr.log"}),
    (["agent,job", ["redis/*", "current"]], {"./current", "./redis/redis.log", "./redis/redis.stderr.log",
                                             "./redis/pid"}),
    (["job", ["**/old.*"]], {"./redis/archive/old.log.gz"}),
    (["job", ["nothing-matches"]], set()),
])
async def test_log_types_and_filters(services: Any, vcap: Paths, dav: FakeDav, args: list[Any],
                                     names: set[str]) -> None:
    logs(vcap)
    reply, tar = await fetch(services, dav, *args)
    assert set(reply["value"]) == {"blobstore_id", "sha1"}
    assert set(tar.getnames()) == names


async def test_files_keep_content_mode_and_time_and_the_tarball_is_removed(services: Any, vcap: Paths,
                                                                           dav: FakeDav) -> None:
    logs(vcap)
    _, tar = await fetch(services, dav, "job")
    info = tar.getmember("./redis/redis.log")
    assert (info.mode & 0o777, info.mtime) == (0o640, 1_500_000_000)
    assert tar.extractfile(info).read() == b"ready to accept connections\n"
    assert list(vcap.tmp.iterdir()) == []
    assert [m for m, _ in dav.requests] == ["PUT"]


async def test_symlinks_are_stored_as_links_never_followed(services: Any, vcap: Paths, dav: FakeDav,
                                                           tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not a log")
    (vcap.job_logs / "evil").mkdir(parents=True)
    os.symlink(secret, vcap.job_logs / "evil" / "x.log")
    os.symlink(tmp_path, vcap.job_logs / "evil" / "dir")
    _, tar = await fetch(services, dav, "job")
    assert {m.name: (m.issym(), m.linkname) for m in tar.getmembers()} == {
        "./evil/x.log": (True, str(secret)), "./evil/dir": (True, str(tmp_path))}


@pytest.mark.parametrize("args,message", [
    (["jobs"], "Invalid log type 'jobs' (expected job, agent or system, comma-joinable)"),
    (["job,bogus"], "Invalid log type 'bogus'"),
    ([""], "Invalid log type ''"),
    (["job", ["../../etc/shadow"]], "filter '../../etc/shadow' must be a glob relative to the log directory"),
    (["job", ["/etc/*"]], "filter '/etc/*' must be a glob relative"),
    (["job", ["**/*", 5]], "filter 2 must be a non-empty string, got an integer"),
    (["job", [""]], "filter 1 must be a non-empty string, got a string"),
    (["job", "**/*"], "argument 2 (filters) must be an array, got a string"),
    ([7], "argument 1 (log type) must be a string, got an integer"),
    ([], "Not enough arguments, expected 1, got 0"),
])
async def test_bad_arguments_name_the_problem_and_upload_nothing(services: Any, vcap: Paths, dav: FakeDav,
                                                                 args: list[Any], message: str) -> None:
    logs(vcap)
    reply = await call(services, "fetch_logs", args)
    assert message in reply["exception"]["message"]
    assert dav.requests == [] and list(vcap.tmp.iterdir()) == []


async def test_blobstore_failure(services: Any, vcap: Paths, dav: FakeDav) -> None:
    services.settings.settings["blobstore"]["options"]["password"] = "wrong"
    reply = await call(services, "fetch_logs", ["agent"])
    assert "Uploading the logs tarball: uploading blob" in reply["exception"]["message"]
    assert list(vcap.tmp.iterdir()) == []


@pytest.mark.parametrize("glob,matches,misses", [
    ("**/*", ["a", "a/b", "a/b/c.log"], []),
    ("*.log", ["x.log"], ["a/x.log", "x.log.1"]),
    ("**/*.log", ["x.log", "a/b/x.log"], ["x.log.gz"]),
    ("redis/**", ["redis/a", "redis/a/b"], ["other/a"]),
    ("a?c", ["abc"], ["a/c", "abbc"]),
    ("[ab].log", ["a.log", "b.log"], ["c.log"]),
    ("[!ab].log", ["c.log"], ["a.log"]),
    ("a+b(c).log", ["a+b(c).log"], ["aab(c).log"]),
])
def test_glob_regex(glob: str, matches: list[str], misses: list[str]) -> None:
    rx = glob_regex(glob)
    assert all(rx.fullmatch(m) for m in matches), glob
    assert not any(rx.fullmatch(m) for m in misses), glob


def test_a_file_that_shrinks_while_read_is_padded() -> None:
    padded = _Padded(io.BytesIO(b"abc"), 6)
    assert padded.read(4) + padded.read(10) + padded.read(10) == b"abc\0\0\0"
