"""One family of operator-facing failures, each with a message and an exit code.

Exit codes: 0 ok, 1 operation failed, 2 usage or configuration error, 3 daemon not running.
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3


class ConsoleError(Exception):
    """A failure an operator sees: the message is printed, never a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class OperationFailed(ConsoleError):
    exit_code = EXIT_FAILED


class WriteFailed(OperationFailed, OSError):
    """A file could not be written (a full disk, a read-only file system): said to the operator in words
    ("no space left on /dev/sda1 (mounted on /var) writing /var/lib/sop-console/store.json"), and still an
    OSError with its errno for code that handles failed I/O as such. Nothing was half-written."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None) -> None:
        OperationFailed.__init__(self, message)
        self.errno = errno
        self.strerror = message
        self.filename = filename


class UsageError(ConsoleError):
    exit_code = EXIT_USAGE


class ConfigError(ConsoleError):
    """A configuration that does not validate; `problems` holds one line per problem."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DaemonNotRunning(ConsoleError):
    exit_code = EXIT_NO_DAEMON


def os_reason(exc: BaseException) -> str:
    """One plain reason: 'Address already in use', not asyncio's 'error while attempting to bind on address
    (...): ...'; 'timed out' for a timeout that says nothing; else the exception's own message."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return str(exc) or type(exc).__name__
