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
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from raysync.config import SystemConfig
from raysync.exceptions import CheckpointError

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


def fingerprint_fields(config: SystemConfig, num_params: int | None) -> dict[str, Any]:
    """The facts a checkpoint must agree on with the run resuming it (named in errors)."""
    return {
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


def config_fingerprint(config: SystemConfig, num_params: int | None) -> str:
    """SHA-256 of the config without ``run`` and ``runtime``, plus the model size.

    The run length, evaluation cadence, time scale, timeouts, checkpoint settings and the
    actor layout may change between a run and its resume; everything else (fleet, service
    times, routing, algorithm, data, model, seed) may not.
    """
    data = config.to_dict()
    data.pop("run", None)
    data.pop("runtime", None)
    data["num_params"] = num_params
    data["train"] = config.run.train
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    path = directory / name
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
        diffs = []
        if fields is not None:
            diffs = [
                f"{key} {saved_fields.get(key)!r} (checkpoint) vs {fields[key]!r} (config)"
                for key in fields
                if saved_fields.get(key) != fields[key]
            ]
        detail = "; ".join(diffs) if diffs else "client specs, data or algorithm settings differ"
        raise CheckpointError(
            f"checkpoint {str(root)!r} was written for a different run: {detail}. Resume "
            "with the config that wrote it (only [run] and [runtime] may change)"
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


def check_server_state(
    checkpoint: Checkpoint, *, num_clients: int, num_params: int | None
) -> dict[str, Any]:
    """Verify that a checkpoint's server state is complete and shaped for this run.

    Args:
        checkpoint: A checkpoint from :func:`read_checkpoint`.
        num_clients: ``n`` of the resuming run.
        num_params: Model size of the resuming run (None: queue-only).

    Returns:
        The state tree, ready for the server.

    Raises:
        CheckpointError: A missing entry or an array of the wrong shape.
    """
    state = checkpoint.state
    root = checkpoint.directory

    def bad(what: str) -> CheckpointError:
        return _corrupt(root, what)

    required = (
        "version",
        "next_task_id",
        "elapsed",
        "pending",
        "ordinals",
        "service_rng",
        "service_pending",
        "service_pending_len",
        "router",
        "book",
    )
    missing = [key for key in required if key not in state]
    if missing:
        raise bad(f"the server state lacks {', '.join(missing)}")
    n = num_clients
    try:
        if np.asarray(state["ordinals"]).shape != (n,):
            raise bad(f"'ordinals' is not one entry per client (n={n})")
        if np.asarray(state["service_rng"]).shape != (n, 6):
            raise bad(f"'service_rng' is not one stream per client (n={n})")
        lengths = np.asarray(state["service_pending_len"])
        if lengths.shape != (n,) or int(lengths.sum()) != np.asarray(state["service_pending"]).size:
            raise bad("the pending service draws do not add up")
        book = state["book"]
        for key in ("count", "sum_delay", "sum_delay2", "departures", "arrivals", "lengths"):
            if np.asarray(book[key]).shape != (n,):
                raise bad(f"statistics array {key!r} is not one entry per client (n={n})")
        rows = np.asarray(book["rows_meta"])
        if (
            rows.ndim != 2
            or rows.shape[1] != 3
            or np.asarray(book["rows_count"]).shape
            != (
                rows.shape[0],
                n,
            )
        ):
            raise bad("the statistics snapshots are malformed")
        pending = state["pending"]
        sizes = {np.asarray(pending[k]).size for k in pending}
        if len(sizes) > 1:
            raise bad("the pending tasks' columns differ in length")
        clients = np.asarray(pending["client"])
        if clients.size and (clients.min() < 0 or clients.max() >= n):
            raise bad("a pending task names a client out of range")
        ids = np.asarray(pending["task_id"])
        if ids.size and (
            len(set(ids.tolist())) != ids.size or ids.max() >= int(state["next_task_id"])
        ):
            raise bad("the pending task ids are not unique ids below next_task_id")
        if num_params is not None:
            params = state.get("params")
            if params is None or np.asarray(params).shape != (num_params,):
                raise bad(f"the model is not a vector of {num_params} parameters")
            base = state.get("base_params") or {}
            for version in {int(v) for v in np.asarray(pending["base_version"]).tolist()}:
                if np.asarray(base.get(str(version), ())).shape != (num_params,):
                    raise bad(f"the model of version {version} (a pending task's) is missing")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"the server state is malformed ({type(exc).__name__}: {exc})") from exc
    return state
