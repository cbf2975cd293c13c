"""``bosh-lab watch`` against a whole director (``GET /watch`` for real: fake CPI, in-process agents, real
nats-server and nginx): a deploy's apply shows as one folded line, ``--json`` passes the director's JSONL."""
from __future__ import annotations

import json
import sys

import pytest

from cli.errors import CLIError
from cli.main import parser, run
from tests.support.dav_server import DavServer
from tests.support.director_harness import Director, dummy_manifest, wait_until
from tests.unit.director.conftest import Directors, directors  # noqa: F401 - the fixture


@pytest.fixture
async def watched(directors: Directors, dav_server: DavServer) -> Director:  # noqa: F811
    return await directors.make(upload=False, blobstore_log=str(dav_server.watch_log))


async def watch(capsys: pytest.CaptureFixture[str], d: Director, *argv: str) -> tuple[int, list[str]]:
    url = f"http://127.0.0.1:{d.config.api_port}"
    try:
        code = await run(parser().parse_args(["-e", url, "--user", d.config.api_user, "--password",
                                              d.config.api_password, "watch", *argv]))
    except CLIError as e:
        print(f"Error: {e}", file=sys.stderr)
        code = e.code
    return code, capsys.readouterr().out.splitlines()


async def test_watch_a_deploy_on_a_real_director(watched: Director, capsys: pytest.CaptureFixture[str]) -> None:
    await watched.upload_release()
    await watched.deploy(dummy_manifest("dep"))

    async def applied() -> list[str]:
        code, lines = await watch(capsys, watched, "--no-follow", "-d", "dep", "--method", "apply", "--history", "100")
        assert code == 0
        return [line for line in lines if "applied in" in line]
    lines = await wait_until(applied, 10, what="the apply line")
    assert "app/0" in lines[0] and "get_task poll" in lines[0]
    code, raw = await watch(capsys, watched, "--no-follow", "--json", "--instance", "app/0", "--history", "100")
    assert code == 0 and raw
    events = [json.loads(line) for line in raw]
    assert all(e["instance"] == "app/0" or e["kind"] in ("heartbeats", "fault", "note", "dropped") for e in events
               if e.get("instance"))
    assert {"request", "reply"} <= {e["kind"] for e in events}
