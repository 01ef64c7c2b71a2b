"""tlf's exceptions: bad input (exit 2) and a step or job that failed (exit 1)."""


class TlfError(Exception):
    """A user-facing error: the message names the file, line or key and what was expected."""


class Failed(TlfError):
    """Input was fine but the work failed (a training step, an sbatch call): exit code 1."""
