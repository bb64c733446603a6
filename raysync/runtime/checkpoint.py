"""Server checkpoints: atomic, checksummed, loaded without pickle (Ray-free).

A checkpoint is a directory holding three files:

* ``state-<version>.json``: the server's scalars and small structures (counters, router
  and strategy state dicts, evaluations, ...), plain JSON;
* ``arrays-<version>.npz``: every array (model parameters, the base versions of the tasks
  in flight, per-client statistics and random-stream states), plain ``.npz`` read with
  ``allow_pickle=False``;
* ``manifest.json``, written last: format version, the config fingerprint, the name,
  size and SHA-256 of the two files above, and a SHA-256 of the manifest's own body.

Each file is written to a temporary name in the same directory, flushed to disk and moved
into place with :func:`os.replace`; the manifest is replaced only after both data files
are in place, and older data files are deleted after it. A process killed at any point
leaves either the previous checkpoint or the new one, never a mix. Loading verifies sizes
and checksums before parsing anything, then the fingerprint (a hash of the config without
its ``run`` and ``runtime`` sections, plus the model size), and raises
:class:`~raysync.exceptions.CheckpointError` with the reason and the fix.

The content is a nested mapping (a *tree*) of JSON values and numpy arrays; arrays are
stored in the ``.npz`` and referenced from the JSON as ``{"__ndarray__": key}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from raysync._files import atomic_write
from raysync.config import SystemConfig
from raysync.exceptions import CheckpointError
from raysync.runtime._state import PENDING_COLUMNS, SCHEMA_VERSION, STATE_KEYS, Key

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "Checkpoint",
    "check_server_state",
    "config_fingerprint",
    "decode_tree",
    "encode_tree",
    "fingerprint_fields",
    "pack_generators",
    "peek_version",
    "read_checkpoint",
    "unpack_generators",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT = "raysync-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ARRAY_KEY = "__ndarray__"
_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- fingerprint


#: Named facts that are not config paths (the config's own fields are compared path by
#: path under ``"config"``).
_DERIVED_FIELDS = ("num_clients", "num_params", "train")


#: Largest config (JSON bytes) stored with a checkpoint to name a changed field; a larger
#: fleet (every client is listed) is compared by its named facts only.
MAX_STORED_CONFIG_BYTES = 1 << 20


def _bound_config(config: SystemConfig) -> dict[str, Any] | None:
    """The config without ``run`` and ``runtime`` as plain JSON values (None: too large)."""
    data = config.to_dict()
    data.pop("run", None)
    data.pop("runtime", None)
    text = json.dumps(data, default=str)
    return json.loads(text) if len(text) <= MAX_STORED_CONFIG_BYTES else None


def fingerprint_fields(config: SystemConfig, num_params: int | None) -> dict[str, Any]:
    """The facts a checkpoint must agree on with the run resuming it (named in errors).

    Besides a few named facts, ``"config"`` holds the whole config the fingerprint covers,
    so a refused resume names the exact field that changed (e.g.
    ``clients[1].service_time.rate``) with its old and new value.
    """
    fields: dict[str, Any] = {
        "num_clients": config.num_clients,
        "concurrency": config.concurrency,
        "algorithm": config.algorithm.name,
        "routing": config.routing.kind,
        "model": config.model.name,
        "num_params": num_params,
        "dataset": config.data.dataset,
        "train": config.run.train,
        "seed": config.seed,
    }
    bound = _bound_config(config)
    if bound is not None:
        fields["config"] = bound
    return fields


def config_fingerprint(config: SystemConfig, num_params: int | None) -> str:
    """SHA-256 of the config without ``run`` and ``runtime``, plus the model size.

    The run length, evaluation cadence, time scale, timeouts, checkpoint settings and the
    actor layout may change between a run and its resume; everything else (fleet, service
    times, routing, algorithm, data, model, seed, and ``run.train``) may not.
    """
    data = config.to_dict()
    data.pop("run", None)
    data.pop("runtime", None)
    data["num_params"] = num_params
    data["train"] = config.run.train
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_ABSENT = object()


def _flatten(value: Any, path: str, out: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b[0]": 1, "a.b[1]": 2}`` (leaves by config path)."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value:
        for j, item in enumerate(value):
            _flatten(item, f"{path}[{j}]", out)
    else:
        out[path] = value
    return out


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint fields and the resuming run's."""

    def show(value: Any) -> str:
        return "absent" if value is _ABSENT else repr(value)

    def pair(name: str, old: Any, new: Any) -> str:
        return f"{name} {show(old)} (checkpoint) vs {show(new)} (config)"

    if "config" in saved and "config" in current:
        named = [k for k in _DERIVED_FIELDS if k in current]
        diffs = [pair(k, saved.get(k), current[k]) for k in named if saved.get(k) != current[k]]
        old = _flatten(saved["config"], "", {})
        new = _flatten(current["config"], "", {})
        paths = [*new, *(k for k in old if k not in new)]
        diffs += [
            pair(p, old.get(p, _ABSENT), new.get(p, _ABSENT))
            for p in paths
            if old.get(p, _ABSENT) != new.get(p, _ABSENT)
        ]
    else:  # a checkpoint written before the config was stored: the named facts only
        diffs = [
            pair(k, saved.get(k), current[k])
            for k in current
            if k != "config" and saved.get(k) != current[k]
        ]
    shown = 3
    if len(diffs) > shown:
        diffs = [*diffs[:shown], f"and {len(diffs) - shown} more differences"]
    return diffs


# --------------------------------------------------------------------------- trees


def encode_tree(tree: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """Split a nested structure into a JSON-safe tree and its arrays.

    Mappings (string keys), lists, tuples, strings, bools, ints (any size), floats, None,
    numpy scalars and numpy arrays are supported; tuples come back as lists.

    Raises:
        CheckpointError: A value of another type (a bug in the caller).
    """
    arrays: dict[str, np.ndarray] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {_ARRAY_KEY: key}
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise CheckpointError(f"checkpoint keys must be strings, got {k!r}")
                out[k] = walk(v)
            return out
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, str | bool | int | float):
            return value
        raise CheckpointError(f"cannot store a {type(value).__name__} in a checkpoint")

    return walk(tree), arrays


def decode_tree(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Inverse of :func:`encode_tree`.

    Raises:
        CheckpointError: The tree references an array the archive lacks.
    """

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_ARRAY_KEY}:
                key = value[_ARRAY_KEY]
                if key not in arrays:
                    raise CheckpointError(f"checkpoint array {key!r} is missing")
                return arrays[key]
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(tree)


def pack_generators(generators: list[np.random.Generator]) -> np.ndarray:
    """PCG64 states as a ``(k, 6)`` uint64 array: state hi/lo, inc hi/lo, has_uint32, uinteger.

    Raises:
        CheckpointError: A generator is not PCG64.
    """
    out = np.zeros((len(generators), 6), dtype=np.uint64)
    for j, gen in enumerate(generators):
        st = gen.bit_generator.state
        if st.get("bit_generator") != "PCG64":
            raise CheckpointError(
                f"only PCG64 streams are checkpointed, got {st.get('bit_generator')}"
            )
        s, inc = int(st["state"]["state"]), int(st["state"]["inc"])
        out[j] = (s >> 64, s & _MASK64, inc >> 64, inc & _MASK64, st["has_uint32"], st["uinteger"])
    return out


def unpack_generators(packed: np.ndarray, generators: list[np.random.Generator]) -> None:
    """Restore what :func:`pack_generators` returned into existing PCG64 generators."""
    for j, gen in enumerate(generators):
        hi, lo, ihi, ilo, has, uint = (int(v) for v in packed[j])
        gen.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": (hi << 64) | lo, "inc": (ihi << 64) | ilo},
            "has_uint32": has,
            "uinteger": uint,
        }


# --------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(directory: Path, name: str, write: Any) -> dict[str, Any]:
    """Write ``directory/name`` through a temporary file; return its name, size, checksum."""
    path = directory / name
    with atomic_write(path, binary=True, fsync=True) as handle:
        write(handle)
    return {"name": name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _body_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Checkpoint:
    """A loaded checkpoint: the manifest's facts and the decoded state tree.

    Attributes:
        directory: Where it was read from.
        version: Model version at the checkpoint.
        fingerprint: The config fingerprint it was written for.
        fields: The fingerprint's named facts (:func:`fingerprint_fields`).
        state: The decoded state tree (what the server wrote).
    """

    def __init__(
        self,
        directory: Path,
        version: int,
        fingerprint: str,
        fields: dict[str, Any],
        state: dict[str, Any],
    ) -> None:
        self.directory = directory
        self.version = version
        self.fingerprint = fingerprint
        self.fields = fields
        self.state = state

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, version={self.version})"


def write_checkpoint(
    directory: str | Path,
    state: Mapping[str, Any],
    *,
    version: int,
    fingerprint: str,
    fields: Mapping[str, Any],
    keep_previous: bool = False,
) -> Path:
    """Write a checkpoint atomically (see the module docstring).

    Args:
        directory: Checkpoint directory (created if missing).
        state: The tree to store (JSON values and numpy arrays).
        version: Model version (names the data files).
        fingerprint: :func:`config_fingerprint` of the run.
        fields: :func:`fingerprint_fields` of the run.
        keep_previous: Keep the data files of older checkpoints (default: delete them
            once the new manifest is in place).

    Returns:
        The manifest's path.

    Raises:
        CheckpointError: The directory cannot be written.
    """
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tree, arrays = encode_tree(state)
        tag = f"{version:09d}"
        text = json.dumps(tree).encode()
        state_file = _write_atomic(root, f"state-{tag}.json", lambda h: h.write(text))
        arrays_file = _write_atomic(
            root,
            f"arrays-{tag}.npz",
            lambda h: np.savez(h, **arrays),  # type: ignore[arg-type]
        )
        body = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": int(version),
            "created": time.time(),
            "fingerprint": fingerprint,
            "fields": dict(fields),
            "files": {"state": state_file, "arrays": arrays_file},
        }
        manifest = json.dumps({"body": body, "sha256": _body_digest(body)}, indent=1).encode()
        _write_atomic(root, MANIFEST, lambda h: h.write(manifest))
        _fsync_dir(root)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write a checkpoint to {str(root)!r}: {exc}. Check run.checkpoint_dir "
            "(it must be writable on the server's node) and the free disk space"
        ) from exc
    if not keep_previous:
        keep = {state_file["name"], arrays_file["name"]}
        for old in [*root.glob("state-*.json"), *root.glob("arrays-*.npz")]:
            if old.name not in keep:
                old.unlink(missing_ok=True)
    return root / MANIFEST


def _corrupt(root: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(root)!r} is corrupt: {what}; resume from an intact checkpoint "
        "or start the run afresh"
    )


def peek_version(directory: str | Path) -> int | None:
    """The version a checkpoint directory's manifest names, unverified (for messages).

    Returns:
        The model version, or None when the directory holds no readable manifest. Reading
        a checkpoint to resume from goes through :func:`read_checkpoint`, which verifies it.
    """
    try:
        version = json.loads((Path(directory) / MANIFEST).read_bytes())["body"]["version"]
        return int(version)
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None


def peek_fingerprint(directory: str | Path) -> str | None:
    """The config fingerprint a checkpoint's manifest names, unverified (for messages)."""
    try:
        return str(json.loads((Path(directory) / MANIFEST).read_bytes())["body"]["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_checkpoint(
    directory: str | Path,
    *,
    fingerprint: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Read and verify a checkpoint.

    Args:
        directory: The checkpoint directory.
        fingerprint: The resuming run's :func:`config_fingerprint` (None: not checked).
        fields: The resuming run's :func:`fingerprint_fields`, to name what differs.

    Returns:
        The checkpoint, with its state tree decoded.

    Raises:
        CheckpointError: Missing, truncated, corrupt (checksums), of another format, or
            written for a different run (fingerprint).
    """
    root = Path(directory)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"no checkpoint in {str(root)!r} ({MANIFEST} is missing); pass the directory "
            "a run wrote with run.checkpoint_dir"
        )
    try:
        raw = json.loads(manifest_path.read_bytes())
        body = raw["body"]
        if raw["sha256"] != _body_digest(body):
            raise _corrupt(root, f"{MANIFEST} does not match its checksum")
        if body.get("format") != FORMAT:
            raise CheckpointError(f"{str(root)!r} is not a raysync checkpoint")
        if body.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(root)!r} has format version {body.get('format_version')!r}; "
                f"this raysync reads version {FORMAT_VERSION}"
            )
        files = body["files"]
        version = int(body["version"])
        saved_fingerprint = str(body["fingerprint"])
        saved_fields = dict(body["fields"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(root, f"{MANIFEST} is unreadable ({type(exc).__name__}: {exc})") from exc
    for role in ("state", "arrays"):
        entry = files.get(role) if isinstance(files, dict) else None
        if not isinstance(entry, dict) or not {"name", "bytes", "sha256"} <= set(entry):
            raise _corrupt(root, f"{MANIFEST} lacks the {role} file entry")
        path = root / str(entry["name"])
        if path.name != entry["name"] or not path.is_file():
            raise _corrupt(root, f"{entry['name']} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise _corrupt(
                root, f"{path.name} has {size} bytes, expected {entry['bytes']} (truncated?)"
            )
        if _sha256(path) != entry["sha256"]:
            raise _corrupt(root, f"{path.name} does not match its SHA-256 checksum")
    if fingerprint is not None and fingerprint != saved_fingerprint:
        diffs = _differences(saved_fields, fields) if fields is not None else []
        detail = "; ".join(diffs) if diffs else "client specs, data or algorithm settings differ"
        raise CheckpointError(
            f"checkpoint {str(root)!r} was written for a different run: {detail}. Resume "
            "with the config that wrote it (only [run], but not run.train, and [runtime] "
            "may change)"
        )
    try:
        tree = json.loads((root / files["state"]["name"]).read_bytes())
        with np.load(root / files["arrays"]["name"], allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, KeyError) as exc:
        raise _corrupt(root, f"its data cannot be parsed ({type(exc).__name__}: {exc})") from exc
    state = decode_tree(tree, arrays)
    if not isinstance(state, dict):
        raise _corrupt(root, "the state is not a mapping")
    return Checkpoint(root, version, saved_fingerprint, saved_fields, state)


def _where(values: np.ndarray) -> str:
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    return f"{bad} of {values.size} entries are NaN or infinite"


class _Checker:
    """Field-by-field checks of a server state tree; every error names the field."""

    def __init__(self, root: Path, state: Mapping[str, Any]) -> None:
        self.root = root
        self.state = state

    def bad(self, name: str, rule: str, value: Any = None) -> CheckpointError:
        shown = "" if value is None else f", got {_short(value)}"
        return _corrupt(self.root, f"field {name!r} {rule}{shown}")

    def get(self, name: str) -> Any:
        node: Any = self.state
        parts = name.split(".")
        for j, part in enumerate(parts):
            if not isinstance(node, Mapping):
                raise self.bad(".".join(parts[:j]), "must be a mapping", node)
            if part not in node:
                raise _corrupt(self.root, f"the server state lacks field {name!r}")
            node = node[part]
        return node

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise self.bad(name, "must be an integer", value)
        if value < minimum:
            raise self.bad(name, f"must be >= {minimum}", value)
        return int(value)

    def number(self, name: str, *, allow_inf: bool = False, minimum: float = -math.inf) -> float:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise self.bad(name, "must be a number", value)
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            raise self.bad(name, "must be finite", value)
        if value < minimum:
            raise self.bad(name, f"must be >= {minimum:g}", value)
        return value

    def array(
        self,
        name: str,
        shape: tuple[int | None, ...],
        kind: str,
        *,
        finite: bool = True,
        allow_nan: bool = False,
        minimum: float | None = None,
    ) -> np.ndarray:
        """An array of ``shape`` (None: any length) whose dtype kind is in ``kind``."""
        value = self.get(name) if isinstance(name, str) else name
        return self.check_array(name, value, shape, kind, finite, allow_nan, minimum)

    def check_array(
        self,
        name: str,
        value: Any,
        shape: tuple[int | None, ...],
        kind: str,
        finite: bool = True,
        allow_nan: bool = False,
        minimum: float | None = None,
    ) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise self.bad(name, "must be an array", value)
        if value.dtype.kind not in kind:
            names = {"i": "integer", "u": "unsigned integer", "f": "floating-point"}
            wanted = " or ".join(names[k] for k in kind)
            raise self.bad(name, f"must hold {wanted} values, not dtype {value.dtype}")
        if value.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
        ):
            wanted = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise self.bad(name, f"must have shape {wanted}, not {value.shape}")
        if value.dtype.kind == "f" and finite:
            values = value[~np.isnan(value)] if allow_nan else value
            if not np.all(np.isfinite(values)):
                raise self.bad(name, f"must be finite ({_where(values)})")
        if minimum is not None and value.size and value.dtype.kind in "iuf":
            known = value[~np.isnan(value)] if value.dtype.kind == "f" else value
            if known.size == 0:
                return value
            low = known.min()
            if low < minimum:
                raise self.bad(name, f"must be >= {minimum:g} (its smallest entry is {low})")
        return value

    def mapping(self, name: str) -> Mapping[str, Any]:
        value = self.get(name)
        if not isinstance(value, Mapping):
            raise self.bad(name, "must be a mapping", value)
        return value

    def rows(
        self, name: str, columns: tuple[str, ...], *, max_version: int
    ) -> list[list[Any]]:
        """A list of rows, each ``[time, version, numbers...]`` (``columns`` names them).

        The time is finite and >= 0, the version an integer in ``[0, max_version]``, the
        other columns numbers (NaN allowed: a diverged model's loss is a fact to keep).
        """
        value = self.get(name)
        rule = f"must be a list of rows [{', '.join(columns)}]"
        if not isinstance(value, list):
            raise self.bad(name, rule, value)
        for j, row in enumerate(value):
            where = f"{name}[{j}]"
            if not isinstance(row, list) or len(row) != len(columns):
                raise self.bad(where, f"must be a row [{', '.join(columns)}]", row)
            time_, version = row[0], row[1]
            if not _is_number(time_) or not math.isfinite(time_) or time_ < 0:
                raise self.bad(f"{where}.{columns[0]}", "must be a finite number >= 0", time_)
            if not _is_integer(version) or not 0 <= version <= max_version:
                raise self.bad(
                    f"{where}.{columns[1]}", f"must be an integer in [0, {max_version}]", version
                )
            for column, item in zip(columns[2:], row[2:], strict=True):
                if not _is_number(item) or math.isinf(item):
                    raise self.bad(f"{where}.{column}", "must be a number (NaN allowed)", item)
        return value

    def models(self, name: str, num_params: int | None) -> Mapping[str, Any]:
        """A mapping from version (a decimal string) to a model of ``num_params`` floats."""
        value = self.mapping(name)
        if num_params is None:
            if value:
                raise self.bad(name, "must be empty in a run without training", dict(value))
            return value
        for key, model in value.items():
            if not key.isdecimal():
                raise self.bad(name, "must be keyed by model versions", key)
            self.check_array(f"{name}.{key}", model, (num_params,), "f")
        return value

    def finite_tree(self, name: str, value: Any) -> None:
        """Every float array and float inside ``value`` (a state dict) is finite."""
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise self.bad(name, f"must be finite ({_where(value)})")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                self.finite_tree(f"{name}.{key}", item)
        elif isinstance(value, list):
            for j, item in enumerate(value):
                self.finite_tree(f"{name}[{j}]", item)
        elif isinstance(value, float) and not math.isfinite(value):
            raise self.bad(name, "must be finite", value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def check_server_state(
    checkpoint: Checkpoint,
    *,
    num_clients: int,
    num_params: int | None,
    config: SystemConfig | None = None,
) -> dict[str, Any]:
    """Verify that a checkpoint's server state is complete, typed and consistent.

    The checksums prove that the files are the ones written; this proves that what was
    written makes sense for this run, before Ray starts: every field has its type, shape
    and range, parameters and statistics are finite, the counts agree with each other
    (every created task was applied or is pending: ``next_task_id = completions +
    pending``, and each client's pending tasks are its queue length), and the router's
    and the strategy's state dicts load into fresh objects of the config.

    Args:
        checkpoint: A checkpoint from :func:`read_checkpoint`.
        num_clients: ``n`` of the resuming run.
        num_params: Model size of the resuming run (None: queue-only).
        config: The resuming run's config (loads the router's and the strategy's state
            into fresh objects; None: not loaded).

    Returns:
        The state tree, ready for the server.

    Raises:
        CheckpointError: One line naming the first field that is missing, of the wrong
            type or shape, non-finite or inconsistent.
    """
    state = checkpoint.state
    n = num_clients
    c = _Checker(checkpoint.directory, state)
    if Key.SCHEMA in state:
        schema = c.integer(Key.SCHEMA, minimum=1)
        if schema > SCHEMA_VERSION:
            raise c.bad(
                Key.SCHEMA,
                f"is {schema}, newer than this raysync reads ({SCHEMA_VERSION}); upgrade raysync",
            )
    # A key this raysync does not write is a tree from elsewhere or a hand edit: loading
    # it would silently drop what it holds.
    unknown = sorted(str(k) for k in state if k not in STATE_KEYS)
    if unknown:
        raise _corrupt(
            checkpoint.directory,
            f"the server state has field(s) this raysync does not write: "
            f"{', '.join(repr(k) for k in unknown[:5])}{', ...' if len(unknown) > 5 else ''} "
            f"(known: {', '.join(sorted(STATE_KEYS))})",
        )
    version = c.integer(Key.VERSION)
    if version != checkpoint.version:
        raise c.bad(Key.VERSION, f"must equal the manifest's version {checkpoint.version}", version)
    next_task = c.integer(Key.NEXT_TASK_ID)
    c.number(Key.ELAPSED, minimum=0.0)
    ordinals = c.array(Key.ORDINALS, (n,), "iu", minimum=0)
    if int(ordinals.sum()) != next_task:
        raise c.bad(
            Key.ORDINALS, f"must add up to next_task_id = {next_task}, not {ordinals.sum()}"
        )
    c.array(Key.SERVICE_RNG, (n, 6), "u")
    lengths = c.array(Key.SERVICE_PENDING_LEN, (n,), "iu", minimum=0)
    c.array(Key.SERVICE_PENDING, (int(lengths.sum()),), "f", minimum=0.0)
    for key in ("task_id", "client", "base_version", "ordinal"):
        c.array(f"{Key.PENDING}.{key}", (None,), "iu", minimum=0)
    created = c.array(f"{Key.PENDING}.created", (None,), "f", minimum=0.0)
    # A task's service draw is NaN when the run does not emulate service times.
    c.array(f"{Key.PENDING}.sample", (None,), "f", allow_nan=True, minimum=0.0)
    pending = {k: np.asarray(c.get(f"{Key.PENDING}.{k}")) for k in PENDING_COLUMNS}
    sizes = {v.size for v in pending.values()} | {created.size}
    if len(sizes) > 1:
        raise c.bad(Key.PENDING, "columns must have one entry per pending task (lengths differ)")
    ids, clients, bases = pending["task_id"], pending["client"], pending["base_version"]
    if clients.size and clients.max() >= n:
        raise c.bad(f"{Key.PENDING}.client", f"must name clients below n = {n}", int(clients.max()))
    if ids.size and (len(set(ids.tolist())) != ids.size or ids.max() >= next_task):
        raise c.bad(f"{Key.PENDING}.task_id", "must be unique ids below next_task_id")
    if bases.size and bases.max() > version:
        raise c.bad(f"{Key.PENDING}.base_version", f"must not exceed the version {version}")
    # Statistics.
    for key in ("count", "sum_delay", "sum_delay2", "lengths"):
        c.array(f"{Key.BOOK}.{key}", (n,), "iu", minimum=0)
    for key in ("departures", "arrivals", "busy", "compute"):
        c.array(f"{Key.BOOK}.{key}", (n,), "f", minimum=0.0)
    completions = c.integer(f"{Key.BOOK}.completions")
    if c.integer(f"{Key.BOOK}.version") != version:
        raise c.bad(
            f"{Key.BOOK}.version", f"must equal the version {version}", c.get(f"{Key.BOOK}.version")
        )
    c.integer(f"{Key.BOOK}.max_delay")
    c.integer(f"{Key.BOOK}.num_loss")
    c.number(f"{Key.BOOK}.sum_loss")
    c.integer(f"{Key.BOOK}.interval", minimum=1)
    c.integer(f"{Key.BOOK}.next_snapshot")
    meta = c.array(f"{Key.BOOK}.rows_meta", (None, 3), "f", minimum=0.0)
    for key in ("count", "sum_delay", "sum_delay2", "departures", "arrivals", "lengths", "busy"):
        c.array(f"{Key.BOOK}.rows_{key}", (meta.shape[0], n), "iuf", minimum=0.0)
    book_state = c.mapping(Key.BOOK)
    if int(state.get(Key.SCHEMA, 1)) >= 3 or "comm_count" in book_state:
        measured = c.array(f"{Key.BOOK}.comm_count", (n,), "iu", minimum=0)
        if int(measured.sum()) > completions:
            raise c.bad(f"{Key.BOOK}.comm_count", f"must add up to at most {completions} tasks")
        # Sums of clock differences: the split mixes two nodes' clocks, so any sign.
        for key in ("comm_overhead", "comm_downlink", "comm_uplink"):
            c.array(f"{Key.BOOK}.{key}", (n,), "f")
    if completions + ids.size != next_task:
        raise c.bad(
            Key.NEXT_TASK_ID,
            f"must equal the applied tasks ({completions}) plus the pending ones ({ids.size})",
            next_task,
        )
    if int(np.asarray(c.get(f"{Key.BOOK}.count")).sum()) != completions:
        raise c.bad(f"{Key.BOOK}.count", f"must add up to book.completions = {completions}")
    queued = np.bincount(clients.astype(np.int64), minlength=n) if clients.size else np.zeros(n)
    if not np.array_equal(queued, np.asarray(c.get(f"{Key.BOOK}.lengths"))):
        raise c.bad(f"{Key.BOOK}.lengths", "must equal each client's number of pending tasks")
    # Model: the parameters and the models the pending tasks carry (none without training).
    if num_params is not None:
        c.array(Key.PARAMS, (num_params,), "f")
    elif state.get(Key.PARAMS) is not None:
        raise c.bad(Key.PARAMS, "must be null in a run without training", state[Key.PARAMS])
    base = c.models(Key.BASE_PARAMS, num_params)
    if num_params is not None:
        for v in sorted({int(b) for b in bases.tolist()}):
            if str(v) not in base:
                raise c.bad(Key.BASE_PARAMS, f"lacks the model of version {v} (a pending task's)")
    # Entries later schemas added (absent in older checkpoints of the same format).
    schema = int(state.get(Key.SCHEMA, 1))
    if Key.COUNTERS in state:
        for key in c.mapping(Key.COUNTERS):
            c.integer(f"{Key.COUNTERS}.{key}")
    if Key.LAG in state:
        lag = c.get(Key.LAG)
        if not isinstance(lag, list) or len(lag) != 3:
            raise c.bad(Key.LAG, "must be [sum, max, count] of the server's lag", lag)
        for j, part in enumerate(("sum", "max")):
            if not _is_number(lag[j]) or not math.isfinite(lag[j]) or lag[j] < 0:
                raise c.bad(f"{Key.LAG}.{part}", "must be a finite number >= 0", lag[j])
        if not _is_integer(lag[2]) or lag[2] < 0:
            raise c.bad(f"{Key.LAG}.count", "must be an integer >= 0", lag[2])
    if Key.EVALS in state:
        c.rows(
            Key.EVALS,
            ("time", "version", "test_loss", "test_accuracy", "val_loss", "val_accuracy"),
            max_version=version,
        )
    if schema >= 2 or Key.EVAL_PENDING in state:
        rows = c.rows(Key.EVAL_PENDING, ("time", "version", "train_loss"), max_version=version)
        models = c.models(Key.EVAL_PARAMS, num_params)
        if num_params is not None:
            for e in rows:
                if str(e[1]) not in models:
                    raise c.bad(
                        Key.EVAL_PARAMS, f"lacks the model of version {e[1]} (to evaluate)"
                    )
    if Key.NEXT_EVAL_TIME in state:
        c.number(Key.NEXT_EVAL_TIME, allow_inf=True, minimum=0.0)
    if Key.EVAL_SECONDS in state:
        c.number(Key.EVAL_SECONDS, minimum=0.0)
    run_name = state.get(Key.RUN_NAME)
    if run_name is not None and (not isinstance(run_name, str) or not run_name.strip()):
        raise c.bad(Key.RUN_NAME, "must be a non-empty string", run_name)
    if Key.TENSORBOARD_STEP in state:
        # TensorBoard steps are model versions: the resumed run continues from this one.
        step = c.integer(Key.TENSORBOARD_STEP)
        if step != version:
            raise c.bad(Key.TENSORBOARD_STEP, f"must equal the version {version}", step)
    router_state = c.mapping(Key.ROUTER)
    strategy_state = state.get(Key.STRATEGY)
    if strategy_state is not None:
        if num_params is None:
            raise c.bad(Key.STRATEGY, "must be null in a run without training", strategy_state)
        strategy_state = c.mapping(Key.STRATEGY)
        c.finite_tree(Key.STRATEGY, strategy_state)
    if config is not None:
        _load_components(c, config, router_state, strategy_state, num_params)
    return dict(state)


def _load_components(
    c: _Checker,
    config: SystemConfig,
    router_state: Any,
    strategy_state: Any,
    num_params: int | None,
) -> None:
    """Load the router's and the strategy's state into fresh objects (naming the field)."""
    from raysync.routing import make_router
    from raysync.simulation.engine import run_generators
    from raysync.strategies import make_strategy

    gens = run_generators(config.seed, config.num_clients)
    router = make_router(config.routing)
    router.bind(config.num_clients, gens.router)
    try:
        router.load_state_dict(dict(router_state))
    except Exception as exc:  # any failure: the state does not fit this router
        raise c.bad(
            "router", f"does not load into the {config.routing.kind} router ({exc})"
        ) from exc
    if num_params is None or strategy_state is None:
        return
    strategy = make_strategy(config.algorithm)
    strategy.bind(config.num_clients, router.routing_probabilities())
    try:
        strategy.load_state_dict(dict(strategy_state))
    except Exception as exc:
        raise c.bad(
            "strategy", f"does not load into the {config.algorithm.name} strategy ({exc})"
        ) from exc
