"""The inline wire format of models and payloads (raysync/runtime/_backend.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from raysync.runtime._backend import TaskReply, TaskSpec, from_wire, reply_from_wire, to_wire


def test_round_trip_is_bit_exact_for_every_float32_pattern() -> None:
    rng = np.random.default_rng(3)
    # random bit patterns cover signed zeros, subnormals, infinities and NaN payloads
    bits = rng.integers(0, 2**32, size=4099, dtype=np.uint64).astype(np.uint32)
    vector = bits.view(np.float32)
    wire = to_wire(vector)
    assert isinstance(wire, bytes) and len(wire) == 4 * vector.size
    back = from_wire(wire)
    assert back is not None and back.dtype == np.float32 and back.shape == vector.shape
    np.testing.assert_array_equal(back.view(np.uint32), bits)


def test_strided_and_float64_inputs_travel_as_their_float32_values() -> None:
    base = np.arange(20, dtype=np.float32)
    strided = base[::2]  # not contiguous
    got = from_wire(to_wire(strided))
    np.testing.assert_array_equal(got, base[::2])
    doubles = np.array([0.1, 1e-3, 3.0])
    got = from_wire(to_wire(doubles))
    np.testing.assert_array_equal(got, doubles.astype(np.float32))


def test_decoded_vector_is_read_only_and_shares_the_bytes() -> None:
    wire = to_wire(np.ones(8, dtype=np.float32))
    got = from_wire(wire)
    assert got is not None and not got.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 2.0


def test_none_and_arrays_pass_through_from_wire_unchanged() -> None:
    assert from_wire(None) is None
    array = np.zeros(3, dtype=np.float32)
    assert from_wire(array) is array  # a model read from the object store


def test_bytes_of_no_whole_float_are_refused() -> None:
    with pytest.raises(ValueError):
        from_wire(b"\x00" * 6)


def test_reply_decodes_only_its_payload() -> None:
    payload = np.array([1.5, -2.0, 0.25], dtype=np.float32)
    wire = (7, 3, 2, 0, to_wire(payload), 0.5, 32, 0.01, 0.009, 1.0, 1.01, 0.99, 1.02)
    reply = reply_from_wire(pickle.loads(pickle.dumps(wire)))
    assert isinstance(reply, TaskReply)
    np.testing.assert_array_equal(reply.payload, payload)
    assert reply[:4] == (7, 3, 2, 0) and tuple(reply[5:]) == wire[5:]
    queue_only = reply_from_wire((7, 3, 2, 0, None, float("nan"), 0, 0.1, 0.0, 1.0, 1.1, 0.9, 1.2))
    assert queue_only.payload is None


def test_call_arguments_and_replies_pack_without_pickling() -> None:
    """A task's fields and a reply are lists of numbers and bytes: Ray's msgpack path
    takes them whole (a tuple would go to its pickle fallback, measured 40 us a call)."""
    from ray._raylet import MessagePackSerializer

    from raysync.runtime.actors import _batch_replies, _reply

    task = TaskSpec(7, 3, 2, 0, 1.5, 1.25, float("nan"), 4)
    payload = np.array([1.5, -2.0], dtype=np.float32)
    reply = _reply(task, payload, 0.5, 32, 0.01, 0.009, 1.0, 1.01, 0.99)
    for value in (list(task), reply, _batch_replies([reply, reply], 0.98), [b"model"]):
        pickled: list[object] = []

        def fallback(obj: object, pickled: list[object] = pickled) -> int:
            pickled.append(obj)
            return len(pickled) - 1

        MessagePackSerializer.dumps(value, fallback)
        assert pickled == [], f"{value!r} needs pickling"
    # and the reply decodes to the task's fields and payload
    got = reply_from_wire(reply)
    assert (got.task_id, got.client_id, got.base_version, got.attempt) == (7, 3, 2, 0)
    np.testing.assert_array_equal(got.payload, payload)
    # the check can fail: a tuple is pickled
    pickled_tuple: list[object] = []
    MessagePackSerializer.dumps((1, 2.0), lambda o: pickled_tuple.append(o) or 0)
    assert pickled_tuple == [(1, 2.0)]
