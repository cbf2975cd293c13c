"""Fixtures of the CLI's unit tests: the real nginx DAV blobstore (the lab's blobstore/nginx.conf)."""
from __future__ import annotations

from tests.support.dav_server import dav_server  # noqa: F401 - the session fixture
