"""One exception type for every bad input tlf refuses; the CLI turns it into exit code 2."""


class TlfError(Exception):
    """A user-facing error: the message names the file, line or key and what was expected."""
