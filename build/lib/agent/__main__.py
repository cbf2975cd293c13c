"""``python -m agent [-b /var/vcap]``: the bosh-lab agent (runit runs it as /var/vcap/bosh/bin/bosh-agent)."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .boot import run
from .log import setup_logging
from .paths import Paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bosh-agent", description="bosh-lab agent")
    parser.add_argument("-b", "--base-dir", default="/var/vcap", help="the VM's /var/vcap (default %(default)s)")
    opts = parser.parse_args(argv)
    setup_logging()
    return asyncio.run(run(Paths(Path(opts.base_dir))))


if __name__ == "__main__":
    sys.exit(main())
