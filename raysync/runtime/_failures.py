"""Failure policy of the runtime: what a Ray error means, and what to do with an executor.

One place decides

* what a Ray error *is* (:func:`classify`): a lost task (the executor died, is
  unreachable, or was restarted without its data: re-issue it) or a failed one (the
  client's computation raised: end the run);
* what the user is told (:func:`translate`): every Ray error met by the driver or the
  server becomes one :class:`~raysync.exceptions.RaySyncError` line naming the cause and
  the fix (the coordinator and the server actor both call it);
* how an executor's health evolves (:class:`ExecutorHealth`): *healthy*; *suspect* after
  a lost task (picked last, probed until it answers, then healthy again: back in
  rotation); *dead* when Ray will not restart it (its ``runtime.max_restarts`` are used
  up: never picked again). Tasks that no healthy executor can take wait ("parked") for
  their executor's probe, however long a restart takes. Restarts are counted from Ray's
  actor table, so every restart counts, noticed or not, and none is counted without one;
- and the one line a run ends with when a client has no executor left
  (:func:`out_of_restarts`).

This is the runtime's counterpart of Ray Train v2's failure policy: the loop reports
events here and acts on the decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import ray

from raysync import _validation
from raysync.config import SystemConfig
from raysync.exceptions import RaySyncError, RuntimeFailure
from raysync.runtime._backend import ExecutorNotReady

__all__ = ["ExecutorHealth", "classify", "out_of_restarts", "translate"]

logger = logging.getLogger(__name__)


def classify(exc: BaseException) -> Literal["lost", "failed"]:
    """Whether a task's error loses the task (re-issue it) or fails the run.

    ``RayActorError`` (``ActorDiedError``, ``ActorUnavailableError``) and a restarted
    executor's :class:`~raysync.runtime._backend.ExecutorNotReady` lose the task; any
    other error (the client's computation raised) fails it.
    """
    if isinstance(exc, ray.exceptions.RayActorError):
        return "lost"
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(
        getattr(exc, "cause", None), ExecutorNotReady
    ):
        return "lost"
    return "failed"


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (Ray errors carry long tracebacks)."""
    return _validation.first_line(exc) or "no reason given"


def translate(
    exc: BaseException,
    what: str,
    *,
    who: str | None = None,
    task_id: int | None = None,
) -> RaySyncError:
    """Translate a Ray error into a one-line domain error naming cause and fix.

    Args:
        exc: The error.
        what: What was being done (``"starting the executor actors"``, ...).
        who: The logical client whose task failed (with ``task_id``), if any.
        task_id: The task that failed.

    Returns:
        The client's own domain error (re-raised with its name and task), or a
        :class:`~raysync.exceptions.RuntimeFailure`.
    """
    cause = getattr(exc, "cause", None)
    if who is not None:
        if isinstance(exc, ray.exceptions.RayTaskError):
            if isinstance(cause, RaySyncError):
                return type(cause)(f"{who} failed on task {task_id}: {cause}")
            return RuntimeFailure(
                f"{who} raised {type(cause or exc).__name__} on task {task_id}: "
                f"{cause or exc}. Fix the client's data or model configuration; the "
                "client's traceback is in the Ray worker logs"
            )
        return RuntimeFailure(
            f"{who} failed on task {task_id}: {type(exc).__name__}: {exc}. "
            "See the Ray logs for the cause and run again"
        )
    if isinstance(exc, ray.exceptions.RayTaskError):
        if isinstance(cause, RaySyncError):
            return type(cause)(str(cause))
        return RuntimeFailure(
            f"{what} failed with {type(cause or exc).__name__}: {cause or exc}. "
            "See the Ray worker logs for the traceback"
        )
    if isinstance(exc, ray.exceptions.RayActorError):
        return RuntimeFailure(
            f"an actor died while {what} ({type(exc).__name__}: {first_line(exc)}). Check "
            "the node's memory and logs (`ray status`, `ray logs`) and run again"
        )
    return RuntimeFailure(f"{what} failed: {type(exc).__name__}: {exc}")


def out_of_restarts(
    config: SystemConfig, who: str, *, restarts: int, version: int, plural: bool = False
) -> RuntimeFailure:
    """The one line ending a run whose client has no live executor left.

    Args:
        config: The run's config (``runtime.max_restarts``, ``run.checkpoint_dir``).
        who: The executor(s) that died, e.g. ``"client 3's executor"``.
        restarts: Restarts Ray made in this run (and the runs it resumes).
        version: The model version reached.
        plural: ``who`` names several executors.
    """
    ckpt = config.run.checkpoint_dir
    resume = (
        f"then resume from the last checkpoint (raysync run CONFIG --resume {ckpt})"
        if ckpt
        else "then run again (set run.checkpoint_every_updates and run.checkpoint_dir "
        "to be able to resume)"
    )
    return RuntimeFailure(
        f"{who} died and Ray will not restart {'them' if plural else 'it'}: "
        "runtime.max_restarts = "
        f"{config.runtime.max_restarts} restarts per executor are used up ({restarts} "
        f"restarts in this run, at version {version}). Find out why the executors die "
        "(`ray status`, `ray logs`: memory, a crash in the client), raise "
        f"runtime.max_restarts if the faults are expected, {resume}"
    )


class ExecutorHealth:
    """Health of the executor actors: suspect, probed, back in rotation, or dead.

    Args:
        executors: The executor actor handles.
        actor_ids: Ray actor id of each (reads restart counts and states; may be empty).
        pids: Process id of each at start-up (fallback restart count).
        dataset: What ``prepare`` hands a restarted executor (its training data).
        on_back: Called with an executor that answers again (after its parked tasks
            were handed back by :meth:`take_parked`).
        on_dead: Called with an executor Ray will not restart.
    """

    def __init__(
        self,
        executors: Sequence[Any],
        actor_ids: Sequence[str],
        pids: Sequence[int],
        dataset: Any,
        *,
        on_back: Callable[[int], None],
        on_dead: Callable[[int], None],
    ) -> None:
        k = len(executors)
        self._executors = list(executors)
        self._actor_ids = list(actor_ids)
        self._pids = list(pids) or [0] * k
        self._dataset = dataset
        self._on_back = on_back
        self._on_dead = on_dead
        self.suspect = [False] * k
        self.dead = [False] * k
        self._parked: dict[int, list[Any]] = {}
        self._probes: dict[int, asyncio.Future[None]] = {}
        self._observed = 0
        self.restarts_before = 0  # restarts of the runs this one resumes
        self.stopped = False

    def healthy(self, executor: int) -> bool:
        """Neither suspect nor dead."""
        return not self.suspect[executor] and not self.dead[executor]

    def answered(self, executor: int) -> None:
        """A task came back from ``executor``: it is alive."""
        self.suspect[executor] = False

    def lost(self, executor: int, exc: BaseException) -> bool:
        """``executor`` lost a task: suspect it and probe it. True when newly suspect."""
        if isinstance(getattr(exc, "cause", None), ExecutorNotReady):
            # Restarted without its data (calls to one actor run in order: this first).
            self._executors[executor].prepare.remote(self._dataset)
        if self.suspect[executor]:
            return False
        self.suspect[executor] = True
        self._start_probe(executor)
        return True

    def park(self, executor: int, task: Any) -> None:
        """Hold ``task`` until ``executor`` answers its probe or is declared dead."""
        self._parked.setdefault(executor, []).append(task)

    def take_parked(self, executor: int) -> list[Any]:
        """The tasks parked on ``executor`` (removed)."""
        return self._parked.pop(executor, [])

    def _start_probe(self, executor: int) -> None:
        if executor in self._probes or self.dead[executor]:
            return
        probe = asyncio.ensure_future(self._probe(executor))
        self._probes[executor] = probe
        probe.add_done_callback(lambda _: self._probes.pop(executor, None))

    async def _probe(self, executor: int) -> None:
        # ``prepare`` is cheap on a live executor and hands a restarted one its data.
        delay = 0.05
        while not self.stopped:
            try:
                info = await self._executors[executor].prepare.remote(self._dataset)
            except asyncio.CancelledError:
                raise
            except ray.exceptions.RayActorError as exc:
                if self._gone_for_good(executor, exc):
                    self.dead[executor] = True
                    logger.warning(
                        "executor %d is gone for good (its restarts are used up): %s",
                        executor,
                        type(exc).__name__,
                    )
                    self._on_dead(executor)
                    return
            except Exception as exc:  # prepare itself failed: keep it out, say why
                logger.warning("executor %d failed its health probe: %s", executor, exc)
            else:
                pid = int(info["pid"])
                if pid != self._pids[executor]:
                    self._observed += 1
                    self._pids[executor] = pid
                self.suspect[executor] = False
                logger.info("executor %d answers again (pid %d): back in rotation", executor, pid)
                self._on_back(executor)
                return
            await asyncio.sleep(delay)
            delay = min(2.0, 2 * delay)

    def _actor_table(self) -> dict[str, dict[str, Any]] | None:
        """Ray's record of each executor actor (None when it cannot be read)."""
        if len(self._actor_ids) != len(self._executors):
            return None
        try:
            # The public state API (ray.util.state) needs the dashboard, which local
            # runs do not start; the GCS accessor behind it does not.
            from ray._private import state as gcs_state

            return {a: dict(gcs_state.actors(actor_id=a)) for a in self._actor_ids}
        except Exception:
            logger.debug("cannot read the actor table", exc_info=True)
            return None

    def _gone_for_good(self, executor: int, exc: BaseException) -> bool:
        table = self._actor_table()
        if table is not None:
            return table[self._actor_ids[executor]].get("State") == "DEAD"
        return isinstance(exc, ray.exceptions.ActorDiedError)

    def restart_count(self) -> int:
        """Restarts Ray made, in this run and the runs it resumes."""
        table = self._actor_table()
        if table is None:  # fall back on the restarts the probes saw
            return self.restarts_before + self._observed
        return self.restarts_before + sum(int(a.get("NumRestarts", 0)) for a in table.values())

    def probes(self) -> list[asyncio.Future[None]]:
        """The probes in progress (to cancel at the end of the run)."""
        return list(self._probes.values())
