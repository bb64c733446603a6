"""Shared test configs: the worked-example fleet as TOML, and a writer for config files.

The fleet of the theory's worked example (docs/theory.md section 2: ``mu = (1, 2, 4, 0.5)``,
``p = (0.4, 0.3, 0.2, 0.1)``, ``C = 6``) is used across cli_tests, tuning_tests and others;
one copy lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raysync.config import SystemConfig

__all__ = ["TWO_CLIENTS", "WORKED_EXAMPLE_CLIENTS", "load_text", "worked_example", "write_config"]

#: The four clients of the worked example, as ``[[clients]]`` tables.
WORKED_EXAMPLE_CLIENTS = """\
[[clients]]
service_time = { kind = "exponential", rate = 1.0 }

[[clients]]
service_time = { kind = "exponential", rate = 2.0 }

[[clients]]
service_time = { kind = "exponential", rate = 4.0 }

[[clients]]
service_time = { kind = "exponential", rate = 0.5 }
"""


#: Two identical exponential clients (rate 1), the smallest fleet a config rule needs.
TWO_CLIENTS = '[[clients]]\ncount = 2\nservice_time = { kind = "exponential", rate = 1.0 }\n'


#: A queue-only run of two identical clients, 10 updates (the cluster helpers' jobs).
QUEUE_ONLY_PAIR = """
concurrency = 2
[routing]
kind = "uniform"
[algorithm]
name = "generalized_asyncsgd"
[run]
num_updates = 10
train = false
[[clients]]
count = 2
service_time = { kind = "exponential", rate = 1.0 }
"""


def worked_example(sections: str = "", *, seed: int = 0, concurrency: int = 6) -> str:
    """The worked-example fleet (fixed routing ``p``) with extra TOML ``sections``.

    ``sections`` holds tables such as ``[algorithm]`` or ``[run]``; they go between the
    routing and the clients.
    """
    return (
        f"seed = {seed}\nconcurrency = {concurrency}\n\n"
        '[routing]\nkind = "fixed"\np = [0.4, 0.3, 0.2, 0.1]\n\n'
        f"{sections.strip()}\n\n{WORKED_EXAMPLE_CLIENTS}"
    )


def write_config(directory: Path, text: str, name: str = "config.toml") -> Path:
    """Write ``text`` to ``directory / name`` and return the path."""
    path = Path(directory) / name
    path.write_text(text)
    return path


def load_text(directory: Path, text: str, name: str = "config.toml") -> SystemConfig:
    """Write ``text`` as a config file in ``directory`` and load it (rules checked)."""
    from raysync.config import load_config

    return load_config(write_config(directory, text, name))
