"""Fixtures for the director's scenario tests: a whole director (``director.lab.Lab``) with the fake CPI whose
VMs run the real agent in-process, a real nats-server and a real nginx DAV blobstore. No Docker."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dav_server import DavServer, dav_server  # noqa: F401 - the session fixture
from tests.support.director_harness import Director, director_config
from tests.support.fake_cpi import FakeCPI
from tests.unit.conftest import NatsServer


class Directors:
    """``await directors.make(live_disk_attach=False, upload=True, **config)``: a started Director (the dummy
    release uploaded); ``await directors.restart(d)``: stop it, start a new one on the same data dir and CPI.
    At the end every director is stopped and every fake VM ended."""

    def __init__(self, tmp: Path, nats: NatsServer, dav: DavServer) -> None:
        self.tmp, self.nats, self.dav = tmp, nats, dav
        self.made: list[Director] = []
        self.cpis: list[FakeCPI] = []

    async def make(self, live_disk_attach: bool = False, upload: bool = True, **overrides: Any) -> Director:
        cpi = FakeCPI(self.tmp / f"cpi{len(self.cpis)}", live_disk_attach=live_disk_attach)
        self.cpis.append(cpi)
        nats_url = overrides.pop("nats_url", self.nats.url)
        config = director_config(self.tmp / f"director{len(self.made)}", nats_url, self.dav, **overrides)
        d = await Director.start(config, cpi)
        self.made.append(d)
        if upload:
            await d.upload_release()
        return d

    async def restart(self, d: Director) -> Director:
        await d.stop()
        new = await Director.start(d.config, d.cpi)
        self.made.append(new)
        return new

    async def close(self) -> None:
        for d in self.made:
            await d.stop()
        for c in self.cpis:
            await c.shutdown()


@pytest.fixture
async def directors(tmp_path: Path, nats_server: NatsServer, dav_server: DavServer  # noqa: F811
                    ) -> AsyncIterator[Directors]:
    ds = Directors(tmp_path, nats_server, dav_server)
    try:
        yield ds
    finally:
        await ds.close()


@pytest.fixture
async def director(directors: Directors) -> Director:
    return await directors.make()
