"""The CLI's exit codes, and how the director client's errors become them."""
from __future__ import annotations

from .client import DirectorBadRequest, DirectorClientError, DirectorConflict, DirectorNotFound, DirectorUnreachable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_PROBLEMS, EXIT_CANCELLED = 4, 5, 6, 7


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def cli_error(e: DirectorClientError) -> CLIError:
    """The message and exit code of a director client error."""
    if isinstance(e, DirectorUnreachable):
        return CLIError(f"{e}. Is the lab up (`docker compose up`)?", EXIT_UNREACHABLE)
    if isinstance(e, DirectorNotFound):
        return CLIError(str(e), EXIT_NOT_FOUND)
    if isinstance(e, DirectorConflict):
        return CLIError(str(e), EXIT_CONFLICT)
    if isinstance(e, DirectorBadRequest):
        return CLIError(str(e), EXIT_USAGE)
    return CLIError(str(e), EXIT_FAILED)
