"""The project's user errors: one base class, which the ``iqp`` command prints in one line (exit code 2).

Anything else that escapes a command is a bug and keeps its traceback. Each typed error also derives from the
built-in exception it refines, so ``except ValueError`` (or ``KeyError``, ``FileNotFoundError``) still catches it.
"""


class IQPError(Exception):
    """A user error: a bad option, input, file or checkpoint; its message names the thing and the fix."""


class InvalidInputError(IQPError, ValueError):
    """An option value, YAML key, argument or input that cannot be used."""


class CheckpointError(IQPError, ValueError):
    """A checkpoint that cannot be read or does not fit the host; ``reason``: the cause, without the file name."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class UnreadableState(IQPError, ValueError):
    """A training state file that cannot be loaded; ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"Resume state {path} is unreadable ({reason}). Pass another path:resume_state, "
                         "or delete it and use --auto_resume.")
        self.path, self.reason = path, reason


class UnknownTypeError(IQPError, KeyError):
    """A ``type`` in an option dict or YAML that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingWeightsError(IQPError, FileNotFoundError):
    """A metric needs a parameter file that is not on this machine."""
