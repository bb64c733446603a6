"""The cluster manifests parse, name the entrypoint, and agree with the example fleet."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from cluster.entrypoint import build_parser
from cluster.submit import build_command, submit_env
from cluster.submit import main as submit_main
from raysync.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def _yaml(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def test_runtime_env_uploads_the_repo_without_the_venv() -> None:
    env = _yaml("runtime_env.yaml")
    assert env["working_dir"] == "."
    for excluded in (".venv", ".git"):
        assert excluded in env["excludes"]
    assert all(isinstance(v, str) for v in env["env_vars"].values())


def test_cluster_yaml_has_cpu_and_gpu_tiers_with_token_auth() -> None:
    spec = _yaml("cluster.yaml")
    types = spec["available_node_types"]
    assert spec["head_node_type"] in types
    assert types["cpu_tier"]["resources"]["tier_cpu"] > 0
    assert types["gpu_tier"]["resources"]["tier_gpu"] > 0
    assert types["gpu_tier"]["resources"]["GPU"] >= 1
    starts = " ".join(spec["head_start_ray_commands"] + spec["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2
    assert "~/.ray/auth_token" in spec["file_mounts"]


def test_rayjob_names_the_entrypoint_and_enables_token_auth() -> None:
    job = _yaml("rayjob.yaml")
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    entry = shlex.split(job["spec"]["entrypoint"])
    assert entry[:3] == ["python", "-m", "cluster.entrypoint"]
    build_parser().parse_args(entry[3:])  # the arguments are the entrypoint's
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    tiers = {}
    for group in groups.values():
        resources = json.loads(json.loads(group["rayStartParams"]["resources"]))
        tiers.update(resources)
    assert set(tiers) == {"tier_cpu", "tier_gpu"}
    gpu = groups["gpu-tier"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"


def test_example_fleet_requests_the_manifests_tiers() -> None:
    config = load_config(ROOT / "examples" / "cluster_fleet.toml")
    requested = {key for client in config.clients for key in client.resources}
    assert requested == {"tier_cpu", "tier_gpu"}
    types = _yaml("cluster.yaml")["available_node_types"]
    for tier, node_type in (("tier_cpu", "cpu_tier"), ("tier_gpu", "gpu_tier")):
        per_client = [c for c in config.clients if tier in c.resources]
        node = types[node_type]["resources"]
        assert sum(c.resources[tier] for c in per_client) <= node[tier] * types[node_type][
            "max_workers"
        ]
        assert all(c.num_gpus == 0 or tier == "tier_gpu" for c in per_client)


def test_readme_documents_the_exact_commands() -> None:
    text = (CLUSTER / "README.md").read_text()
    for snippet in (
        "export RAY_AUTH_MODE=token",
        "ray get-auth-token --generate",
        "ray job submit --address http://127.0.0.1:8265",
        "--runtime-env cluster/runtime_env.yaml --working-dir .",
        "python -m cluster.entrypoint",
        "ray up -y cluster/cluster.yaml",
        "kubectl apply -f cluster/rayjob.yaml",
        "optuna-dashboard",
    ):
        assert snippet in text, snippet


def test_submit_helper_builds_the_documented_command(capsys) -> None:
    cmd = build_command(
        address="http://h:8265", config="examples/tiny.toml", out="/tmp/o", extra=["--seed", "3"],
        ray="ray",
    )
    assert cmd[:4] == ["ray", "job", "submit", "--address"]
    assert cmd[cmd.index("--") + 1 :] == [
        "python", "-m", "cluster.entrypoint", "examples/tiny.toml", "--out", "/tmp/o",
        "--seed", "3",
    ]  # fmt: skip
    assert submit_env({"PATH": "/bin"}) == {"PATH": "/bin", "RAY_AUTH_MODE": "token"}
    assert submit_main(["examples/tiny.toml", "--out", "/tmp/o", "--print"]) == 0
    assert "RAY_AUTH_MODE=token" in capsys.readouterr().err


def test_entrypoint_rejects_a_bad_config_with_exit_2(tmp_path) -> None:
    from cluster.entrypoint import main

    bad = tmp_path / "bad.toml"
    bad.write_text("concurrency = 0\n[[clients]]\n")
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize("flag", ["--tune", "--objective", "--parallel", "--storage"])
def test_entrypoint_offers_tuning_flags(flag) -> None:
    assert flag in build_parser().format_help()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--time-budget", "nan"], "argument --time-budget: must be a finite number, got 'nan'"),
        (["--time-scale=1e309"], "got '1e309' (beyond the float range, about 1.8e308)"),
        (["--trials", str(10**40)], "argument --trials: must be an integer of at most 30 digits"),
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ],
)
def test_submit_refuses_entrypoint_arguments_before_submitting(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    # were passed on: the job started on the cluster and failed there
    import cluster.submit as submit

    def no_submission(*args: object) -> None:
        raise AssertionError("submitted")

    monkeypatch.setattr(submit, "run_submission", no_submission)
    with pytest.raises(SystemExit) as stop:
        submit_main(["examples/tiny.toml", "--out", "/tmp/o", "--", *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m cluster.entrypoint: error: ")
    assert message in err[0]
