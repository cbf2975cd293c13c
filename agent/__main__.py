"""``python -m agent [-b /var/vcap]``: the bosh-lab agent (runit runs it as /var/vcap/bosh/bin/bosh-agent).

Start-up does as little as it can (issue 12: a VM answers ``ping`` soon after its container starts, and stays
small): what only some messages need (blobs, tarballs, ERB, compile_package, fetch_logs) is imported when
such a message comes. nats-py imports aiohttp, when it is installed, for its WebSocket transport only; the
agent speaks ``nats://``, so nats-py is imported with aiohttp hidden (:func:`without_module`): aiohttp (about
8 MiB) is loaded by the first blob download, not at boot."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def without_module(name: str) -> Iterator[None]:
    """Within the block, ``import name`` fails as if ``name`` were not installed (an optional import is
    skipped); afterwards it can be imported again. Nothing changes when it is already imported."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(name, 0) is None:
            del sys.modules[name]


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="bosh-agent", description="bosh-lab agent")
    parser.add_argument("-b", "--base-dir", default="/var/vcap", help="the VM's /var/vcap (default %(default)s)")
    opts = parser.parse_args(argv)
    with without_module("aiohttp"):
        import nats  # noqa: F401  (its optional WebSocket transport without aiohttp)
    import asyncio

    from .boot import run
    from .log import setup_logging
    from .paths import Paths
    setup_logging()
    return asyncio.run(run(Paths(Path(opts.base_dir))))


if __name__ == "__main__":
    sys.exit(main())
