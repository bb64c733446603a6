"""Resuming a study: which problem it belongs to, and what happens to interrupted trials.

**A study is bound to its problem.** On creation the study stores a fingerprint of the
problem it optimises (:func:`problem_fingerprint`) in its user attribute ``problem``: the
fleet (every client's service time), the objective (with the bound's constants and step, or
the number of evaluations of a measured trial), the time budget, the search space, and for
measured objectives the data, the model and the training set-up (algorithm, seed, run
options other than those a trial sets itself). Resuming with anything else is refused in
one line naming what changed (:func:`bind_study`), since the old trials' values would not
be comparable with the new ones. Keys absent on one side (written by another raysync
version) are not differences.

**Interrupted trials** (:func:`recover_stale_trials`). A trial is *interrupted* when the
driver that asked for it was killed: it is ``RUNNING`` and its recorded driver (user
attribute ``driver``: host, pid, process start time) is gone from this host, it has no
driver stamp at all (killed between ``ask`` and the stamp), or, on storages with heartbeats
(RDB), its heartbeat is older than the grace period. Trials of live drivers, and of drivers
on other hosts without heartbeats, are left alone. Every interrupted trial is marked
``FAIL`` with the user attribute ``stale`` and never counts towards ``--trials``. Then the
**retry rule**:

* *Its parameters are known in full* -- the driver recorded all of them (user attribute
  ``params_complete``, written right after the last ``suggest``), or the trial was enqueued
  with fixed parameters (warm starts and retries carry them in ``enqueued_params``): a new
  trial is enqueued with exactly those parameters (``retry_of`` = the interrupted trial's
  number; a warm start keeps its label). Each interrupted trial is retried at most once;
  a retry that is interrupted in turn gets its own retry.
* *Otherwise* (killed while its parameters were being suggested): nothing is enqueued;
  the sampler draws a fresh trial in its place. A partial parameter set is never
  completed by the sampler, since that would be a different point under the old trial's
  name.

So after a resume the study holds exactly ``--trials`` evaluated trials (complete, pruned,
or failed while evaluated; :func:`count_finished`) plus the interrupted ones, which the
report lists apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raysync.exceptions import ConfigError
from tuning.storage import process_alive, process_stamp

if TYPE_CHECKING:
    import optuna

    from raysync.config import SystemConfig
    from raysync.objectives import ProblemConstants
    from tuning.search_space import SearchSpace
    from tuning.settings import TuneSettings

__all__ = [
    "DRIVER_ATTR",
    "ENQUEUED_ATTR",
    "PARAMS_ATTR",
    "PROBLEM_ATTR",
    "RETRY_ATTR",
    "STALE_ATTR",
    "WARM_ATTR",
    "WARM_LABELS_ATTR",
    "Heartbeat",
    "Recovery",
    "bind_study",
    "count_finished",
    "count_interrupted",
    "driver_stamp",
    "is_interrupted",
    "problem_fingerprint",
    "recover_stale_trials",
]

logger = logging.getLogger(__name__)

#: Host, pid and start time of the driver that asked for a trial.
DRIVER_ATTR = "driver"
#: Set on a trial interrupted by a killed driver (then failed; never counted).
STALE_ATTR = "stale"
#: Number of the interrupted trial a retry re-runs.
RETRY_ATTR = "retry_of"
#: Set once every parameter of a trial has been recorded.
PARAMS_ATTR = "params_complete"
#: The full parameters an enqueued trial (warm start, retry) was given.
ENQUEUED_ATTR = "enqueued_params"
#: Label of a warm-start trial (``analytical``, ``uniform``, ...).
WARM_ATTR = "warm_start"
#: Every warm-start label a trial stands for (labels whose points coincide in the space).
WARM_LABELS_ATTR = "warm_start_labels"
#: Study attribute holding the problem fingerprint.
PROBLEM_ATTR = "problem"

# Fingerprint components larger than this (canonical JSON) are stored as a hash only.
_MAX_STORED = 16_000


def driver_stamp() -> dict[str, Any]:
    """This driver's stamp (host, pid, process start time) for the ``driver`` attribute."""
    return process_stamp()


# --------------------------------------------------------------------------- problem
def _run_length(items: list[Any], key: str) -> list[dict[str, Any]]:
    """Consecutive equal items as ``{"clients": count, key: item}`` (fleets are tiers)."""
    out: list[dict[str, Any]] = []
    for item in items:
        if out and out[-1][key] == item:
            out[-1]["clients"] += 1
        else:
            out.append({"clients": 1, key: item})
    return out


def problem_fingerprint(
    config: SystemConfig,
    settings: TuneSettings,
    *,
    budget: float,
    space: SearchSpace,
    constants: ProblemConstants | None,
) -> dict[str, Any]:
    """What a study optimises, by component (JSON-safe).

    Args:
        config: The fleet and training set-up.
        settings: How to tune.
        budget: The resolved time budget (config time unit).
        space: The search space.
        constants: The bound's constants in use (None when not needed).

    Returns:
        ``{component: value}`` for ``fleet``, ``objective``, ``budget``, ``search_space``,
        and for measured objectives ``data``, ``model`` and ``training``.
    """
    d = config.to_dict()
    service_times = [c.get("service_time") for c in d.get("clients", [])]
    fleet = {
        "num_clients": config.num_clients,
        "groups": _run_length(service_times, "service_time"),
    }
    measured = settings.objective != "bound"
    objective: dict[str, Any] = {
        "objective": settings.objective,
        "multi_objective": settings.multi_objective or "",
    }
    if measured:
        objective["num_evals"] = settings.num_evals
    else:
        objective["eta"] = settings.eta
        if constants is not None:
            objective["constants"] = {k: float(v) for k, v in constants.to_dict().items()}
    budget_part: dict[str, Any] = {"budget": float(budget)}
    if settings.multi_objective == "budget":
        low, high = settings.budget_range or (budget / 8.0, budget)
        budget_part["budget_range"] = [float(low), float(high)]
    search = {
        "family": settings.family,
        "parameterization": settings.parameterization if settings.family == "simplex" else "",
        "max_concurrency": space.max_concurrency,
        "min_p": settings.min_p,
    }
    out: dict[str, Any] = {
        "fleet": fleet,
        "objective": objective,
        "budget": budget_part,
        "search_space": search,
    }
    if measured:
        run = {
            k: v
            for k, v in dict(d.get("run", {})).items()
            # set per trial by trial_config, so not part of the problem
            if k not in ("num_updates", "time_budget", "eval_every_updates", "eval_every_seconds")
        }
        out["data"] = d.get("data")
        out["model"] = d.get("model")
        out["training"] = {"algorithm": d.get("algorithm"), "seed": d.get("seed"), "run": run}
        if settings.objective == "live":
            out["fleet"]["resources"] = _run_length(
                [{k: v for k, v in c.items() if k != "service_time"} for c in d["clients"]],
                "resources",
            )
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _stored_form(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    stored: dict[str, Any] = {}
    for name, value in fingerprint.items():
        text = _canonical(value)
        entry: dict[str, Any] = {"sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
        if len(text) <= _MAX_STORED:
            entry["value"] = json.loads(text)
        stored[name] = entry
    return stored


def _short(value: Any, limit: int = 60) -> str:
    text = _canonical(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _difference(old: Any, new: Any, path: str) -> str | None:
    """The first place where ``old`` and ``new`` differ (keys missing on a side are not)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) & set(new), key=str):
            found = _difference(old[key], new[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return f"{path or 'value'} had {len(old)} entries, now {len(new)}"
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if _canonical(old) != _canonical(new):
        return f"{path or 'value'} was {_short(old)}, now {_short(new)}"
    return None


def bind_study(study: optuna.Study, fingerprint: Mapping[str, Any], *, where: str = "") -> bool:
    """Store the problem's fingerprint in a new study, or check it on a resumed one.

    Args:
        study: The study (created or loaded).
        fingerprint: From :func:`problem_fingerprint`.
        where: The storage, for the message.

    Returns:
        True when the fingerprint was written now (a new study, or one made before
        fingerprints existed), False when an existing one matched.

    Raises:
        ConfigError: The study was created for another problem (one line naming every
            component that changed and the first difference in each).
    """
    stored = study.user_attrs.get(PROBLEM_ATTR)
    new = _stored_form(fingerprint)
    if not isinstance(stored, Mapping):
        _check_legacy_attrs(study, fingerprint, where)
        study.set_user_attr(PROBLEM_ATTR, new)
        return True
    changes: list[str] = []
    for name, entry in new.items():
        old = stored.get(name)
        if not isinstance(old, Mapping) or old.get("sha256") == entry["sha256"]:
            continue
        if "value" in old and "value" in entry:
            detail = _difference(old["value"], entry["value"], "")
            if detail is None:
                continue  # only keys one version did not record
            changes.append(f"{name} ({detail})")
        else:
            changes.append(f"{name} (fingerprint {old.get('sha256')} -> {entry['sha256']})")
    if changes:
        place = f" in {where}" if where else ""
        raise ConfigError(
            f"study {study.study_name!r}{place} was created for another problem: "
            f"{'; '.join(changes)} changed; resume it with the same config and flags, or "
            "choose another --study name or --out"
        )
    return False


_LEGACY_KEYS = {
    "objective": ("objective", "objective"),
    "multi_objective": ("objective", "multi_objective"),
    "family": ("search_space", "family"),
    "parameterization": ("search_space", "parameterization"),
    "max_concurrency": ("search_space", "max_concurrency"),
    "budget": ("budget", "budget"),
    "num_clients": ("fleet", "num_clients"),
}


def made_by_tune(study: optuna.Study) -> bool:
    """Whether ``study`` is one ``raysync tune`` can resume.

    True for a study without trials (nothing to mix with) and for one that carries tune's
    problem fingerprint or the settings older versions stored; False for a study another
    program made (its trials have other parameters and values, which tune's report and
    warm starts would misread).
    """
    attrs = study.user_attrs
    if PROBLEM_ATTR in attrs or any(key in attrs for key in _LEGACY_KEYS):
        return True
    return not study.get_trials(deepcopy=False)


def _check_legacy_attrs(study: optuna.Study, fingerprint: Mapping[str, Any], where: str) -> None:
    """Studies of older raysync versions stored a few settings one by one: check those."""
    attrs = study.user_attrs
    for key, (component, inner) in _LEGACY_KEYS.items():
        if key in attrs and component in fingerprint:
            now = fingerprint[component].get(inner)
            if now is not None and _canonical(attrs[key]) != _canonical(now):
                place = f" in {where}" if where else ""
                raise ConfigError(
                    f"study {study.study_name!r}{place} was created with {key}={attrs[key]!r}, "
                    f"not {now!r}; resume it with the same settings or choose another --study "
                    "name"
                )


# --------------------------------------------------------------------------- interrupted
@dataclass
class Recovery:
    """What :func:`recover_stale_trials` did.

    Attributes:
        failed: Numbers of the trials interrupted by a killed driver, failed now.
        requeued: Those re-enqueued with exactly their parameters.
        resampled: Those whose parameters were incomplete: a fresh trial replaces them.
    """

    failed: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    resampled: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.failed)

    def message(self) -> str:
        """One line for the user ("" when nothing was interrupted)."""
        if not self.failed:
            return ""
        parts = []
        if self.requeued:
            parts.append(f"{_numbers(self.requeued)} re-enqueued with exactly the same parameters")
        if self.resampled:
            parts.append(
                f"{_numbers(self.resampled)} had only part of their parameters recorded and "
                "will be replaced by fresh samples"
            )
        already = sorted(set(self.failed) - set(self.requeued) - set(self.resampled))
        if already:
            parts.append(f"{_numbers(already)} already retried")
        return (
            f"{len(self.failed)} trial(s) interrupted by a killed driver marked failed: "
            + "; ".join(parts)
        )


def _numbers(numbers: list[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers)


def is_interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial was interrupted by a killed driver (failed as stale)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get(STALE_ATTR))


def _full_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    """The trial's parameters when known in full (the retry rule), else None."""
    if trial.user_attrs.get(PARAMS_ATTR):
        return dict(trial.params)
    enqueued = trial.user_attrs.get(ENQUEUED_ATTR)
    if isinstance(enqueued, Mapping) and enqueued:
        return dict(enqueued)
    return None


def _heartbeat_storage(storage: Any) -> bool:
    import optuna

    return isinstance(storage, optuna.storages.RDBStorage) and bool(
        storage.get_heartbeat_interval()
    )


def _trial_id(storage: Any, study: optuna.Study, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return int(storage.get_trial_id_from_study_id_trial_number(study_id, number))


def recover_stale_trials(study: optuna.Study, storage: Any) -> Recovery:
    """Fail the trials a killed driver left ``RUNNING`` and apply the retry rule.

    See the module docstring for when a trial counts as interrupted and for the rule.
    Safe to call again (a trial is failed and retried at most once).

    Args:
        study: The study.
        storage: Its storage (from :func:`tuning.storage.make_storage`).

    Returns:
        The :class:`Recovery`: failed, re-enqueued and resampled trial numbers.
    """
    import optuna
    from optuna.trial import TrialState

    result = Recovery()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        stamp = trial.user_attrs.get(DRIVER_ATTR)
        alive = process_alive(stamp)
        if alive is False or (alive is None and DRIVER_ATTR not in trial.user_attrs):
            trial_id = _trial_id(storage, study, trial.number)
            # The mark first: a kill between the two writes leaves a RUNNING trial that the
            # next resume fails, never a FAIL that would count as evaluated.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_user_attr(trial_id, STALE_ATTR, True)
                if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    result.failed.append(trial.number)
    if _heartbeat_storage(storage):
        running = (TrialState.RUNNING,)
        before = {t.number for t in study.get_trials(deepcopy=False, states=running)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if t.number in before:  # failed just now for a missed heartbeat
                storage.set_trial_user_attr(_trial_id(storage, study, t.number), STALE_ATTR, True)
                result.failed.append(t.number)
    # Retries of trials interrupted earlier but not yet handled are made here too, so a
    # kill between failing a trial and enqueueing its retry loses nothing.
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials} - {None}
    for trial in trials:
        if not is_interrupted(trial) or trial.number in retried:
            continue
        params = _full_params(trial)
        if params is None:
            if trial.number in result.failed:
                result.resampled.append(trial.number)
            continue
        attrs: dict[str, Any] = {RETRY_ATTR: trial.number, ENQUEUED_ATTR: params}
        for key in (WARM_ATTR, WARM_LABELS_ATTR):
            if key in trial.user_attrs:
                attrs[key] = trial.user_attrs[key]
        study.enqueue_trial(params, user_attrs=attrs)
        result.requeued.append(trial.number)
        if trial.number not in result.failed:
            result.failed.append(trial.number)
    result.failed.sort()
    if result:
        logger.warning("%s", result.message())
    return result


def count_finished(study: optuna.Study) -> int:
    """Evaluated trials: the ones that count towards ``--trials``.

    Complete and pruned trials, and trials that failed while being evaluated; never the
    trials interrupted by a killed driver (they are retried or replaced, module docstring).
    """
    from optuna.trial import TrialState

    count = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            t.state == TrialState.FAIL and not is_interrupted(t)
        ):
            count += 1
    return count


def count_interrupted(study: optuna.Study) -> int:
    """Trials interrupted by a killed driver (failed as stale)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if is_interrupted(t))


# --------------------------------------------------------------------------- heartbeat
class Heartbeat:
    """Records heartbeats for the driver's running trials in a background thread (RDB).

    Optuna records heartbeats only inside ``study.optimize``; this driver uses ask/tell,
    so it beats itself, through the storage's ``record_heartbeat``. A no-op on storages
    without heartbeats (the journal).

    Args:
        storage: The study's storage.
        study: The study.
    """

    def __init__(self, storage: Any, study: optuna.Study) -> None:
        self.storage = storage
        self.study = study
        self.enabled = _heartbeat_storage(storage)
        self.trial_ids: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled:
            interval = float(storage.get_heartbeat_interval() or 30)
            self._thread = threading.Thread(
                target=self._loop, args=(interval,), name="raysync-heartbeat", daemon=True
            )
            self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.beat()

    def beat(self) -> None:
        """Record one heartbeat for every running trial of this driver."""
        if not self.enabled:
            return
        with self._lock:
            ids = list(self.trial_ids.values())
        for trial_id in ids:
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(trial_id)

    def add(self, number: int) -> None:
        """Start beating for trial ``number``."""
        if not self.enabled:
            return
        trial_id = _trial_id(self.storage, self.study, number)
        with self._lock:
            self.trial_ids[number] = trial_id
        with contextlib.suppress(Exception):
            self.storage.record_heartbeat(trial_id)

    def remove(self, number: int) -> None:
        """Stop beating for trial ``number``."""
        with self._lock:
            self.trial_ids.pop(number, None)

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
