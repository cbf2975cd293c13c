"""``bosh-lab blobstore``, the deck's blobstore client console (slide 29), against the real nginx DAV blobstore
with the lab's blobstore/nginx.conf: exists, put/get round trips, listing (the director only), the console
driven through stdin with the deck's Ruby forms, a missing blob, a blobstore.yml."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.errors import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, CLIError
from cli.main import parser, run
from tests.support.dav_server import DavServer
from tests.unit.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BLOBSTORE_AGENT_USER", "BLOBSTORE_AGENT_PASSWORD", "BLOBSTORE_DIRECTOR_USER",
                "BLOBSTORE_DIRECTOR_PASSWORD", "BOSH_LAB_BLOBSTORE_ENDPOINT", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)


async def bsc(capsys: pytest.CaptureFixture[str], dav: DavServer | None, *argv: str,
              json_out: bool = False) -> tuple[int, str, str]:
    """``bosh-lab [--json] blobstore --blobstore ENDPOINT ARGV`` as main() runs it: (exit code, stdout, stderr)."""
    endpoint = ["--blobstore", dav.endpoint] if dav else []
    try:
        code = await run(parser().parse_args([*(["--json"] if json_out else []), "blobstore", *endpoint, *argv]))
    except CLIError as e:
        print(f"Error: {e}", file=sys.stderr)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def payload(tmp_path: Path, size: int = 3 * 1024 * 1024 + 17) -> Path:
    path = tmp_path / "redis-package.tgz"
    path.write_bytes(os.urandom(size))
    return path


async def test_put_then_get_round_trip(dav_server: DavServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = payload(tmp_path)
    code, out, _ = await bsc(capsys, dav_server, "put", str(src))
    assert code == 0
    blob_id = out.strip()
    assert len(blob_id) == 36 and blob_id.count("-") == 4, "a uuid, as the director makes blob ids"
    dest = tmp_path / "back.tgz"
    code, out, _ = await bsc(capsys, dav_server, "get", blob_id, str(dest))
    assert code == 0
    want = hashlib.sha1(src.read_bytes()).hexdigest()
    assert hashlib.sha1(dest.read_bytes()).hexdigest() == want
    assert want in out
    code, out, _ = await bsc(capsys, dav_server, "put", str(src), json_out=True)
    assert code == 0 and json.loads(out)["sha1"] == want


async def test_exists_true_and_false(dav_server: DavServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = await bsc(capsys, dav_server, "put", str(payload(tmp_path, 10)))
    blob_id = out.strip()
    assert await bsc(capsys, dav_server, "exists", blob_id) == (0, "true\n", "")
    assert await bsc(capsys, dav_server, "exists", "no-such-blob") == (1, "false\n", "")
    code, out, _ = await bsc(capsys, dav_server, "exists", blob_id, json_out=True)
    assert code == 0 and json.loads(out) == {"id": blob_id, "exists": True}


async def test_a_missing_blob_is_exit_4(dav_server: DavServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await bsc(capsys, dav_server, "get", "no-such-blob", str(tmp_path / "x"))
    assert code == EXIT_NOT_FOUND
    assert "blob no-such-blob not found" in err
    assert not (tmp_path / "x").exists()


async def test_ls_as_the_director(dav_server: DavServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = await bsc(capsys, dav_server, "put", str(payload(tmp_path, 1234)))
    blob_id = out.strip()
    code, out, _ = await bsc(capsys, dav_server, "--as", "director", "ls")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(blob_id))
    assert "1234" in row
    code, out, _ = await bsc(capsys, dav_server, "--as", "director", "ls", json_out=True)
    entry = next(b for b in json.loads(out) if b["id"] == blob_id)
    assert entry["size"] == 1234 and entry["path"].endswith("/" + blob_id)


async def test_ls_as_an_agent_is_refused(dav_server: DavServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await bsc(capsys, dav_server, "ls")   # --as agent is the default
    assert code == EXIT_FAILED
    assert "listing blobs needs the director's credentials (--as director)" in err
    assert out == ""


async def test_credentials_from_the_environment(dav_server: DavServer, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOBSTORE_DIRECTOR_PASSWORD", "wrong")
    code, _, err = await bsc(capsys, dav_server, "--as", "director", "exists", "x")
    assert code == EXIT_FAILED and "refused user 'director'" in err
    monkeypatch.setenv("BOSH_LAB_BLOBSTORE_ENDPOINT", dav_server.endpoint)
    monkeypatch.setenv("BLOBSTORE_DIRECTOR_PASSWORD", dav_server.director_password)
    assert (await bsc(capsys, None, "--as", "director", "ls"))[0] == 0


@pytest.mark.parametrize("nested", [False, True])
async def test_a_blobstore_yml_as_the_decks(dav_server: DavServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            nested: bool) -> None:
    conf = tmp_path / "blobstore.yml"
    body = f"endpoint: {dav_server.endpoint}\nuser: {dav_server.director_user}\npassword: {dav_server.director_password}\n"
    if nested:
        body = "provider: dav\noptions:\n" + "".join(f"  {line}\n" for line in body.splitlines())
    conf.write_text(body)
    code, out, _ = await bsc(capsys, None, "-p", "dav", "-c", str(conf), "ls")
    assert code == 0, out
    conf.write_text("- a list\n")
    code, _, err = await bsc(capsys, None, "-c", str(conf), "ls")
    assert code == EXIT_USAGE and "endpoint, user and password" in err


async def test_an_unreachable_blobstore_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await bsc(capsys, None, "--blobstore", f"http://127.0.0.1:{free_port()}", "exists", "x")
    assert code == EXIT_UNREACHABLE and "cannot reach the blobstore" in err


async def test_usage_errors(dav_server: DavServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (await bsc(capsys, dav_server, "get", "only-an-id"))[0] == EXIT_USAGE
    assert (await bsc(capsys, dav_server, "frobnicate"))[0] == EXIT_USAGE
    assert (await bsc(capsys, dav_server, "put", str(tmp_path / "missing")))[0] == EXIT_USAGE
    assert (await bsc(capsys, dav_server, "exists", "a/b"))[0] == EXIT_USAGE


async def test_the_console_with_the_decks_ruby_forms(dav_server: DavServer, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = payload(tmp_path, 100_000)
    monkeypatch.chdir(tmp_path)
    _, out, _ = await bsc(capsys, dav_server, "put", str(src))
    blob_id = out.strip()
    script = "\n".join([
        f'bsc.object_exists?("{blob_id}")',
        "bsc.object_exists?('nope')",
        f'File.open("copy1.tgz","w"){{|f| bsc.get_file("{blob_id}", f)}}',
        f'File.open("copy2.tgz", "w") do |file| bsc.get_file("{blob_id}", file) end',
        f'bsc.get_file("{blob_id}", "copy3.tgz")',
        f'bsc.create("{src.name}")',
        f'bsc.create(File.open("{src.name}"))',
        'bsc.get_file("nope", "never.tgz")',
        f"exists {blob_id}",
        "ls",
        "bsc.frobnicate",
        "help",
        "exit",
        "exists never-reached",
    ]) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code, out, _ = await bsc(capsys, dav_server)
    assert code == 0
    assert out.startswith("Welcome to bosh-lab blobstore client console\n")
    answers = out.split("bsc> ")[1:]
    assert answers[0] == "=> true\n"
    assert answers[1] == "=> false\n"
    want = hashlib.sha1(src.read_bytes()).hexdigest()
    for n in (1, 2, 3):
        assert hashlib.sha1((tmp_path / f"copy{n}.tgz").read_bytes()).hexdigest() == want
        assert answers[n + 1] == f"wrote copy{n}.tgz: 100000 bytes, sha1 {want}\n=> nil\n"
    new_ids = [a.strip().removeprefix('=> "').removesuffix('"') for a in answers[5:7]]
    assert all(len(i) == 36 for i in new_ids) and len(set(new_ids) | {blob_id}) == 3
    assert "Error: blob nope not found" in answers[7] and not (tmp_path / "never.tgz").exists()
    assert answers[8] == "true\n"
    assert "Error: listing blobs needs the director's credentials" in answers[9]
    assert "Error: not understood: bsc.frobnicate" in answers[10]
    assert 'bsc.object_exists?("ID")' in answers[11]
    assert len(answers) == 13 and answers[12] == "", "exit leaves the console"


def test_the_console_as_a_process_reading_stdin(dav_server: DavServer, tmp_path: Path) -> None:
    conf = tmp_path / "blobstore.yml"
    conf.write_text(f"endpoint: {dav_server.endpoint}\nuser: director\npassword: {dav_server.director_password}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOBSTORE_", "BOSH_LAB_BLOBSTORE"))}
    proc = subprocess.run([sys.executable, "-m", "cli", "blobstore", "-c", str(conf)], cwd=ROOT, env=env,
                          input="bsc.object_exists?(\"nope\")\nls\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Welcome to bosh-lab blobstore client console" in proc.stdout
    assert "=> false" in proc.stdout and "Blob ID" in proc.stdout   # ends at end of input


async def test_get_to_stdout_streams_the_blob_and_says_its_size_on_stderr(
        dav_server: DavServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``get ID -`` (how a blob reaches the host through ``docker compose exec``): the exact bytes on stdout,
    the summary on stderr, in a process of its own as a person runs it."""
    src = payload(tmp_path, 1024 * 1024 + 5)
    code, out, _ = await bsc(capsys, dav_server, "put", str(src))
    assert code == 0
    blob_id = out.strip()
    get = [sys.executable, "-m", "cli", "blobstore", "--blobstore", dav_server.endpoint, "get"]
    p = await asyncio.to_thread(subprocess.run, [*get, blob_id, "-"], cwd=ROOT, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == src.read_bytes()
    assert f"{src.stat().st_size} bytes, sha1 {hashlib.sha1(src.read_bytes()).hexdigest()}" in p.stderr.decode()
    p = await asyncio.to_thread(subprocess.run, [*get, "00000000-0000-0000-0000-000000000000", "-"], cwd=ROOT,
                                capture_output=True, timeout=60)
    assert p.returncode == EXIT_NOT_FOUND and p.stdout == b""
