"""compile_package (§8): dependencies, the four BOSH_* variables, bash -x packaging, logs, upload, errors."""
import io
import os
import tarfile
from typing import IO, Any, cast

import pytest

from agent.action.base import ActionError
from agent.action.compile_package import CompilePackage
from agent.paths import Paths
from boshlab.tarball import tar_files

from .conftest import FakeDav

PACKAGING = """set -e
echo "compiling $BOSH_PACKAGE_NAME $BOSH_PACKAGE_VERSION in $BOSH_COMPILE_TARGET"
test "$PWD" = "$BOSH_COMPILE_TARGET"
mkdir -p "$BOSH_INSTALL_TARGET/bin"
cp hello.sh "$BOSH_INSTALL_TARGET/bin/hello"
cat "$LIBFOO/VERSION" > "$BOSH_INSTALL_TARGET/libfoo-version"   # the linked dependency
echo "$BOSH_INSTALL_TARGET" > "$BOSH_INSTALL_TARGET/install-target"
"""


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: cast(IO[bytes], tar.extractfile(m)).read() for m in tar.getmembers() if m.isfile()}


async def test_compile_package_round_trip(services: Any, vcap: Paths, dav: FakeDav,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    libfoo = tar_files({"./VERSION": "2.0\n"})
    dep_sha = dav.put("libfoo-blob", libfoo)
    monkeypatch.setenv("LIBFOO", str(vcap.package_link("libfoo")))  # /var/vcap/packages/libfoo on a VM
    source = tar_files({"./packaging": PACKAGING,
                        "./hello.sh": "#!/bin/sh\necho hi\n"}, {"./hello.sh": 0o755})
    src_sha = dav.put("src-blob", source)
    deps = {"libfoo": {"name": "libfoo", "version": "2.0.1", "sha1": dep_sha, "blobstore_id": "libfoo-blob"}}
    result = await CompilePackage(services).run("src-blob", src_sha, "hello", "1.0.3", deps)
    assert set(result) == {"result"} and set(result["result"]) == {"blobstore_id", "sha1"}
    blob = dav.get(result["result"]["blobstore_id"])
    import hashlib
    assert hashlib.sha1(blob).hexdigest() == result["result"]["sha1"]
    files = members(blob)
    assert files["./bin/hello"] == b"#!/bin/sh\necho hi\n"
    assert files["./libfoo-version"] == b"2.0\n"
    assert files["./install-target"].decode().strip() == str(vcap.package_link("hello"))
    logs = vcap.sys / "log" / "compilation"
    assert "compiling hello 1.0.3 in " + str(vcap.compile_dir("hello")) in (logs / "packaging.stdout.log").read_text()
    assert "+ mkdir -p" in (logs / "packaging.stderr.log").read_text()  # bash -x
    # cleaned up: no installed packages, no compile dir
    assert list((vcap.data / "packages").iterdir()) == [] and not vcap.compile_dir("hello").exists()
    assert not os.path.lexists(vcap.package_link("libfoo"))


async def test_packaging_failure_message(services: Any, dav: FakeDav) -> None:
    source = tar_files({"./packaging": "echo out-line\necho err-line >&2\nexit 3\n"})
    sha = dav.put("src", source)
    with pytest.raises(ActionError) as e:
        await CompilePackage(services).run("src", sha, "broken", "1.1", {})
    assert str(e.value) == "Command exited with 3; Stdout: out-line\n, Stderr: + echo out-line\n+ echo err-line\nerr-line\n+ exit 3\n"


async def test_source_sha1_mismatch(services: Any, dav: FakeDav) -> None:
    dav.put("src", tar_files({"./packaging": "true\n"}))
    with pytest.raises(ActionError, match=r"Compiling package 'p': package 'p' source: sha1 mismatch for blob src"):
        await CompilePackage(services).run("src", "1" * 40, "p", "1", {})


async def test_bad_names_and_deps(services: Any) -> None:
    with pytest.raises(ActionError, match=r"package: '../x' is not a valid name"):
        await CompilePackage(services).run("src", "s", "../x", "1", {})
    with pytest.raises(ActionError, match="dependency 'd' has no blobstore_id"):
        await CompilePackage(services).run("src", "s", "x", "1", {"d": {"name": "d", "version": "1", "sha1": "s"}})
