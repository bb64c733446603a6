"""``config_toml``: the TOML raysync writes (REC.toml, --write-config) reads as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raysync.config import config_toml, load_config
from raysync.exceptions import ConfigError

FLEET = """
concurrency = 5
seed = 1
[[clients]]
count = 2
name = "fast"
service_time = { kind = "deterministic", mean = 0.1 }
[[clients]]
name = "mid"
service_time = { kind = "exponential", rate = 2.0 }
resources = { tier_mid = 1.0 }
[[clients]]
count = 2
name = "slow"
service_time = { kind = "exponential", rate = 0.4 }
[routing]
kind = "uniform"
[algorithm]
name = "generalized_asyncsgd"
[data]
factory = "mypkg.data:make_data"
partition = "natural"
[model]
factory = "mypkg.models:make_model"
"""


def test_written_config_loads_back_equal_and_reads_as_the_user_wrote_it(tmp_path: Path) -> None:
    source = tmp_path / "in.toml"
    source.write_text(FLEET)
    config = load_config(source)
    text = config_toml(config)
    back = tmp_path / "out.toml"
    back.write_text(text)
    assert load_config(back) == config
    # Repeated clients stay one table with a count (it listed 5 tables), an empty resources
    # table is left out, and the built-in dataset/model fields the factories replace are not
    # written (they looked used).
    assert text.count("[[clients]]") == 3 and text.count("count = 2") == 2
    assert text.count("[clients.resources]") == 1 and "tier_mid = 1.0" in text
    assert "dataset =" not in text and 'name = "logreg"' not in text and "hidden" not in text


@pytest.mark.parametrize(
    ("table_line", "extra", "words"),
    [
        ('factory = "mypkg.models:make_model"', "hidden = [7]",
         "model.hidden is not used beside model.factory"),
        ('factory = "mypkg.models:make_model"', 'name = "mlp"',
         "model.name = 'mlp' is not used beside model.factory"),
        ('factory = "mypkg.data:make_data"', 'dataset = "mnist"',
         "data.dataset = 'mnist' is not used beside data.factory"),
        ('factory = "mypkg.data:make_data"', 'path = "x.npz"',
         "data.path is not used beside data.factory"),
    ],
)
def test_builtin_fields_that_differ_from_the_default_are_refused_beside_a_factory(
    tmp_path: Path, table_line: str, extra: str, words: str
) -> None:
    # The factory builds the model: a non-default built-in field beside it would be
    # silently unused (validate --json even showed it), so it is refused.
    source = tmp_path / "in.toml"
    source.write_text(FLEET.replace(table_line, f"{table_line}\n{extra}"))
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(source)


def test_a_random_routing_design_and_its_file(tmp_path: Path) -> None:
    import dataclasses

    from raysync.config import RoutingConfig, RunConfig, write_config_file

    source = tmp_path / "in.toml"
    source.write_text(FLEET)
    base = load_config(source)
    asyncsgd = base.replace(algorithm=dataclasses.replace(base.algorithm, name="asyncsgd"),
                            routing=RoutingConfig(kind="return_to_sender"))
    run = RunConfig(time_budget=3.0)
    design = asyncsgd.with_random_routing([0.1, 0.2, 0.3, 0.2, 0.2], 3, run=run)
    assert design.routing.kind == "fixed" and design.routing.p == (0.1, 0.2, 0.3, 0.2, 0.2)
    assert design.concurrency == 3 and design.run == run
    # Return to sender has no p: the rule the bound is proven for, the same step.
    assert design.algorithm == dataclasses.replace(base.algorithm, name="generalized_asyncsgd")
    out = tmp_path / "new" / "d.toml"
    write_config_file(design, out, flag="--write-config")
    assert load_config(out) == design
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^--write-config '.*/file/d.toml' cannot be written"):
        write_config_file(design, tmp_path / "file" / "d.toml", flag="--write-config")
