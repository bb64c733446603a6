"""raysync: asynchronous federated learning on Ray, tuned by queueing theory."""

__version__ = "0.1.0"
