"""Running a system command (mount, useradd, ...) through asyncio, with failures that name the command."""
from __future__ import annotations

import asyncio

STDERR_LIMIT = 2000


async def run_command(*argv: str, error: type[Exception], ok: tuple[int, ...] = (0,)) -> str:
    """Run ``argv``; return its stdout. Raise ``error`` naming the command, its exit code and the end of its
    stderr when the exit code is not in ``ok``, or naming the program when it cannot be started."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        raise error(f"{argv[0]}: {e.strerror or e}") from None
    out, err = await proc.communicate()
    if proc.returncode not in ok:
        raise error(f"`{' '.join(argv)}` exited with {proc.returncode}: "
                    f"{err.decode(errors='replace').strip()[-STDERR_LIMIT:]}")
    return out.decode(errors="replace")
