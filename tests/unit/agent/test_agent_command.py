"""The one runner the agent uses for system commands (mount, useradd, ...), on real processes."""
import pytest

from agent.command import run_command


class Boom(Exception):
    pass


async def test_stdout_of_a_successful_command() -> None:
    assert await run_command("sh", "-c", "echo hello", error=Boom) == "hello\n"


async def test_failure_names_command_exit_code_and_stderr() -> None:
    with pytest.raises(Boom, match=r"`sh -c echo oops >&2; exit 3` exited with 3: oops"):
        await run_command("sh", "-c", "echo oops >&2; exit 3", error=Boom)


async def test_allowed_exit_codes() -> None:
    assert await run_command("sh", "-c", "exit 12", error=Boom, ok=(0, 12)) == ""


async def test_missing_program_is_named() -> None:
    with pytest.raises(Boom, match="no-such-program-xyz"):
        await run_command("no-such-program-xyz", error=Boom)
