"""Validation helpers shared by the numeric modules and the CLI.

Messages name the field, the rule and the value; file errors name the file.
"""

from __future__ import annotations

import math
import os
import pkgutil
import re
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from raysync.exceptions import ConfigError

_T = TypeVar("_T")

#: Largest ``routing.horizon`` and ``routing.zeta2``: the adaptive router's limit
#: (``raysync.routing.adaptive``), which ``raysync.config`` refuses at load rather than at
#: the router's first re-optimisation, mid-run. Here, not in either, so both read one value
#: (the router cannot import the config module: the config imports the routers).
MAX_ROUTER_VALUE = 1e300

#: Smallest routing probability: below it (subnormal floats from ~2.2e-308) products and
#: ratios of ``p`` lose their digits, and the staleness of that client came out 20 % off at
#: ``p = 5e-324``. The same floor as service-time rates (``raysync.config``).
MIN_PROBABILITY = 1e-300
#: The rule's wording, shared by every check of a routing vector.
PROBABILITY_RULE = "must be >= 1e-300 (every client reachable, a normal float64)"


def float32_overflow(arr: np.ndarray) -> Any:
    """A finite value of ``arr`` that a cast to float32 would turn into infinity, or None.

    Checked on the values as given (wider floats only; NaN and infinity are not counted),
    so a message can show the value the user gave, not the ``inf`` of the cast.

    Args:
        arr: Any array.

    Returns:
        The largest such value (the smallest if only negatives overflow), or None.
    """
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= 4 or not arr.size:
        return None
    limit = arr.dtype.type(np.finfo(np.float32).max)
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return None
    top, bottom = finite.max(), finite.min()
    if top > limit:
        return top
    return bottom if bottom < -limit else None


def first_line(exc: BaseException) -> str:
    """The first line of an error's text, ``""`` when it has none (messages stay one line)."""
    return (str(exc).strip().splitlines() or [""])[0]


def tensor_to_numpy(tensor: Any, what: str, error: type[Exception], *, verb: str) -> np.ndarray:
    """A torch tensor's values as a numpy array, or one line saying why it has none.

    Floating tensors narrower than float32 (``bfloat16``, ``float16``, the ``float8``
    types) are widened to float32 first: numpy has no bfloat16 or float8, and float32
    holds every value of those types exactly, so nothing is lost. Gradients are detached
    and GPU tensors copied to the CPU.

    Args:
        tensor: A ``torch.Tensor``.
        what: The value's name as the message should start (``"loader: x_train"``).
        error: The exception type to raise.
        verb: How the fix starts: ``"return"`` for a user's function, ``"pass"`` for an
            argument.

    Raises:
        error: A nested or sparse tensor, a tensor on the ``meta`` device (a shape
            without values), or a dtype numpy cannot hold (e.g. quantized).
    """
    import torch  # already imported: ``tensor`` is one of its tensors

    dtype = tensor.dtype
    if tensor.is_nested:
        raise error(
            f"{what} is a nested tensor (rows of different shapes); {verb} one dense "
            "tensor of shape (N, ...)"
        )
    shape = tuple(tensor.shape)  # a nested tensor has none: it raises
    if tensor.layout != torch.strided:
        # numpy has no sparse arrays; densifying silently could need all the memory there is
        raise error(
            f"{what} is a sparse tensor (layout {tensor.layout}, dtype {dtype}, shape "
            f"{shape}); {verb} a dense tensor (call .to_dense() on it)"
        )
    if tensor.is_meta:
        raise error(
            f"{what} is a tensor on the 'meta' device (dtype {dtype}, shape {shape}), which "
            f"has a shape but no values; {verb} it with its data, on the CPU or a GPU"
        )
    try:
        if dtype.is_floating_point and dtype.itemsize < 4:
            tensor = tensor.float()
        return np.asarray(tensor.numpy(force=True))
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        reason = first_line(exc) or type(exc).__name__
        raise error(
            f"{what} is a {dtype} tensor on {tensor.device}, which numpy cannot hold "
            f"({reason}); {verb} a float, integer or bool tensor"
        ) from exc


def check_probabilities(p: np.ndarray, name: str = "p") -> None:
    """Refuse an entry of a routing vector below :data:`MIN_PROBABILITY` (or NaN).

    Args:
        p: The routing probabilities, shape ``(n,)``.
        name: How the message names the vector (e.g. ``"routing p"``).

    Raises:
        ConfigError: One line naming the first such entry and its value.
    """
    j = first_index(~(p >= MIN_PROBABILITY))
    if j is not None:
        raise ConfigError(f"{name}[{j}] {PROBABILITY_RULE}, got {float(p[j])!r}")

__all__ = [
    "check_probabilities",
    "float32_overflow",
    "MIN_PROBABILITY",
    "PROBABILITY_RULE",
    "bound_constants_problem",
    "check_input_dir",
    "check_number",
    "check_output_dir",
    "check_output_file",
    "check_reference",
    "describe_os_error",
    "describe_typed_number",
    "format_probability",
    "name_column",
    "import_object",
    "read_text_file",
]

_REFERENCE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

_LAYERS_ABOVE = ("tuning", "cluster")

#: How user code reaches Ray's worker processes (appended to import failures).
SHIP_CODE_HINT = (
    "put its folder on PYTHONPATH (run from that folder), or on Ray ship it with "
    "runtime_env working_dir/py_modules (see cluster/README.md)"
)


def check_reference(name: str, value: object) -> str:
    """Check that ``value`` looks like ``"package.module:function"`` (not imported).

    Args:
        name: Field name used in the message (``"model.factory"``).
        value: The reference.

    Returns:
        The reference.

    Raises:
        ConfigError: Not a string of the form ``module.path:attribute``.
    """
    if not isinstance(value, str) or not _REFERENCE.match(value):
        raise ConfigError(
            f"{name} must look like 'package.module:function', got {value!r}"
        )
    return value


def _add_working_directory() -> None:
    """Let references resolve against the current directory, as Ray's workers do.

    ``python -m`` puts the current directory on ``sys.path`` but a console script such
    as ``raysync`` does not, while Ray adds the driver's current directory to its local
    workers' path: appending it (last, so it never shadows an installed package) makes
    the driver find what the workers will find.
    """
    import sys

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def import_object(name: str, ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """Resolve ``"package.module:function"`` to the callable it names.

    A callable is returned unchanged (workloads built in code need no import path). The
    module is looked up on ``sys.path`` and then in the current directory.

    Args:
        name: What the reference is, for messages (``"model factory"``).
        ref: ``"package.module:attr"`` (``attr`` may be dotted) or a callable.

    Returns:
        The callable.

    Raises:
        ConfigError: Malformed reference, module that cannot be imported (the message
            carries the import error and how to ship user code to Ray workers),
            missing attribute, or an attribute that is not callable.
    """
    if callable(ref):
        return ref
    check_reference(name, ref)
    module_name, _, attr = ref.partition(":")
    if module_name.split(".")[0] in _LAYERS_ABOVE:
        # The core never imports the layers above it, not even by a user's reference.
        raise ConfigError(
            f"{name} {ref!r} names a module of {module_name.split('.')[0]!r}, a layer above "
            "raysync; put the factory in your own module"
        )
    _add_working_directory()
    try:
        # pkgutil.resolve_name parses exactly "package.module:attr.path"
        obj: Any = pkgutil.resolve_name(ref)
    except AttributeError as exc:
        raise ConfigError(
            f"{name} {ref!r}: module {module_name!r} has no attribute {attr!r}"
        ) from exc
    except SystemExit as exc:  # would end the command silently, even with exit code 0
        raise ConfigError(
            f"{name} {ref!r}: importing module {module_name!r} called sys.exit({exc.code!r}); "
            "a module must not exit on import"
        ) from None
    except Exception as exc:  # any error while importing user code is the user's
        raise ConfigError(
            f"{name} {ref!r} cannot be imported: {type(exc).__name__}: {exc}; "
            f"{SHIP_CODE_HINT}"
        ) from exc
    if not callable(obj):
        raise ConfigError(f"{name} {ref!r} must name a callable, got {type(obj).__name__}")
    return obj


def format_probability(p: float) -> str:
    """A routing probability for the tables of analyze, simulate, validate and optimize.

    Four decimals, like every other column, down to 0.001; below that two significant
    digits, so a fleet of 20,000 uniform clients shows ``5e-05``, not ``0.0000`` (or a
    rounded ``0.0001``).

    Args:
        p: A probability in [0, 1].

    Returns:
        At most 7 characters, e.g. ``0.2500``, ``0.0012``, ``5e-05``, ``0.00012``.
    """
    if p == 0 or p >= 1e-3:
        return f"{p:.4f}"
    return f"{p:.2g}"


def name_column(
    names: Sequence[str | None] | None, rows: Sequence[int]
) -> tuple[str, list[str]]:
    """The ``name`` column of a per-client table, when the config names its clients.

    The tables of validate, analyze, simulate, optimize and run number the clients; a
    fleet described as named tiers or sites (``[[clients]] name``) is read by name.

    Args:
        names: Every client's ``name`` (``None``: unnamed), or ``None`` for a fleet
            given without a config (``analyze --mu``).
        rows: The client indices the table shows.

    Returns:
        ``(header, cells)``: the header cell and one cell per row, left-aligned to the
        widest shown name (``-`` for an unnamed client) and each ending in one space;
        ``("", ["", ...])`` when no client has a name.
    """
    if names is None or not any(names):
        return "", [""] * len(rows)
    shown = [names[i] or "-" for i in rows]
    width = max([4, *map(len, shown)])
    return f"{'name':<{width}} ", [f"{name:<{width}} " for name in shown]


#: How Python spells a non-finite float; any other text that float() reads as inf
#: ("1e309") was a finite number too large for a float.
_SPELLS_NON_FINITE = re.compile(r"^\s*[+-]?(?:inf(?:inity)?|nan)\s*$", re.IGNORECASE)


def describe_typed_number(text: str) -> str:
    """The text of a number as typed, for a message refusing it as not finite.

    ``float("1e309")`` is ``inf``, so a message quoting the parsed value would say
    "got inf" about a number the user never wrote as such.

    Args:
        text: What was typed, e.g. ``"1e309"`` or ``"nan"``.

    Returns:
        ``"'1e309' (beyond the float range, about 1.8e308)"`` for a number too large for
        a float, else the quoted text (``"'nan'"``).
    """
    if _SPELLS_NON_FINITE.match(text) or not math.isinf(_as_float(text)):
        return repr(text)
    return f"{text!r} (beyond the float range, about 1.8e308)"


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def bound_constants_problem(L: float, sigma2: float, M2: float, A: float) -> str | None:  # noqa: N803
    """Why positive bound constants are unusable in float64, or None.

    The bound (docs/theory.md section 3) multiplies them: ``4 A / K`` and
    ``2 L^2 V S Dbar eta^2`` with ``V = sigma^2 + 2 M^2``; ``2 L V S`` and ``4 A / K`` must
    stay above 0. One rule for :class:`raysync.objectives.ProblemConstants` and the
    config's ``routing.constants`` (checked at load, where torch is not imported).

    Returns:
        The rule broken (``"overflow ..."``/``"underflow ..."``), or None when usable.
    """
    noise = sigma2 + 2.0 * M2
    if not all(math.isfinite(x) for x in (4.0 * A, noise, 2.0 * L * L * noise)):
        return (
            "overflow the float range in the bound (4 A and 2 L^2 (sigma2 + 2 M2) must stay "
            "below 1.8e308)"
        )
    if L * noise < 1e-150 or A < 1e-150:
        return (
            "underflow the float range in the bound (L (sigma2 + 2 M2) and A must be >= "
            "1e-150)"
        )
    return None


def check_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite, positive number.

    Args:
        name: Field name used in the message.
        value: The value to check (Python or numpy number; bools are refused).
        allow_zero: Accept 0 (the rule becomes ``>= 0``).

    Raises:
        ConfigError: The value is not a number, not finite, or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {number!r}")
    if allow_zero and number < 0:
        raise ConfigError(f"{name} must be >= 0, got {number!r}")
    if not allow_zero and number <= 0:
        raise ConfigError(f"{name} must be > 0, got {number!r}")
    return number


def _reason(exc: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` -> ``permission denied``."""
    text = exc.strerror or type(exc).__name__
    return text[:1].lower() + text[1:]


def read_text_file(path: str | os.PathLike[str], what: str, *, max_bytes: int) -> str:
    """Read a UTF-8 text file, turning every way it can fail into one clear line.

    Args:
        path: The file.
        what: What the file is, for the message (e.g. ``"config file"``).
        max_bytes: Refuse files larger than this (a config is small; this keeps a
            wrong path such as a data set from filling the memory).

    Returns:
        The text, without a leading UTF-8 byte-order mark if the file starts with one.

    Raises:
        ConfigError: The path does not exist, is a directory or another non-regular file
            (a FIFO or a device would block or never end), cannot be read, is larger than
            ``max_bytes``, or is not UTF-8. The message names the path.
    """
    shown = repr(os.fspath(path))
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {shown} does not exist") from exc
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL in the path
        reason = _reason(exc) if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"{what} {shown} cannot be read: {reason}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {shown} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {shown} is not a regular file")
    if info.st_size > max_bytes:
        raise ConfigError(
            f"{what} {shown} is {info.st_size:,} bytes, more than the {max_bytes:,} allowed"
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {shown} cannot be read: {_reason(exc)}") from exc
    if len(raw) > max_bytes:
        raise ConfigError(f"{what} {shown} is more than the {max_bytes:,} bytes allowed")
    try:
        # A leading byte-order mark (Windows editors write one) is dropped: TOML parsers
        # would otherwise reject it as an invalid statement on line 1.
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {shown} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start})"
        ) from exc


def _dir_problem(directory: Path) -> str | None:
    """Why files cannot be written under ``directory`` (created if missing), or None."""
    probe = directory
    while True:
        try:
            info = probe.stat()
        except (FileNotFoundError, NotADirectoryError):
            if probe.is_symlink():
                # mkdir(parents=True) would stop on it with a bare "file exists"
                return f"{str(probe)!r} is a broken symbolic link"
            parent = probe.parent
            if parent == probe:
                return None
            probe = parent
            continue
        except OSError as exc:
            return f"{str(probe)!r}: {_reason(exc)}"
        if not stat.S_ISDIR(info.st_mode):
            if probe == directory:
                return "it is an existing file, not a directory"
            return f"{str(probe)!r} is a file, not a directory"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"permission denied on {str(probe)!r}"
        try:
            # What access() cannot tell (root is allowed everything; /proc, /sys and
            # some mounts refuse new files anyway): an unnamed temporary file (O_TMPFILE
            # where the file system has it) that is gone when closed.
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as exc:
            return f"{str(probe)!r} does not take new files: {_reason(exc)}"
        return None


def first_index(mask: NDArray[np.bool_]) -> int | None:
    """Position of the first ``True`` of a 1-D boolean array, for a message naming it.

    Args:
        mask: Shape ``(n,)``, e.g. ``~np.isfinite(values)`` or ``values <= 0``.

    Returns:
        The smallest ``i`` with ``mask[i]``, or None when no entry is set.
    """
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None

def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """Check that ``path`` can be (or already is) a directory to write into.

    Nothing is created. A missing directory is fine when its nearest existing ancestor
    is a writable directory (the command creates it).

    Args:
        path: The directory.
        flag: The option that named it, for the message (e.g. ``"--out"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` is empty, holds a NUL, is an existing file, sits under a
            file, or cannot be written.
    """
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise ConfigError(f"{flag} must be a directory path, got {text!r}")
    if Path(text).is_symlink() and not Path(text).exists():
        # mkdir would fail on it later with a bare "file exists"
        raise ConfigError(f"{flag} {text!r} is a broken symbolic link, not a directory")
    problem = _dir_problem(Path(text))
    if problem is not None:
        raise ConfigError(f"{flag} {text!r} cannot be used as a directory: {problem}")
    return Path(text)


def check_output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """Check that ``path`` names a file that can be written (its folder may be missing).

    Raises:
        ConfigError: ``path`` is empty, holds a NUL, is a directory, a device or a pipe,
            or ends with a path separator, or its folder cannot be created or written.
    """
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise ConfigError(f"{flag} must be a file path, got {text!r}")
    target = Path(text)
    if target.is_dir():
        raise ConfigError(f"{flag} {text!r} is a directory, not a file")
    if text.endswith(("/", os.sep)):
        # Path() drops the slash, so "out/new/" would be written as a file named "new".
        raise ConfigError(f"{flag} {text!r} ends with a path separator: give a file path")
    if target.exists() and not target.is_file():
        # A device or a pipe (/dev/full, /dev/null): outputs are replaced atomically, and
        # replacing a device node with a regular file would break it for everyone.
        raise ConfigError(f"{flag} {text!r} is not a regular file")
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{flag} {text!r} is not writable: permission denied")
    problem = _dir_problem(target.parent)
    if problem is not None:
        folder = str(target.parent)
        problem = problem.replace("it is an existing file", f"{folder!r} is a file")
        raise ConfigError(f"{flag} {text!r} cannot be written: {problem}")
    return target


def check_not_input(output: str | os.PathLike[str], flag: str, config: str | os.PathLike[str],
                    what: str = "config") -> None:
    """Refuse an output file that is the command's input config (the same file by inode).

    Raises:
        ConfigError: ``output`` exists and is ``config`` (or a link to it).
    """
    target, source = Path(output), Path(config)
    if target.exists() and source.exists() and target.samefile(source):
        raise ConfigError(
            f"{flag} {os.fspath(output)!r} is CONFIG itself: the {what} would replace it "
            "(its comments and layout lost); write it elsewhere"
        )


def describe_os_error(exc: OSError | UnicodeError) -> str:
    """One line for an OS or decoding error that escaped a command, naming the path."""
    if isinstance(exc, UnicodeDecodeError):
        return f"cannot decode text as {exc.encoding}: {exc.reason} at byte {exc.start}"
    if isinstance(exc, UnicodeError):
        return f"text cannot be encoded: {exc}"
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(repr(os.fsdecode(n)) for n in names)
    reason = _reason(exc)
    return f"{where}: {reason}" if where else reason


def check_input_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """Check that ``path`` is an existing, readable directory.

    Raises:
        ConfigError: ``path`` is empty, holds a NUL, does not exist, is a file, or cannot
            be listed.
    """
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise ConfigError(f"{flag} must be a directory path, got {text!r}")
    try:
        info = os.stat(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"{flag} {text!r} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"{flag} {text!r} cannot be used: {_reason(exc)}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{flag} {text!r} is a file, not a directory")
    if not os.access(text, os.R_OK | os.X_OK):
        raise ConfigError(f"{flag} {text!r} cannot be read: permission denied")
    return Path(text)


def name_the_flags(given: Mapping[str, object], build: Callable[[], _T]) -> _T:
    """``build()``, with a refusal of a config field that a flag set naming the flag.

    A config built from a file plus command-line overrides reports its fields by config
    path (``run.num_updates``); when the value came from ``--num-updates``, the line
    says so, as argparse does for a flag it parses itself.

    Args:
        given: Config path -> the value its flag gave (None: the flag was not given).
            The flag is the path's last part with dashes (``run.num_updates`` ->
            ``--num-updates``).
        build: Makes the config (raises :class:`ConfigError` on a bad value).

    Raises:
        ConfigError: From ``build``, prefixed with ``argument FLAG:`` when it is about a
            field a flag set.
    """
    try:
        return build()
    except ConfigError as exc:
        message = str(exc)
        for field, value in given.items():
            if value is not None and re.match(rf"{re.escape(field)}\b(?![.\[])", message):
                flag = "--" + field.rsplit(".", 1)[-1].replace("_", "-")
                raise ConfigError(f"argument {flag}: {message}") from exc
        raise


def same_directory(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one directory (relative ones from the current directory)."""
    return Path(a).resolve() == Path(b).resolve()


def check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``.

    The library's one rule and message for integer arguments (``bool`` is refused:
    ``True`` is an ``int`` to Python, never a count to a user); the config has its own,
    which names the field by its config path.

    Raises:
        ConfigError: ``name must be an integer >= minimum`` (or ``in [minimum, maximum]``),
            with the value given.
    """
    rule = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer {rule}, got {value!r}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise ConfigError(f"{name} must be an integer {rule}, got {number}")
    return number
