"""A :class:`~raysync.monitoring.MetricsSink` that writes TensorBoard event files.

One :class:`TensorBoardSink` is one run: it owns one
``torch.utils.tensorboard.SummaryWriter`` writing into ``logdir/run_name`` (one event-file
directory per run). Scalars keep the tags the engines send (stable names such as
``train/loss``, ``test/accuracy``, ``system/throughput``, ``staleness/client_<i>``,
``queue/client_<i>``, ``theory/throughput``) with the model version as the step.
Staleness tags say their unit: ``staleness/...`` and ``theory/staleness_...`` count model
versions, ``staleness_completions/...`` and ``theory/staleness_completions_...`` count
completions (the theory's unit); the two differ only for FedBuff's buffered updates.

Wall-clock axis: TensorBoard scalars have a single step axis, so the tags listed in
``time_tags`` (by default ``train/loss``, ``test/loss`` and ``test/accuracy``) are also
written as ``<tag>_vs_time`` with step ``round(1000 * time)``, i.e. **milliseconds since the
start of the run** (virtual milliseconds for the simulator). In addition every event's
``walltime`` is ``start + time``, so TensorBoard's "Relative" horizontal axis shows seconds
since the start for any tag.

:func:`run_hparams`, :func:`summary_scalars` and :func:`theory_scalars` build what a
backend logs at the end of a run (and the theory next to the measurements); both the Ray
runtime and the simulator can use them with any sink.
"""

from __future__ import annotations

import math
import re
import time as _time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raysync.config import SystemConfig
    from raysync.simulation.result import RunResult

__all__ = [
    "DEFAULT_TIME_TAGS",
    "TensorBoardSink",
    "default_run_name",
    "drop_events_after",
    "run_hparams",
    "summary_scalars",
    "theory_scalars",
]

#: Tags also written against wall-clock milliseconds as ``<tag>_vs_time``.
#: The adaptive router's throughput pair is plotted against time too (docs/adaptive.md).
DEFAULT_TIME_TAGS: tuple[str, ...] = (
    "train/loss", "test/loss", "test/accuracy",
    "routing/predicted_throughput", "routing/measured_throughput",
)  # fmt: skip

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.=+-]+")


#: Name of the file a resumed run's earlier events are rewritten to: its ``0000000000``
#: stamp sorts before every file a writer creates (``events.out.tfevents.<10-digit unix
#: time>.<host>.<pid>.<counter>``), and TensorBoard reads a run's files in name order.
RESUMED_EVENTS = "events.out.tfevents.0000000000.resumed"

_EVENT_NAME = re.compile(r"tfevents\.(\d+)\.(.*)\.(\d+)\.(\d+)(.*)$")


def _creation_order(path: Path) -> tuple[Any, ...]:
    """Sort key of an event file: its stamp, then pid and counter as numbers.

    Names compare as text, so two files of one second and process sort wrongly when
    the writer counter passes a power of ten (``...pid.10`` before ``...pid.9``).
    """
    if path.name == RESUMED_EVENTS:
        return (-math.inf,)  # the earlier sessions' events, merged at the last resume
    match = _EVENT_NAME.search(path.name)
    if match is None:
        return (math.inf, path.name)
    stamp, host, pid, counter, rest = match.groups()
    return (int(stamp), host, int(pid), int(counter), rest)


def _cut(tag: str, step: int, millis: int) -> int:
    """The first step of ``tag`` a resume drops (its values at ``step >=`` it go)."""
    if tag.startswith(("hparam/", "_hparams_/")):
        return -1  # the run's end (hyper-parameters, final metrics): the resumed run's own
    return millis if tag.endswith("_vs_time") else step


def drop_events_after(
    directory: str | Path, step: int, millis: int, *, consolidate: bool = False
) -> int:
    """Remove from a run's event files every scalar logged at or after a resume point.

    The event files directly in ``directory`` are read in creation order (the stamp,
    pid and counter in their names) and rewritten as one file, :data:`RESUMED_EVENTS`,
    keeping every event but the summary values with ``step >= step`` (``<tag>_vs_time``
    values: ``step >= millis``, their steps being milliseconds) and the run's end
    (``hparam/*`` metrics and the hyper-parameters, which the resumed run logs at its
    end: a finished run extended would show both); the file is replaced
    atomically, then the other old files are removed. Its name sorts before the files a
    writer creates, so TensorBoard reads the resumed session's events after these.

    Args:
        directory: The run's event-file directory.
        step: The resume point's model version.
        millis: The resume point's time in milliseconds since the start of the run.
        consolidate: Rewrite even when nothing is removed (unless the directory holds
            :data:`RESUMED_EVENTS` alone), so that a writer's next file sorts after.

    Returns:
        The number of summary values removed (0: without ``consolidate`` the files are
        left untouched).
    """
    import os

    # The raw loader: EventFileLoader migrates scalars to tensors as it reads, and those
    # written back would leave TensorBoard's scalar readers.
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    root = Path(directory)
    files = sorted(
        (p for p in root.iterdir() if p.is_file() and "tfevents" in p.name),
        key=_creation_order,
    )
    if not files:
        return 0
    kept: list[Any] = []
    removed = 0
    for path in files:
        for record in RawEventFileLoader(str(path)).Load():
            event = Event.FromString(record)
            if event.HasField("file_version") and kept:
                continue  # one header, the first file's
            if event.HasField("summary"):
                limit = [_cut(v.tag, step, millis) for v in event.summary.value]
                values = [v for v, cut in zip(event.summary.value, limit, strict=True)
                          if event.step < cut]
                removed += len(event.summary.value) - len(values)
                if not values:
                    continue
                del event.summary.value[:]
                event.summary.value.extend(values)
            kept.append(event)
    in_order = [p.name for p in files] == [RESUMED_EVENTS]
    if removed == 0 and (not consolidate or in_order):
        return 0
    partial = root / f".rewrite-{os.getpid()}.tmp"  # no "tfevents": TensorBoard skips it
    with open(partial, "wb") as handle:
        writer = RecordWriter(handle)
        for event in kept:
            writer.write(event.SerializeToString())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, root / RESUMED_EVENTS)
    for path in files:
        if path.name != RESUMED_EVENTS:
            path.unlink()
    return removed


def default_run_name(config: SystemConfig | None = None) -> str:
    """A run directory name: timestamp, algorithm and concurrency (e.g. ``...-fedasync-C6``)."""
    stamp = _time.strftime("%Y%m%d-%H%M%S")
    if config is None:
        return stamp
    return f"{stamp}-{config.algorithm.name}-C{config.concurrency}"


class TensorBoardSink:
    """Write a run's scalars and hyper-parameters as TensorBoard event files.

    Args:
        logdir: Parent directory; the events go to ``logdir/run_name``.
        run_name: Sub-directory of this run (a timestamp when None). Characters outside
            ``[A-Za-z0-9_.=+-]`` are replaced by ``_``; an existing directory gets a
            numeric suffix, so two runs never share event files.
        time_tags: Tags also written as ``<tag>_vs_time`` against milliseconds.
        flush_secs: How often the writer flushes to disk.
        append: Write into ``logdir/run_name`` even if it exists (a resumed run
            continuing its own event files; steps go on from the checkpoint's version).
        resume_at: With ``append``: ``(version, seconds)`` of the checkpoint the run
            resumes from. What the interrupted session logged after it (steps ``>=
            version``, and ``<tag>_vs_time`` points at or after ``seconds``) is removed
            from the existing event files first: the resumed run logs that stretch again,
            and TensorBoard would draw both (a curve going back, steps twice).
            TensorBoard's own ``purge_step`` cannot do this: it drops every tag's steps
            beyond one number, and the time tags count milliseconds.

    Example:
        >>> sink = TensorBoardSink("runs", run_name="demo")  # doctest: +SKIP
        >>> sink.log_scalars(10, {"test/accuracy": 0.9}, time=1.5)  # doctest: +SKIP
        >>> sink.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        logdir: str | Path,
        *,
        run_name: str | None = None,
        time_tags: Iterable[str] = DEFAULT_TIME_TAGS,
        flush_secs: int = 10,
        append: bool = False,
        resume_at: tuple[int, float] | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        name = _SAFE_NAME.sub("_", run_name or default_run_name()).strip("_") or "run"
        root = Path(logdir)
        directory = root / name
        suffix = 1
        while directory.exists() and not append:
            suffix += 1
            directory = root / f"{name}-{suffix}"
        directory.mkdir(parents=True, exist_ok=append)
        self._log_dir = directory
        if append and resume_at is not None:
            version, seconds = resume_at
            drop_events_after(
                directory, int(version), int(round(1000.0 * float(seconds))), consolidate=True
            )
        self._time_tags = frozenset(time_tags)
        self._start = _time.time()
        self._writer: Any = SummaryWriter(log_dir=str(directory), flush_secs=flush_secs)
        self._closed = False

    @property
    def log_dir(self) -> Path:
        """The run's event-file directory (``logdir/run_name``)."""
        return self._log_dir

    def log_scalars(self, step: int, scalars: Mapping[str, float], *, time: float) -> None:
        """Write ``scalars`` at ``step``; non-finite values (NaN) are skipped.

        Args:
            step: The model version.
            scalars: Tag to value.
            time: Seconds since the start of the run (virtual in the simulator).
        """
        if self._closed:
            raise RuntimeError(f"TensorBoardSink for {self._log_dir} is closed")
        walltime = self._start + float(time)
        millis = int(round(1000.0 * float(time)))
        for tag, value in scalars.items():
            value = float(value)
            if not math.isfinite(value):
                continue
            self._writer.add_scalar(tag, value, global_step=int(step), walltime=walltime)
            if tag in self._time_tags:
                self._writer.add_scalar(
                    f"{tag}_vs_time", value, global_step=millis, walltime=walltime
                )

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record the run's hyper-parameters with its final metrics (same directory).

        Values that are not numbers, strings or booleans are written as strings; metrics
        are also written as scalars under their own tags (the hparams dashboard reads
        them there), non-finite metrics are dropped.
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean: dict[str, Any] = {}
        for key, value in hparams.items():
            if isinstance(value, bool | int | float | str):
                clean[key] = value
            else:
                clean[key] = str(value)
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        exp, ssi, sei = hparams_summary(clean, finite)
        file_writer = self._writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for key, value in finite.items():
            self._writer.add_scalar(key, value)

    def flush(self) -> None:
        """Write pending events to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the writer (idempotent)."""
        if not self._closed:
            self._writer.close()
            self._closed = True

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorBoardSink(log_dir={str(self._log_dir)!r})"


def _entropy(p: Iterable[float]) -> float:
    return -math.fsum(v * math.log(v) for v in p if v > 0)


def run_hparams(config: SystemConfig) -> dict[str, Any]:
    """The hyper-parameters of a run, flat, for ``log_hparams``.

    ``concurrency`` (``C``), ``num_clients``, ``algorithm``, ``lr``, ``batch_size``,
    ``routing``, a summary of ``p`` (``p_min``, ``p_max``, ``p_entropy`` in nats and
    ``p_entropy_ratio = entropy / log n``, 1 for uniform), ``time_scale`` and ``seed``.
    """
    p = config.routing_probabilities
    n = config.num_clients
    out: dict[str, Any] = {
        "concurrency": config.concurrency,
        "num_clients": n,
        "algorithm": config.algorithm.name,
        "lr": config.algorithm.lr,
        "batch_size": config.algorithm.batch_size,
        "routing": config.routing.kind,
        "time_scale": config.run.time_scale,
        "seed": config.seed,
    }
    if p is not None:
        entropy = _entropy(p)
        out.update(
            p_min=min(p),
            p_max=max(p),
            p_entropy=entropy,
            p_entropy_ratio=entropy / math.log(n) if n > 1 else 1.0,
        )
    return out


def summary_scalars(result: RunResult) -> dict[str, float]:
    """The end-of-run measurements of a result, under the live tags.

    Units: ``system/throughput`` is task completions per second of the result's clock
    (the theory's ``Lambda``); ``system/mean_staleness``, ``staleness/mean`` and
    ``staleness/client_<i>`` are relative delays in **model versions** (what the live
    runtime tags and the strategies use); ``staleness_completions/mean`` and
    ``staleness_completions/client_<i>`` are the same delays in **completions** (the
    theory's unit; logged when measured). They differ only for buffered updates
    (FedBuff, ``B`` completions per version), where ``system/version_throughput`` is
    also logged. Per client also ``queue/client_<i>`` and
    ``system/utilization_client_<i>``.
    """
    out = {
        "system/throughput": float(result.throughput),
        "system/mean_staleness": float(result.mean_staleness),
        "staleness/mean": float(result.mean_staleness),
    }
    if result.buffer_size > 1:
        out["system/version_throughput"] = float(result.version_throughput)
    if math.isfinite(result.mean_completion_staleness):
        out["staleness_completions/mean"] = float(result.mean_completion_staleness)
    for i in range(result.num_clients):
        out[f"staleness/client_{i}"] = float(result.mean_relative_delay[i])
        if math.isfinite(result.mean_completion_staleness):
            out[f"staleness_completions/client_{i}"] = float(result.mean_completion_delay[i])
        out[f"queue/client_{i}"] = float(result.mean_queue_length[i])
        out[f"system/utilization_client_{i}"] = float(result.utilization[i])
    return out


def theory_scalars(config: SystemConfig, *, time_unit: float = 1.0) -> dict[str, float]:
    """Closed-form predictions (docs/theory.md section 2) next to the measured tags, same units.

    Args:
        config: The run's config (random routing: closed Jackson network; return to
            sender: independent cycles).
        time_unit: Seconds of the sink's clock per config second (the runtime's
            ``time_scale``); throughputs are divided by it.

    Returns:
        ``theory/throughput`` (completions per second), ``theory/staleness_mean`` and per
        client ``theory/staleness_client_<i>`` in **model versions** (as
        ``staleness/...``), ``theory/staleness_completions_mean`` and
        ``theory/staleness_completions_client_<i>`` in **completions** (as
        ``staleness_completions/...``), ``theory/version_throughput`` for buffered
        updates, and ``theory/queue_client_<i>``; empty when ``time_unit <= 0`` (no
        emulated clock, so no time scale to compare with).
    """
    if time_unit <= 0:
        return {}
    from raysync.queueing import predict

    theory = predict(config)
    out = {
        "theory/throughput": float(theory.throughput) / time_unit,
        "theory/staleness_mean": float(theory.mean_version_staleness),
        "theory/staleness_completions_mean": float(theory.mean_staleness),
    }
    if theory.buffer_size > 1:
        out["theory/version_throughput"] = float(theory.version_throughput) / time_unit
    version_delay = theory.mean_version_delay
    for i in range(config.num_clients):
        out[f"theory/staleness_client_{i}"] = float(version_delay[i])
        out[f"theory/staleness_completions_client_{i}"] = float(theory.mean_relative_delay[i])
        out[f"theory/queue_client_{i}"] = float(theory.mean_queue_length[i])
    return out
