"""Optuna studies over concurrency and routing, built on :mod:`raysync`.

* :mod:`tuning.search_space`: ``(C, p)`` spaces whose ``p`` is a valid simplex by
  construction (normalised ``-log u`` draws or softmax logits), plus low-dimensional
  families (``p ∝ mu^beta``, one weight per tier).
* :mod:`tuning.objectives`: what a trial measures (the analytical bound, simulated or live
  validation accuracy), picklable trial specs that run in the driver or in Ray tasks.
* :mod:`tuning.study`: :func:`run_study`, the driver that ties the parts below together
  (and re-exports their public names):

  * :mod:`tuning.settings`: :class:`TuneSettings` and the one mapping from the tune
    command's arguments (:func:`settings_from_args`);
  * :mod:`tuning.storage` (and :mod:`tuning.journal`): journal file or SQLAlchemy storage,
    a journal lock that survives a killed driver, torn appends cut;
  * :mod:`tuning.recovery`: a study bound to its problem (fingerprint), interrupted trials
    and the retry rule, evaluated-trial counts, heartbeats;
  * :mod:`tuning.warm_start`: the analytical optimum and the defaults, and where the search
    space evaluates them;
  * :mod:`tuning.executors`: trials inline, in the driver process or as Ray tasks, pruning;
  * :mod:`tuning.report`: :class:`StudyReport`, ``study.json`` with units, the text table.
* :mod:`tuning.plots`: PNG plots; :mod:`tuning.cli`: ``raysync tune``.

``raysync`` never imports this package; it depends on raysync.
"""

from __future__ import annotations

from tuning.objectives import (
    MULTI_OBJECTIVES,
    OBJECTIVES,
    BoundTrialObjective,
    TrialOutcome,
    TrialSpec,
    run_trial,
    trial_config,
)
from tuning.recovery import Recovery, count_finished, recover_stale_trials
from tuning.report import StudyReport
from tuning.search_space import (
    FAMILIES,
    Candidate,
    PowerSpace,
    SearchSpace,
    SimplexSpace,
    TierSpace,
    client_tiers,
    make_search_space,
)
from tuning.settings import TuneSettings, settings_from_args
from tuning.storage import make_storage
from tuning.study import run_study
from tuning.warm_start import analytical_optimum, warm_start_points

__all__ = [
    "FAMILIES",
    "MULTI_OBJECTIVES",
    "OBJECTIVES",
    "BoundTrialObjective",
    "Candidate",
    "PowerSpace",
    "Recovery",
    "SearchSpace",
    "SimplexSpace",
    "StudyReport",
    "TierSpace",
    "TrialOutcome",
    "TrialSpec",
    "TuneSettings",
    "analytical_optimum",
    "client_tiers",
    "count_finished",
    "make_search_space",
    "make_storage",
    "recover_stale_trials",
    "run_study",
    "run_trial",
    "settings_from_args",
    "trial_config",
    "warm_start_points",
]
