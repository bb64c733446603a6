"""CLI commands, one module each; see :mod:`raysync.cli`."""
