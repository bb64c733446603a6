"""Optuna studies over concurrency and routing, built on :mod:`raysync`."""
