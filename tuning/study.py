"""The tuning driver: an Optuna study over ``(C, p)`` that the driver owns (ask/tell).

:func:`run_study` opens the storage (:mod:`tuning.storage`), creates or resumes the study,
binds it to its problem and recovers trials a killed driver interrupted
(:mod:`tuning.recovery`), enqueues the warm starts (:mod:`tuning.warm_start`), runs trials
until the study holds ``settings.trials`` evaluated trials (:mod:`tuning.executors`), and
reports (:mod:`tuning.report`). The settings are :class:`tuning.settings.TuneSettings`.

This module keeps every name it had before the split importable (``TuneSettings``,
``run_study``, ``make_storage``, ``recover_stale_trials``, ``summarize_study``, ...).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysync._files import atomic_write
from raysync.config import SystemConfig
from raysync.exceptions import ConfigError
from tuning.executors import (
    ProgressFn,
    TrialDriver,
    max_parallel_live,
    max_parallel_simulated,
    replace_number,
)
from tuning.objectives import BoundTrialObjective, directions_for, metric_names_for
from tuning.recovery import (
    Recovery,
    bind_study,
    count_finished,
    count_interrupted,
    problem_fingerprint,
    recover_stale_trials,
)
from tuning.report import StudyReport, json_safe, summarize_study
from tuning.search_space import make_search_space
from tuning.settings import PRUNERS, TuneSettings, settings_from_args, with_overrides
from tuning.storage import (
    JOURNAL_NAME,
    create_or_load_study,
    make_storage,
    storage_label,
    trial_slot_lock,
)
from tuning.warm_start import (
    analytical_optimum,
    enqueue_warm_starts,
    evaluated_point,
    warm_start_points,
)

if TYPE_CHECKING:
    import optuna

    from raysync.objectives import ProblemConstants

__all__ = [
    "JOURNAL_NAME",
    "PRUNERS",
    "ProgressFn",
    "Recovery",
    "StudyReport",
    "TuneSettings",
    "analytical_optimum",
    "count_finished",
    "count_interrupted",
    "create_or_load_study",
    "enqueue_warm_starts",
    "evaluated_point",
    "json_safe",
    "make_storage",
    "max_parallel_live",
    "max_parallel_simulated",
    "recover_stale_trials",
    "replace_number",
    "run_study",
    "settings_from_args",
    "storage_label",
    "summarize_study",
    "warm_start_points",
    "with_overrides",
]

logger = logging.getLogger(__name__)


def run_study(
    config: SystemConfig,
    settings: TuneSettings,
    *,
    progress: ProgressFn | None = None,
    on_event: Callable[[str], None] | None = None,
    workload: Any = None,
) -> StudyReport:
    """Create or resume the study, run it to ``settings.trials`` evaluated trials, report.

    Args:
        config: The fleet and training set-up (its routing and ``C`` are replaced per
            trial).
        settings: How to tune.
        progress: Called after each finished trial as ``progress(done, total, trial)``.
        on_event: Called with one-line messages (resume, warm starts, parallelism).
        workload: A workload built in code (:func:`raysync.build_workload`, e.g. with
            the user's model and data callables) used by every simulated or live trial
            instead of building one from ``config``.

    Returns:
        The :class:`StudyReport` (best trials, analytical optimum and defaults).

    Raises:
        ConfigError: Bad settings, an unusable ``--out`` or storage, or a resumed study
            created for another problem (:func:`tuning.recovery.bind_study`).
    """
    start = time.perf_counter()
    say = on_event or (lambda message: logger.info("%s", message))
    if settings.multi_objective == "energy":
        from raysync.objectives.energy import power_figures

        # without power figures every trial's energy is 0 J: a front of one point
        if not power_figures(config).any:
            raise ConfigError(
                "multi_objective 'energy' (--multi-objective energy) needs power figures: set "
                "power = { busy = '20 W', idle = '2 W', transfer = '0.5 J' } on [[clients]] "
                "(and [server] power)"
            )
    budget = _resolve_budget(config, settings)
    need_constants = settings.objective == "bound" or settings.warm_start
    if need_constants:
        from raysync.objectives import check_time_budget
        from raysync.queueing.predict import station_parameters

        # the bound's own budget rules, checked before the pilot run (it takes minutes)
        check_time_budget(
            budget, config.service_rates, server_rate=station_parameters(config)[1]
        )
    space = make_search_space(
        config,
        family=settings.family,
        max_concurrency=settings.max_concurrency,
        parameterization=settings.parameterization,
    )
    directions = directions_for(settings.objective, settings.multi_objective)
    # created only once every check above passed: a refused study leaves no folder
    out = settings.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        # mkdir says "file exists" for a dangling link on the path as well
        link = next((p for p in (out, *out.parents) if p.is_symlink() and not p.exists()), None)
        problem = "a file is in the way" if link is None else f"{str(link)!r} is a broken link"
        raise ConfigError(
            f"out {str(out)!r} cannot be used as the output directory: {problem}; "
            "pass a directory path with --out"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"out {str(out)!r} cannot be used as the output directory "
            f"({exc.strerror or exc}); pass a directory path with --out"
        ) from exc
    storage = make_storage(settings.storage, out, heartbeat_interval=settings.heartbeat_interval)
    label = storage_label(settings.storage, out)
    study = create_or_load_study(
        storage=storage,
        study_name=settings.study_name,
        directions=directions,
        metric_names=metric_names_for(settings.objective, settings.multi_objective),
        seed=settings.seed,
        pruner=settings.pruner,
        pruner_startup=max(4, settings.parallel),
    )
    constants = _resolve_constants(config, settings, study, say) if need_constants else None
    fingerprint = problem_fingerprint(
        config, settings, budget=budget, space=space,
        constants=constants if settings.objective == "bound" else None,
    )  # fmt: skip
    bind_study(study, fingerprint, where=label)
    if constants is not None and "constants" not in study.user_attrs:
        study.set_user_attr("constants", constants.to_dict())
    done = 0
    if study.get_trials(deepcopy=False):
        recovery = recover_stale_trials(study, storage)
        done = count_finished(study)
        message = f"resuming study {settings.study_name!r}: {done} evaluated trials"
        if recovery:
            message += f"; {recovery.message()}"
        if done >= settings.trials:
            # --trials is the study's total, not a number to add: say why nothing runs.
            message += (f"; --trials {settings.trials} counts the study's total and is "
                        "reached: nothing new to run (raise --trials to continue)")
        say(message)
    optimum = None
    if constants is not None:
        optimum = analytical_optimum(
            config, constants, budget=budget, max_concurrency=space.max_concurrency,
            eta=settings.eta,
        )  # fmt: skip
    references = warm_start_points(config, optimum)
    if config.algorithm.name == "asyncsgd" or config.routing.kind == "return_to_sender":
        # The study searches random routing p with importance weights; say so rather
        # than let a REC.toml of AsyncSGD be tuned as something else without a word.
        say(f"note: tune searches random routing p with generalized_asyncsgd; the config's "
            f"{config.algorithm.name} with routing {config.routing.kind!r} is not in that "
            "space ('raysync recommend' compares both)")
    if settings.warm_start:
        extra = {"budget": budget} if settings.multi_objective == "budget" else {}
        left = settings.trials - done  # counted above; nothing has run since
        enqueued = enqueue_warm_starts(study, space, references, extra_params=extra,
                                       limit=left)
        if enqueued:
            say(f"warm start: enqueued {', '.join(enqueued)}")

    bound = (
        BoundTrialObjective(config.service_rates, constants, eta=settings.eta, config=config)
        if constants is not None
        else None
    )
    driver = TrialDriver(
        study, config, space, settings, budget, bound, progress, storage,
        slot_lock=functools.partial(trial_slot_lock, settings.storage, out),
    )  # fmt: skip
    started_ray = False
    try:
        if settings.objective == "bound":
            driver.run_bound()
        else:
            if workload is None:  # a raysync.build_workload(...) result may be passed in
                workload = _build_workload(config)
            parallel = settings.parallel
            if parallel > 1 or settings.objective == "live":
                started_ray = _ensure_ray(settings.address)
            if parallel > 1:
                if settings.objective == "live":
                    fits = max_parallel_live(config, parallel)
                else:
                    fits = max_parallel_simulated(settings.cpus_per_trial, parallel)
                if fits < parallel:
                    say(
                        f"parallel={parallel} reduced to {fits}: the cluster's resources hold "
                        f"{fits} {settings.objective} trial(s) at once"
                    )
                parallel = fits
            if parallel > 1:
                say(f"running up to {parallel} trials at once on Ray")
                driver.run_ray(workload, parallel)
            else:
                driver.run_local(workload)
    finally:
        driver.close()
        if started_ray:
            import ray

            ray.shutdown()
    report = summarize_study(
        study,
        space=space,
        references=references,
        bound=bound,
        budget=budget,
        objective=settings.objective,
        storage=label,
        constants=constants,
        wall_time=time.perf_counter() - start,
        min_p=settings.min_p,
    )
    _write_json(out / "study.json", report.to_dict())
    return report


def _write_json(path: Path, payload: Any) -> None:
    """Write atomically (a kill never leaves half a file); an unusable path is one line.

    Each call writes its own temporary file (``mkstemp``): two drivers of one study in one
    process (threads) once shared a pid-named one, and the second ``os.replace`` found it
    gone. The last writer's report stands.
    """
    try:
        with atomic_write(path) as handle:
            handle.write(json.dumps(payload, indent=2))
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r} ({exc.strerror or exc})") from exc


def _build_workload(config: SystemConfig) -> Any:
    from raysync.workload import build_workload

    return build_workload(config)


def _ensure_ray(address: str | None) -> bool:
    """Join ``address`` or an initialised session, or start a local instance (True)."""
    from raysync.runtime import connect

    return connect(address)


def _resolve_budget(config: SystemConfig, settings: TuneSettings) -> float:
    budget = settings.budget if settings.budget is not None else config.run.time_budget
    if budget is None:
        raise ConfigError(
            "a time budget is required: pass --budget S or set run.time_budget in the config"
        )
    return float(budget)


def _resolve_constants(
    config: SystemConfig,
    settings: TuneSettings,
    study: optuna.Study,
    say: Callable[[str], None],
) -> ProblemConstants:
    from raysync.objectives import ProblemConstants, estimate_constants_for_config

    if settings.constants is not None:
        return settings.constants
    stored = study.user_attrs.get("constants")
    if isinstance(stored, Mapping):
        return ProblemConstants(**{k: float(stored[k]) for k in ("L", "sigma2", "M2", "A")})
    say("estimating the bound's constants (L, sigma2, M2, A) from a pilot run")
    estimate = estimate_constants_for_config(config)
    c = estimate.constants
    say(f"constants: L={c.L:.4g} sigma2={c.sigma2:.4g} M2={c.M2:.4g} A={c.A:.4g}")
    return c
