"""Domain exceptions.

Every error raysync raises on purpose derives from :class:`RaySyncError`. Errors about bad
user input also derive from :class:`ValueError`, so ``except ValueError`` keeps working for
callers that do not know about raysync. All exceptions pickle (they cross Ray actors).
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "RaySyncError",
    "ResourceUnavailableError",
    "RunInterrupted",
    "RuntimeFailure",
]


class RaySyncError(Exception):
    """Root of every exception raysync raises on purpose."""


class ConfigError(RaySyncError, ValueError):
    """A configuration value breaks a rule; the message names the field, rule and value."""


class DataError(RaySyncError, ValueError):
    """A dataset could not be found or read, or has the wrong shape."""


class DivergenceError(DataError):
    """Training diverged: a loss, a gradient or the model's parameters became NaN or infinite.

    A :class:`DataError` (the same one line, the same exit code); its own class so that a
    search over designs (``raysync recommend``) can score a diverging candidate as failed
    instead of stopping on it.
    """


#: The fix a divergence message names: the config fields of the steps (the server's too).
LOWER_THE_STEP = "lower algorithm.lr (and algorithm.server_lr with fedbuff)"


class ResourceUnavailableError(RaySyncError):
    """The cluster can never satisfy a client's resource request."""


class RuntimeFailure(RaySyncError):
    """A distributed run failed; the message names the cause and the fix."""


class CheckpointError(RaySyncError, ValueError):
    """A checkpoint is missing, corrupt or does not match the run it should resume."""


class RunInterrupted(KeyboardInterrupt):
    """A Ray run stopped by Ctrl-C (``KeyboardInterrupt``), with where it can resume.

    A :class:`KeyboardInterrupt`, not a :class:`RaySyncError`: code that stops on Ctrl-C
    keeps stopping. With ``run.checkpoint_dir`` set, the server stops after the update it
    is applying and writes a checkpoint of that version before the actors are killed.

    Attributes:
        checkpoint_dir: The run's ``run.checkpoint_dir`` (None: checkpointing off).
        checkpoint_version: The model version (updates applied) of the checkpoint written
            at the interruption, or None when none was written (checkpointing off, a second
            Ctrl-C, or the write failed; an earlier periodic checkpoint may still exist).
    """

    def __init__(self, checkpoint_dir: str | None, checkpoint_version: int | None) -> None:
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_version = checkpoint_version
