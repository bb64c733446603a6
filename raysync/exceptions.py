"""Domain exceptions.

Every error raysync raises on purpose derives from :class:`RaySyncError`. Errors about bad
user input also derive from :class:`ValueError`, so ``except ValueError`` keeps working for
callers that do not know about raysync. All exceptions pickle (they cross Ray actors).
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = [
    "CheckpointError",
    "ComputeLimitError",
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


class ComputeLimitError(ConfigError):
    """A valid request whose computation exceeds a limit of raysync (steps or memory).

    The message names the cost, the limit and the value that drives it. Its own class so
    that a command for which that computation is an extra (the theory column of
    ``simulate`` and ``run``) can go on without it and say why.
    """


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
    """A Ray run stopped by Ctrl-C or SIGTERM, with where it can resume.

    A :class:`KeyboardInterrupt`, not a :class:`RaySyncError`: code that stops on Ctrl-C
    keeps stopping. SIGTERM (what ``kill``, ``ray job stop``, Slurm and Kubernetes send
    before they kill a job) is treated as Ctrl-C from Ray's start-up on. A running server
    loop stops after the update it is applying; with ``run.checkpoint_dir`` set it writes
    a checkpoint of that version before the actors are killed.

    Attributes:
        checkpoint_dir: The run's ``run.checkpoint_dir`` (None: checkpointing off).
        checkpoint_version: The model version (updates applied) of the checkpoint written
            at the interruption, or None when none was written (checkpointing off, a second
            Ctrl-C, or the write failed; an earlier periodic checkpoint may still exist).
        version: The model version at which the server loop stopped, or None when it did
            not stop in time (a second Ctrl-C, or the server was not reachable).
        signum: The signal that stopped the run: ``signal.SIGINT`` (Ctrl-C) or
            ``signal.SIGTERM``.
    """

    def __init__(
        self,
        checkpoint_dir: str | None,
        checkpoint_version: int | None,
        *,
        version: int | None = None,
        signum: int = signal.SIGINT,
    ) -> None:
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_version = checkpoint_version
        self.version = checkpoint_version if version is None else version
        self.signum = int(signum)

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only fields: the default (type, args) reduction would drop them
        return (_rebuild_interrupted, (self.checkpoint_dir, self.checkpoint_version,
                                       self.version, self.signum))

    @property
    def signal_name(self) -> str:
        """``"SIGINT"`` or ``"SIGTERM"``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 128 + its number."""
        return 128 + self.signum


def _rebuild_interrupted(
    checkpoint_dir: str | None, checkpoint_version: int | None, version: int | None, signum: int
) -> RunInterrupted:
    return RunInterrupted(checkpoint_dir, checkpoint_version, version=version, signum=signum)
