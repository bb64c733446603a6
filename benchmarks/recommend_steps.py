"""Which step rule transfers: recommend's pilot step choice against the evaluation draw.

``raysync recommend`` chooses the step of each warm start from a grid by its mean pilot
score over two run seeds of the config's data (:func:`tuning.recommend.choose_lr`,
``lr_choice[...]["pilot_seed_scores"]`` in the benchmark's records). On the CNN cell set
of ``benchmarks/recommend.py`` (tiers 1:10:100, T = 2 virtual s) the grid's best step sits
next to the stability edge (lr 0.3 collapses to chance on every draw, 0.1 on some), and
the README asks whether a rule that backs off from the edge would transfer better to
other data. This script measures it without rerunning recommend: for every cell-seed of
the given runs it runs the bias-aware optimum's design (the analytical warm start, whose
step the pilot chose) at every grid step on the cell's *evaluation* draw (the data the
benchmark tests every arm on, never used for a choice), over ``--runs`` run seeds (the
evaluation seed itself, whose run is the benchmark's, then fresh ones), and scores each
rule by the evaluation accuracy of the step it picks from the recorded pilot scores:

- ``argmax``: the best mean pilot score (ties to the smaller step): today's rule.
- ``one_se``: the smallest step whose mean is within one standard error (over the pilot
  seeds) of the best mean: the one-standard-error rule of model selection (Breiman et
  al. 1984, *Classification and Regression Trees*, section 3.4.3; Hastie, Tibshirani and
  Friedman, *The Elements of Statistical Learning*, 2nd ed., section 7.10).
- ``maximin``: the best worst-seed pilot score (a step that collapses on one pilot seed
  loses).
- ``backoff``: ``argmax``, but one grid step smaller when the next larger step's mean is
  below half the best (the best step is then at the edge).
- ``oracle``: the best step on the evaluation draw itself (not a rule: an upper bound).

Run: ``nice -n 10 .venv/bin/python benchmarks/recommend_steps.py --from
recommend_cnn_t2_iid,recommend_cnn_t2_d05,recommend_cnn_t2_d01_confirm,recommend_cnn_t2_pilot_confirm
--workers 2`` writes ``benchmarks/results/recommend_steps.{json,md,png}`` (``--stem``
another name) and appends each finished cell-seed to ``STEM.records.jsonl`` (``--resume``
keeps them). Cell-seeds recorded before the per-seed pilot scores were kept are scored by
``argmax`` only.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import save_results  # noqa: E402
from recommend import (  # noqa: E402 - the benchmark's own grid, data and records
    RESULTS,
    TARGET,
    _cell_of,
    _read_records,
    _records_text,
    _se,
    _text_writer,
    base_config,
    make_workload,
)

RULES = ("argmax", "one_se", "maximin", "backoff")
#: Fresh run seeds are ``seed + RUN_OFFSET + j``: the evaluation draw is never a selection
#: draw, so any run seed on it is fresh; the offset keeps them apart from the seed itself.
RUN_OFFSET = 700
#: ``backoff``: the best step is at the edge when the next larger step scores below this
#: fraction of it (lr 0.3 on the CNN: 0.09-0.11 against 0.79-0.97).
EDGE_FRACTION = 0.5


def _steps(scores: dict[str, Any]) -> list[str]:
    return sorted(scores, key=float)


def pick(rule: str, seed_scores: dict[str, list[float]]) -> str:
    """The grid step (its key) that ``rule`` picks from per-seed pilot scores.

    Args:
        rule: One of :data:`RULES`.
        seed_scores: Step key (``f"{lr:.6g}"``) -> pilot score per seed (higher is better;
            at least one seed; ``one_se`` needs two).

    Raises:
        ValueError: Unknown rule, no steps, or ``one_se`` with one seed.
    """
    steps = _steps(seed_scores)
    if not steps:
        raise ValueError("pick needs at least one step")
    means = [float(np.mean(seed_scores[s])) for s in steps]
    best = int(np.argmax(means))  # the first maximum: ties go to the smaller step
    if rule == "argmax":
        return steps[best]
    if rule == "maximin":
        return steps[int(np.argmax([min(seed_scores[s]) for s in steps]))]
    if rule == "one_se":
        k = len(seed_scores[steps[best]])
        if k < 2:
            raise ValueError(f"one_se needs two pilot seeds per step, got {k}")
        se = float(np.std(seed_scores[steps[best]], ddof=1) / math.sqrt(k))
        return next(s for s, m in zip(steps, means, strict=True) if m >= means[best] - se)
    if rule == "backoff":
        at_edge = best + 1 < len(steps) and means[best + 1] < EDGE_FRACTION * means[best]
        return steps[best - 1] if at_edge and best > 0 else steps[best]
    raise ValueError(f"unknown rule {rule!r}; choose from {list(RULES)}")


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["source"], *_cell_of(record), record["seed"])


def sweep_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Every grid step of one cell-seed's analytical design on its evaluation draw."""
    import torch

    torch.set_num_threads(1)
    from raysync.objectives import DesignPoint
    from tuning.recommend import measure

    record, runs, target = job["record"], job["runs"], job["target"]
    part, tiers, budget, seed = (record["partition"], record["tiers"], record["budget"],
                                 record["seed"])
    cfg = base_config(part, tiers, seed, record["max_train"], record.get("model", "logreg"))
    workload = make_workload(cfg, part, record.get("eval_samples"))
    run_seeds = [seed] + [seed + RUN_OFFSET + j for j in range(runs - 1)]
    design = DesignPoint.from_dict(record["arms"]["bias"]["point"])
    choice = record["arms"]["recommend"]["lr_choice"]["analytical"]
    steps = _steps(choice["pilot_scores"])
    eval_runs: dict[str, list[float]] = {}
    for key in steps:
        point = DesignPoint.from_dict({**design.to_dict(), "lr": float(key)})
        eval_runs[key] = [float(measure(cfg, point, budget=budget, workload=workload, seed=sd,
                                        num_evals=8, target=target)["test_accuracy"])
                          for sd in run_seeds]
    out = {k: record[k] for k in ("partition", "tiers", "budget", "seed", "max_train",
                                  "model", "eval_samples") if k in record}
    out.update({"source": job["source"], "design": design.to_dict(), "run_seeds": run_seeds,
                "pilot_scores": choice["pilot_scores"],
                "pilot_seed_scores": choice.get("pilot_seed_scores"),
                "pilot_lr": choice["lr"], "eval_runs": eval_runs,
                "asyncsgd": {"point": record["arms"]["asyncsgd"]["point"],
                             "test_accuracy": record["arms"]["asyncsgd"]["test_accuracy"]}})
    print(f"steps {part} {tiers} T={budget:g} seed={seed}: "
          + ", ".join(f"{k}={np.mean(v):.4f}" for k, v in eval_runs.items()),
          file=sys.stderr, flush=True)
    return out


def score(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rule's evaluation accuracy per cell-seed and its paired gain over ``argmax``."""
    rows = []
    for r in records:
        mean = {k: float(np.mean(v)) for k, v in r["eval_runs"].items()}
        # argmax needs only the mean scores, which every record kept; the others need each
        # seed's, which runs before pilot_seed_scores did not keep.
        picks = {"argmax": pick("argmax", {k: [v] for k, v in r["pilot_scores"].items()})}
        if r.get("pilot_seed_scores"):
            for rule in RULES[1:]:
                picks[rule] = pick(rule, r["pilot_seed_scores"])
        picks["oracle"] = max(_steps(mean), key=lambda k: mean[k])
        # The benchmark's own run of the AsyncSGD arm's step: the sweep must reproduce it.
        lr = f"{r['asyncsgd']['point']['lr']:.6g}"
        same_design = {k: v for k, v in r["asyncsgd"]["point"].items() if k != "lr"} == {
            k: v for k, v in r["design"].items() if k != "lr"}
        reproduced = (None if not same_design or lr not in r["eval_runs"]
                      else r["eval_runs"][lr][0] == r["asyncsgd"]["test_accuracy"])
        rows.append({"cell": _cell_of(r), "seed": r["seed"], "source": r["source"],
                     "picks": picks, "accuracy": {k: mean[v] for k, v in picks.items()},
                     "eval_mean": mean, "reproduces_asyncsgd_arm": reproduced})
    summary: dict[str, Any] = {}
    for rule in (*RULES, "oracle"):
        both = [row for row in rows if rule in row["accuracy"]]
        if not both:
            continue
        acc = np.array([row["accuracy"][rule] for row in both]) * 100
        gain = acc - np.array([row["accuracy"]["argmax"] for row in both]) * 100
        changed = sum(row["picks"][rule] != row["picks"]["argmax"] for row in both)
        summary[rule] = {"cell_seeds": len(both), "changed": changed,
                         "accuracy": float(acc.mean()), "accuracy_se": _se(acc),
                         "gain_over_argmax": float(gain.mean()), "gain_se": _se(gain)}
    return {"rows": rows, "summary": summary}


def markdown(payload: dict[str, Any]) -> str:
    s = payload["scores"]
    lines = [
        "## Recommend's step rule against the evaluation draw (issue 13)", "",
        f"Run: `{payload['command']}` ({payload['wall_seconds'] / 60:.0f} min, "
        f"{payload['workers']} workers, load {payload['load_average_1min'][0]:.1f} on a "
        "shared 2-core machine). The bias-aware optimum's design at every grid step on each "
        f"cell-seed's evaluation draw, {payload['runs']} run seeds (test accuracy their mean, "
        "%); each rule picks a step from the recorded pilot scores (two run seeds of the "
        "selection draw). Gain: paired over cell-seeds against `argmax` (today's rule).", "",
        "| rule | cell-seeds | picks other than argmax | test accuracy | gain over argmax |",
        "|---|---|---|---|---|",
    ]
    for rule, v in s["summary"].items():
        lines.append(f"| {rule} | {v['cell_seeds']} | {v['changed']} | {v['accuracy']:.2f} ± "
                     f"{v['accuracy_se']:.2f} | {v['gain_over_argmax']:+.2f} ± "
                     f"{v['gain_se']:.2f} |")
    lines += ["", "| cell | seed | eval accuracy per step | picks (argmax / one_se / maximin "
              "/ backoff / oracle) | sweep reproduces the AsyncSGD arm |", "|---|---|---|---|---|"]
    for row in s["rows"]:
        part, tiers, budget = row["cell"]
        per_step = ", ".join(f"{k}: {v * 100:.1f}" for k, v in row["eval_mean"].items())
        picks = " / ".join(row["picks"].get(r, "-") for r in (*RULES, "oracle"))
        rep = {None: "-", True: "yes", False: "**no**"}[row["reproduces_asyncsgd_arm"]]
        lines.append(f"| {part}, {tiers}, T={budget:g} | {row['seed']} | {per_step} | "
                     f"{picks} | {rep} |")
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = payload["scores"]["summary"]
    rules = list(summary)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(rules, [summary[r]["gain_over_argmax"] for r in rules],
           yerr=[summary[r]["gain_se"] for r in rules], capsize=4, color="tab:blue")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("gain over argmax (test accuracy points)")
    ax.set_title("Step rule on the evaluation draw")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="sources", required=True, metavar="STEM,...",
                        help="runs of benchmarks/recommend.py (results/STEM.records.jsonl)")
    parser.add_argument("--runs", type=int, default=2, help="run seeds per step (default 2)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--stem", default="recommend_steps")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cell-seeds already in STEM.records.jsonl")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    jobs = []
    for stem in args.sources.split(","):
        source = RESULTS / f"{stem}.records.jsonl"
        if not source.is_file():
            parser.error(f"--from: {source} does not exist")
        for r in _read_records(source):
            if "analytical" not in (r["arms"]["recommend"].get("lr_choice") or {}):
                parser.error(f"--from: {stem} seed {r['seed']} has no recorded pilot step "
                             "choice (a run made before lr_choice was recorded)")
            jobs.append({"record": r, "runs": args.runs, "target": TARGET, "source": stem})
    partial = RESULTS / f"{args.stem}.records.jsonl"
    records = ([r for r in _read_records(partial) if len(r["run_seeds"]) == args.runs]
               if args.resume and partial.is_file() else [])
    done = {_key(r) for r in records}
    jobs = [j for j in jobs if _key({**j["record"], "source": j["source"]}) not in done]
    partial.write_text(_records_text(records))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for fut in as_completed([pool.submit(sweep_cell, j) for j in jobs]):
            rec = fut.result()
            records.append(rec)
            with partial.open("a") as fh:
                fh.write(_records_text([rec]))
    records.sort(key=_key)
    payload = {"command": "benchmarks/recommend_steps.py " + " ".join(
                   sys.argv[1:] if argv is None else argv),
               "workers": args.workers, "runs": args.runs,
               "load_average_1min": os.getloadavg(),
               "wall_seconds": time.perf_counter() - start, "resumed_cell_seeds": len(done),
               "scores": score(records), "records": records}
    text = markdown(payload)
    save_results(args.stem, payload, _text_writer(text), plot, default=float, results=RESULTS)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
