"""cluster.submit.run_submission: resubmits only while the job agent is not ready."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cluster.submit import AGENT_NOT_READY, run_submission

# A stand-in for `ray job submit`: fails with the dashboard's answer until a counter file
# reaches `ready_after`, then prints what a submitted job prints (or fails in another way).
FAKE = """
import sys
from pathlib import Path
counter = Path(sys.argv[1]); ready_after = int(sys.argv[2]); other = sys.argv[3] == "other"
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
if other:
    print("RuntimeError: Request failed with status code 400: bad runtime_env", file=sys.stderr)
    sys.exit(1)
if n <= ready_after:
    print("RuntimeError: Request failed with status code 500: {msg}, please try again later.",
          file=sys.stderr)
    sys.exit(1)
print("Job 'raysync-1' succeeded")
"""


def _cmd(tmp_path: Path, ready_after: int, other: bool = False) -> list[str]:
    script = tmp_path / "fake_ray.py"
    script.write_text(FAKE.format(msg=AGENT_NOT_READY))
    counter = tmp_path / "count"
    return [sys.executable, str(script), str(counter), str(ready_after), "other" if other else "-"]


def _attempts(tmp_path: Path) -> int:
    return int((tmp_path / "count").read_text())


def test_resubmits_while_the_agent_is_not_ready(tmp_path: Path) -> None:
    code, output = run_submission(_cmd(tmp_path, 2), attempts=5, retry_delay=0.0, echo=False)
    assert code == 0
    assert _attempts(tmp_path) == 3
    assert output.count(AGENT_NOT_READY) == 2
    assert output.endswith("Job 'raysync-1' succeeded\n")


def test_gives_up_after_the_last_attempt(tmp_path: Path) -> None:
    code, output = run_submission(_cmd(tmp_path, 10), attempts=3, retry_delay=0.0, echo=False)
    assert code == 1
    assert _attempts(tmp_path) == 3
    assert output.count(AGENT_NOT_READY) == 3


def test_other_failures_are_not_retried(tmp_path: Path) -> None:
    code, output = run_submission(
        _cmd(tmp_path, 0, other=True), attempts=5, retry_delay=0.0, echo=False
    )
    assert code == 1
    assert _attempts(tmp_path) == 1
    assert "bad runtime_env" in output


@pytest.mark.parametrize(("attempts", "delay"), [(0, 1.0), (2, -1.0), (2, float("nan"))])
def test_bad_retry_settings_are_refused(attempts: int, delay: float) -> None:
    with pytest.raises(ValueError, match="attempts must be|retry_delay must be"):
        run_submission(["true"], attempts=attempts, retry_delay=delay, echo=False)
