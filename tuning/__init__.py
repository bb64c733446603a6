"""Optuna studies over concurrency and routing, built on :mod:`raysync`.

* :mod:`tuning.search_space`: ``(C, p)`` spaces whose ``p`` is a valid simplex by
  construction (normalised ``-log u`` draws or softmax logits), plus low-dimensional
  families (``p ∝ mu^beta``, one weight per tier).
* :mod:`tuning.objectives`: what a trial measures (the analytical bound, simulated or live
  validation accuracy), picklable trial specs that run in the driver or in Ray tasks.
* :mod:`tuning.study`: the driver (ask/tell, warm starts, pruning, parallel trials on Ray,
  storages and resume after a kill).
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
from tuning.study import (
    StudyReport,
    TuneSettings,
    analytical_optimum,
    count_finished,
    make_storage,
    recover_stale_trials,
    run_study,
    warm_start_points,
)

__all__ = [
    "FAMILIES",
    "MULTI_OBJECTIVES",
    "OBJECTIVES",
    "BoundTrialObjective",
    "Candidate",
    "PowerSpace",
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
    "trial_config",
    "warm_start_points",
]
