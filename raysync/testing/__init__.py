"""Reusable test suites every router, strategy and service time must pass.

The suites live in :mod:`raysync.testing.contracts`, which imports pytest; import it
from tests only. Subclass a contract in a ``Test*`` class and define its factory method::

    from raysync.testing.contracts import RouterContract

    class TestMyRouter(RouterContract):
        def make_router(self, num_clients):
            return MyRouter()
"""

__all__: list[str] = []
