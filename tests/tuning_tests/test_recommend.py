"""``raysync recommend``: the pipeline on digits, its config, its table and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysync.cli import main
from raysync.config import load_config
from raysync.objectives import DesignPoint

TINY = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"


@pytest.fixture(scope="module")
def recommended(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("rec")
    rec = out / "rec.toml"
    report = out / "rec.json"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["recommend", str(TINY), "--budget", "30", "--trials", "7", "--out",
                     str(rec), "--report", str(report), "--quiet"])
    return {"code": code, "path": rec, "report": json.loads(report.read_text()),
            "stdout": buffer.getvalue()}


def test_recommend_writes_a_config_with_only_the_design_replaced(recommended) -> None:  # noqa: ANN001
    assert recommended["code"] == 0
    base = load_config(TINY)
    rec = load_config(recommended["path"])
    assert rec.clients == base.clients and rec.data == base.data and rec.run == base.run
    assert rec.seed == base.seed and rec.model == base.model
    point = DesignPoint.from_config(rec)
    assert point.to_dict() == pytest.approx(recommended["report"]["point"])


def test_recommendation_is_never_worse_than_a_baseline_on_validation(recommended) -> None:  # noqa: ANN001
    arms = {a["label"]: a for a in recommended["report"]["arms"]}
    assert {"recommended", "analytical", "uniform", "asyncsgd", "fedasync", "fedbuff"} <= set(arms)
    for label in ("uniform", "asyncsgd", "fedasync", "fedbuff", "analytical"):
        assert arms["recommended"]["val_accuracy"] >= arms[label]["val_accuracy"]
        assert arms[label]["trial"] is not None  # every baseline was measured in the study
    assert recommended["report"]["trials"] == 7
    assert arms["asyncsgd"]["bound"] is not None and arms["fedbuff"]["bound"] is None
    assert arms["asyncsgd"]["bound_at_lr"] is not None and arms["fedbuff"]["bound_at_lr"] is None
    assert arms["uniform"]["dominant"] in ("optimization", "variance", "staleness", "bias")
    constants = recommended["report"]["constants"]
    assert constants["zeta2"] > 0 and "gram" not in constants
    for label in ("recommended", "uniform", "asyncsgd", "fedasync", "fedbuff"):
        assert label in recommended["stdout"]


def test_recommended_config_validates_and_simulates(recommended, capsys) -> None:  # noqa: ANN001
    path = str(recommended["path"])
    assert main(["validate", path]) == 0
    assert main(["simulate", path, "--num-updates", "50"]) == 0
    capsys.readouterr()


@pytest.mark.ray
def test_recommended_config_runs_on_ray(recommended, ray_session, capsys) -> None:  # noqa: ANN001
    assert main(["run", str(recommended["path"]), "--num-updates", "20", "--no-progress"]) == 0
    assert "20 updates" in capsys.readouterr().out


def _fails_cleanly(args: list[str], out: Path, capsys, match: str) -> None:  # noqa: ANN001
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and match in err[0], err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_budget_too_short_for_one_update(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "rec.toml"
    _fails_cleanly(["recommend", str(TINY), "--budget", "0.1", "--out", str(out)], out, capsys,
                   "too short for one update")


@pytest.mark.parametrize("target", ["0", "1.5", "nan"])
def test_impossible_target_accuracy(tmp_path: Path, capsys, target: str) -> None:  # noqa: ANN001
    out = tmp_path / "rec.toml"
    _fails_cleanly(["recommend", str(TINY), "--budget", "10", "--target-accuracy", target,
                    "--out", str(out)], out, capsys, "--target-accuracy")


def test_unreachable_target_accuracy(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "rec.toml"
    # about 7 updates in 1 s: no design reaches 99 % validation accuracy
    _fails_cleanly(["recommend", str(TINY), "--budget", "1", "--target-accuracy", "0.99",
                    "--trials", "5", "--quiet", "--out", str(out)], out, capsys,
                   "is not reached")


def test_data_that_cannot_be_loaded(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    text = TINY.read_text().replace(
        'dataset = "digits"', f'dataset = "directory"\npath = "{tmp_path / "missing"}"'
    )
    config = tmp_path / "nodata.toml"
    config.write_text(text)
    out = tmp_path / "rec.toml"
    _fails_cleanly(["recommend", str(config), "--budget", "10", "--out", str(out)], out, capsys,
                   "missing")


def test_target_accuracy_minimises_time_to_reach_it(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "rec.toml"
    report = tmp_path / "rec.json"
    code = main(["recommend", str(TINY), "--budget", "30", "--target-accuracy", "0.6",
                 "--trials", "6", "--quiet", "--out", str(out), "--report", str(report)])
    capsys.readouterr()
    assert code == 0 and out.exists()
    payload = json.loads(report.read_text())
    assert payload["objective"] == "time-to-target"
    arms = {a["label"]: a for a in payload["arms"]}
    best = arms["recommended"]["time_to_target"]
    assert best is not None and best <= 30
    for label in ("uniform", "asyncsgd", "fedasync", "fedbuff"):
        other = arms[label]["time_to_target"]
        assert other is None or best <= other
