"""The typed result of one run, shared by the simulator and the Ray runtime.

A :class:`RunResult` holds what a run measured: the learning curve (test and validation
loss/accuracy at evaluation instants), the per-client task counts, and the steady-state
queueing statistics whose names equal those of
:class:`~raysync.queueing.QueueingResult` where they overlap (``throughput``,
``client_throughput``, ``utilization``, ``mean_queue_length``, ``mean_relative_delay``,
``mean_staleness``), each with a batch-means confidence interval.

Results save to a directory as ``result.json`` (scalars, config echo) plus ``arrays.npz``
(every array) and load back with :meth:`RunResult.load`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "UNITS",
    "RunResult",
    "SimulationResult",
    "batch_ratio_ci",
    "format_fixed",
    "format_interval",
    "format_measured",
]

#: The unit of the quantities of ``result.json`` whose unit is not obvious, and of every
#: quantity it shares with ``theory.json`` (same key, same unit; see
#: :mod:`raysync.simulation.report`).
UNITS: dict[str, str] = {
    "throughput": "task completions per second (the theory's update throughput Lambda)",
    "version_throughput": "model versions per second (= throughput / buffer_size)",
    "mean_relative_delay": "model versions (D = k - v, the staleness a strategy sees)",
    "mean_staleness": "model versions, averaged over completions",
    "mean_completion_delay": "completions between dispatch and completion (docs/theory.md sec. 2)",
    "mean_completion_staleness": "completions, averaged over completions (theory: C - 1)",
    "buffer_size": "completions per model version (FedBuff's B; 1 otherwise)",
    # The names predate FedBuff: both count task completions, not model versions.
    "warmup_updates": "task completions dropped before the measurement window (not versions)",
    "window_updates": "task completions inside the measurement window (not versions)",
}

_JSON_NAME = "result.json"
_NPZ_NAME = "arrays.npz"
_FORMAT_VERSION = 1


def batch_ratio_ci(
    numerators: np.ndarray, denominators: np.ndarray, *, confidence: float
) -> tuple[Any, Any, Any]:
    """Point estimate and confidence interval of a ratio ``sum Y / sum X`` by batch means.

    Each batch ``b`` contributes a numerator ``Y_b`` (e.g. the sum of the delays of the
    tasks consumed in the batch) and a denominator ``X_b`` (e.g. their number, or the
    batch's duration). The estimate is the ratio of totals ``R = sum Y / sum X``; its
    standard error comes from the residuals ``Z_b = Y_b - R X_b`` (the delta method for
    ratio estimators): ``se^2 = sum Z_b^2 / ((B - 1) B mean(X)^2)``, and the interval uses
    Student's t with ``B - 1`` degrees of freedom.

    Args:
        numerators: ``Y_b`` per batch, shape ``(B,)`` or ``(B, k)`` (k ratios at once).
        denominators: ``X_b`` per batch, same shape as ``numerators`` or ``(B,)``.
        confidence: Two-sided confidence level, e.g. ``0.99``.

    Returns:
        ``(estimate, low, high)``, each a float or an array of shape ``(k,)``. The
        interval is NaN when there are fewer than two batches; the estimate is NaN where
        the denominators sum to 0.
    """
    from scipy.special import stdtrit  # scipy.stats takes ~1.5 s to import

    y = np.asarray(numerators, dtype=np.float64)
    x = np.asarray(denominators, dtype=np.float64)
    if x.ndim < y.ndim:
        x = np.broadcast_to(x.reshape(x.shape + (1,) * (y.ndim - x.ndim)), y.shape)
    num_batches = y.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        total_x = x.sum(axis=0)
        estimate = y.sum(axis=0) / total_x
        if num_batches < 2:
            nan = np.full_like(estimate, np.nan)
            return estimate, nan, nan
        residuals = y - estimate * x
        mean_x = total_x / num_batches
        # Squares of residuals near 1e-160 underflow to 0 (a zero-width interval) and near
        # 1e160 overflow: sum the squares of the residuals relative to the largest one.
        scale = np.max(np.abs(residuals), axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        spread = np.sqrt(((residuals / scale) ** 2).sum(axis=0) / ((num_batches - 1) * num_batches))
        se = scale * spread / mean_x
    half = float(stdtrit(num_batches - 1, 0.5 + confidence / 2.0)) * se
    return estimate, estimate - half, estimate + half


#: From this magnitude on, :func:`format_fixed` switches to ``%g``.
_FIXED_LIMIT = 1e5


def format_fixed(value: float, decimals: int = 4) -> str:
    """A table number with ``decimals`` fixed decimals, or ``%.6g`` from ``1e5`` on.

    Fixed point keeps the columns of ordinary values aligned; a value of ``1e300`` (a
    sojourn time at a rate of ``1e-300``) would print as 300 digits, so large magnitudes
    take the general format, at most 12 characters.

    Args:
        value: The number (NaN and infinities print as ``nan``, ``inf``, ``-inf``).
        decimals: Decimals below ``1e5``.

    Returns:
        E.g. ``3.0000``, ``99999.9999``, ``123457``, ``3e+300``.
    """
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if abs(value) < _FIXED_LIMIT:
        return f"{value:.{decimals}f}"
    return f"{value:.6g}"


def format_measured(value: float, spec: str = ".4g") -> str:
    """A measured number for a report: ``format(value, spec)``, or ``n/a`` for NaN.

    NaN is "not measured" (a client with no completion in the window; the run warns
    why), as :func:`format_interval` writes its interval; an infinity is a value (e.g. a
    staleness the theory puts at infinity) and keeps its sign.

    Args:
        value: The number.
        spec: Its format spec, e.g. ``.4g`` or ``.3f``.

    Returns:
        E.g. ``2.451``, ``inf`` or ``n/a``.
    """
    return "n/a" if math.isnan(value) else format(value, spec)


def format_interval(low: float, high: float, digits: int = 4) -> str:
    """A confidence interval for a table: ``[low, high]``, or ``n/a`` when it has none.

    A run too short for the batch-means interval (fewer than 2 batches in the window, or
    a client with no completion in it) has NaN bounds; the run's warning says why.

    Args:
        low: Lower bound.
        high: Upper bound.
        digits: Significant digits of each bound (``%g``).

    Returns:
        E.g. ``[2.31, 2.58]`` or ``n/a``.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{low:.{digits}g}, {high:.{digits}g}]"


def _float(value: float) -> float | str:
    """JSON-safe float (NaN/inf as strings so the file stays strict JSON)."""
    value = float(value)
    if math.isfinite(value):
        return value
    return str(value)


def _unfloat(value: Any) -> float:
    return float(value)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (nested in lists and mappings) as a string."""
    if isinstance(value, float | np.floating):
        return _float(float(value))
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


_NON_FINITE = ("nan", "inf", "-inf")


def _from_json_safe(value: Any) -> Any:
    """The inverse of :func:`_json_safe`: ``"nan"``, ``"inf"``, ``"-inf"`` as floats."""
    if isinstance(value, str) and value in _NON_FINITE:
        return float(value)
    if isinstance(value, Mapping):
        return {k: _from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json_safe(v) for v in value]
    return value


def _config_buffer_size(config: Mapping[str, Any]) -> int:
    """Completions per model version of a config mapping: FedBuff's ``B``, else 1."""
    algorithm = config.get("algorithm") if isinstance(config, Mapping) else None
    if isinstance(algorithm, Mapping) and algorithm.get("name") == "fedbuff":
        size = algorithm.get("buffer_size", 1)
        if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
            return size
    return 1


@dataclass(frozen=True, kw_only=True, eq=False)
class RunResult:
    """What one run measured (simulation on a virtual clock, or Ray for real).

    Steady-state statistics are measured over a window that starts after a warm-up
    (``warmup_updates`` task completions) and is cut into ``num_batches`` batches of
    consecutive completions; intervals are batch-means t-intervals at level ``confidence``. Time is
    virtual seconds for ``backend="simulation"`` and wall-clock seconds for ``"ray"``.

    Attributes:
        backend: ``"simulation"`` or ``"ray"``.
        train: Whether a model was trained (False: queue-only run).
        seed: Root seed of the run.
        num_clients: ``n``.
        concurrency: ``C``, tasks in flight.
        num_updates: Model version at the end (updates applied).
        num_completions: Tasks completed and consumed by the strategy (equals
            ``num_updates`` for the SGD rules; FedBuff buffers ``B`` per update).
        elapsed: Length of the run (virtual or wall-clock seconds).
        wall_time: Real seconds the run took.
        throughput: Task completions per second in the window (the theory's update
            throughput ``Lambda``, counted in completions; model versions per second
            are ``throughput / buffer_size``).
        throughput_ci: ``(low, high)`` interval of ``throughput``.
        client_throughput: Completions per second of each client, shape ``(n,)``.
        utilization: Fraction of time each client was busy, shape ``(n,)``.
        utilization_ci: Intervals, shape ``(n, 2)``.
        mean_queue_length: Time-averaged number of tasks at each client, shape ``(n,)``.
        mean_queue_length_ci: Intervals, shape ``(n, 2)``.
        mean_relative_delay: Mean relative delay ``D = k - v`` of the tasks each client
            returned, **in model versions** (the staleness a strategy sees), shape
            ``(n,)`` (NaN for a client that returned none in the window). Equal to
            :attr:`mean_completion_delay` for the SGD rules; about ``1 / B`` of it for
            FedBuff.
        relative_delay_std: Standard deviation of those delays, shape ``(n,)``.
        relative_delay_ci: Intervals of ``mean_relative_delay``, shape ``(n, 2)``.
        mean_staleness: Mean relative delay over all completions in the window, in model
            versions (theory: ``(C - 1) / B``).
        mean_staleness_ci: ``(low, high)`` interval of ``mean_staleness``.
        mean_completion_delay: Mean relative delay of each client's tasks **in
            completions** (completions between a task's dispatch and its own): the unit
            of docs/theory.md section 2, whose ``E[D_i]`` it estimates. Shape ``(n,)``; NaN
            when the backend did not record it for a buffered run.
        completion_delay_std: Standard deviation of those delays, shape ``(n,)``.
        completion_delay_ci: Intervals of ``mean_completion_delay``, shape ``(n, 2)``.
        mean_completion_staleness: Mean delay in completions over all completions in the
            window (theory: ``sum_i p_i E[D_i] = C - 1``).
        mean_completion_staleness_ci: ``(low, high)`` interval of it.
        buffer_size: Completions per model version ``B`` (FedBuff's buffer size; 1 for
            the rules that apply every result). Derived from ``config`` when not given.
        completed: Tasks each client completed over the whole run, shape ``(n,)``.
        max_relative_delay: Largest delay observed over the whole run (model versions).
        times: Instants of the evaluations (seconds since the start).
        updates: Model version at each evaluation.
        test_loss: Test loss at each evaluation (NaN in queue-only runs).
        test_accuracy: Test accuracy at each evaluation.
        val_loss: Validation loss at each evaluation (NaN without a validation split).
        val_accuracy: Validation accuracy at each evaluation.
        final_test_loss: Test loss of the final model.
        final_test_accuracy: Test accuracy of the final model.
        final_val_loss: Validation loss of the final model.
        final_val_accuracy: Validation accuracy of the final model.
        warmup_updates: Task completions dropped before the measurement window (in
            completions, like ``num_completions``, not model versions: FedBuff makes one
            version per ``B`` of them).
        window_updates: Task completions inside the measurement window (same unit).
        num_batches: Batches the window was cut into (0: too short for intervals).
        confidence: Level of the intervals.
        warnings: One-line messages about the measurement's soundness (e.g. a run too
            short to leave its warm-up); empty when the statistics are sound.
        config: The run's config as a plain mapping (``SystemConfig.to_dict()``).
        extras: Backend-specific JSON-safe details.
    """

    backend: str
    train: bool
    seed: int
    num_clients: int
    concurrency: int
    num_updates: int
    num_completions: int
    elapsed: float
    wall_time: float
    throughput: float
    throughput_ci: tuple[float, float]
    client_throughput: np.ndarray
    utilization: np.ndarray
    utilization_ci: np.ndarray
    mean_queue_length: np.ndarray
    mean_queue_length_ci: np.ndarray
    mean_relative_delay: np.ndarray
    relative_delay_std: np.ndarray
    relative_delay_ci: np.ndarray
    mean_staleness: float
    mean_staleness_ci: tuple[float, float]
    completed: np.ndarray
    max_relative_delay: int
    times: np.ndarray
    updates: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    final_test_loss: float
    final_test_accuracy: float
    final_val_loss: float
    final_val_accuracy: float
    warmup_updates: int
    window_updates: int
    num_batches: int
    confidence: float
    mean_completion_delay: np.ndarray = field(default_factory=lambda: np.zeros(0))
    completion_delay_std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    completion_delay_ci: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    mean_completion_staleness: float = math.nan
    mean_completion_staleness_ci: tuple[float, float] = (math.nan, math.nan)
    buffer_size: int = 0
    warnings: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            object.__setattr__(self, "buffer_size", _config_buffer_size(self.config))
        n = self.num_clients
        nan = np.full(n, np.nan)
        for name, shape in (
            ("mean_completion_delay", (n,)),
            ("completion_delay_std", (n,)),
            ("completion_delay_ci", (n, 2)),
        ):
            if getattr(self, name).size == 0 and n > 0:  # a result written before the field
                object.__setattr__(
                    self,
                    name,
                    np.broadcast_to(nan[:, None], shape).copy() if len(shape) == 2 else nan.copy(),
                )
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))

    @property
    def version_throughput(self) -> float:
        """Model versions per second in the window: ``throughput / buffer_size``."""
        return self.throughput / self.buffer_size

    # ------------------------------------------------------------------ persistence

    def _array_fields(self) -> list[str]:
        return [
            f.name
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping of every field (arrays as nested lists, NaN as ``"nan"``)."""
        out: dict[str, Any] = {"format_version": _FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                if value.dtype.kind == "f":
                    out[f.name] = np.vectorize(_float, otypes=[object])(value).tolist()
                else:
                    out[f.name] = value.tolist()
            elif isinstance(value, float):
                out[f.name] = _float(value)
            elif isinstance(value, tuple):
                out[f.name] = [v if isinstance(v, str) else _float(v) for v in value]
            elif isinstance(value, Mapping):
                # extras hold per-client means that are NaN for a client with no task
                out[f.name] = _json_safe(dict(value))
            else:
                out[f.name] = value
        out["version_throughput"] = _float(self.version_throughput)
        out["units"] = dict(UNITS)
        return out

    def to_json(self, path: str | Path) -> None:
        """Write every field as one JSON file (arrays as lists)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    def save(self, directory: str | Path) -> Path:
        """Save to ``directory``: ``result.json`` (scalars, config) and ``arrays.npz``.

        Returns:
            The directory (created if missing).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in self._array_fields()}
        scalars = {k: v for k, v in self.to_dict().items() if k not in arrays}
        (directory / _JSON_NAME).write_text(json.dumps(scalars, indent=2))
        np.savez_compressed(directory / _NPZ_NAME, **arrays)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> RunResult:
        """Load a result written by :meth:`save`.

        Raises:
            FileNotFoundError: ``result.json`` or ``arrays.npz`` is missing.
        """
        directory = Path(directory)
        data = json.loads((directory / _JSON_NAME).read_text())
        data.pop("format_version", None)
        with np.load(directory / _NPZ_NAME) as npz:
            arrays = {name: npz[name] for name in npz.files}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in arrays:
                values[f.name] = arrays[f.name]
            elif f.name in data:
                raw = data[f.name]
                if f.type in ("float", float):
                    raw = _unfloat(raw)
                elif f.type in ("tuple[float, float]",):
                    raw = tuple(_unfloat(v) for v in raw)
                elif f.type in ("tuple[str, ...]",):
                    raw = tuple(str(v) for v in raw)
                elif f.name == "extras":
                    raw = _from_json_safe(raw)
                values[f.name] = raw
        return cls(**values)

    # ------------------------------------------------------------------ display

    def summary(self) -> str:
        """Human-readable multi-line summary (every delay labelled with its unit)."""
        unit = "virtual s" if self.backend == "simulation" else "s"
        b = self.buffer_size
        runs = (
            f"{self.num_updates} updates"
            if b == 1
            else f"{self.num_updates} model versions ({self.num_completions} completions, "
            f"B={b} per version)"
        )
        lines = [
            f"{self.backend} run: n={self.num_clients} clients, C={self.concurrency}, "
            f"{runs} in {self.elapsed:.4g} {unit} ({self.wall_time:.3g} s wall)",
        ]
        lines.extend(f"WARNING: {w}" for w in self.warnings)
        if self.train:
            lines.append(
                f"final test accuracy {format_fixed(self.final_test_accuracy)}, "
                f"test loss {format_fixed(self.final_test_loss)}"
            )
        lo, hi = self.throughput_ci
        per = "updates" if b == 1 else "completions"
        line = (
            f"throughput {self.throughput:.5g} {per}/s "
            f"({100 * self.confidence:.0f}% CI {format_interval(lo, hi, 5)})"
        )
        if b > 1:
            line += f" = {self.version_throughput:.5g} model versions/s"
        lines.append(line)
        if b == 1:
            lines.append(f"mean staleness {self.mean_staleness:.4g} updates")
        else:
            in_completions = (
                f"{self.mean_completion_staleness:.4g} completions"
                if math.isfinite(self.mean_completion_staleness)
                else "n/a completions (not recorded by this backend)"
            )
            lines.append(
                f"mean staleness {in_completions} = {self.mean_staleness:.4g} model versions"
            )
        head = "delay (CI)" if b == 1 else "delay in versions (CI)  in completions"
        lines.append(f"client  completed  throughput  utilization  queue_len  {head}")
        for i in range(self.num_clients):
            dlo, dhi = self.relative_delay_ci[i]
            row = (
                f"{i:>6}  {int(self.completed[i]):>9}  {self.client_throughput[i]:>10.4g}  "
                f"{self.utilization[i]:>11.4f}  {self.mean_queue_length[i]:>9.4g}  "
                f"{self.mean_relative_delay[i]:.4g} {format_interval(dlo, dhi)}"
            )
            if b > 1:
                row += f"  {self.mean_completion_delay[i]:.4g}"
            lines.append(row)
        return "\n".join(lines)


#: Alias: the simulator's name for the shared result type.
SimulationResult = RunResult
