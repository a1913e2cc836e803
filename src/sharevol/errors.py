"""The one exception tree of sharevol.

Every class names its CSI meaning; one gRPC interceptor (sharevol.csi.interceptor) maps
them to status codes, so storage code raises and never thinks about gRPC. Anything that
is not a SharevolError reaching the interceptor is a bug and becomes INTERNAL.

    SharevolError
    ├── InvalidArgument        INVALID_ARGUMENT     bad request field or parameter
    ├── NotFound               NOT_FOUND            volume, snapshot, pool or node unknown
    ├── AlreadyExists          ALREADY_EXISTS       same name/target, incompatible request
    ├── FailedPrecondition     FAILED_PRECONDITION  state forbids it now (in use, published)
    ├── Aborted                ABORTED              another operation holds the key; retry
    ├── OutOfRange             OUT_OF_RANGE         size not allowed (shrink, too small)
    ├── ResourceExhausted      RESOURCE_EXHAUSTED   pool cannot fit the volume
    ├── Unimplemented          UNIMPLEMENTED        not supported by this pool or mode
    └── Internal               INTERNAL             the system failed (command, ioctl, disk)
        └── CommandFailed                           an external command failed or timed out
"""

from __future__ import annotations


class SharevolError(Exception):
    """Base of every error sharevol raises on purpose; the message is for humans."""


class InvalidArgument(SharevolError):
    """A request field or parameter is missing or wrong; nothing was changed."""


class NotFound(SharevolError):
    """The named volume, snapshot, pool or node does not exist."""


class AlreadyExists(SharevolError):
    """Something with that name or target exists and is incompatible with the request."""


class FailedPrecondition(SharevolError):
    """The object exists but its state forbids the operation (for example, in use)."""


class Aborted(SharevolError):
    """Another operation on the same volume or snapshot is in progress; retry later."""


class OutOfRange(SharevolError):
    """The requested size is not allowed (smaller than the source, shrink, beyond maximum)."""


class ResourceExhausted(SharevolError):
    """The pool cannot fit the request."""


class Unimplemented(SharevolError):
    """The operation is not supported here (pool kind, server mode)."""


class Internal(SharevolError):
    """The system failed underneath a valid request."""


class CommandFailed(Internal):
    """An external command exited non-zero or ran past its timeout."""

    def __init__(
        self, argv: list[str], returncode: int | None, stderr: str, timed_out: bool = False
    ) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited {returncode}"
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(f"{argv[0]} {what}: {detail}")
