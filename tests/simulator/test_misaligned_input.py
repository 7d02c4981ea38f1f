"""A parameter vector that is float64 but not aligned (np.frombuffer at an odd offset, arrays that
Dask or another serializer hands over) is evaluated like any other, not refused with an empty error."""

from __future__ import annotations

import numpy as np

import pybridge


def test_a_misaligned_vector_is_evaluated(bundled) -> None:
    raw = bytearray(8 * 2 + 1)
    x = np.frombuffer(raw, dtype=np.float64, offset=1, count=2)
    x[...] = [0.0, 0.0] if x.flags.writeable else x  # frombuffer of a bytearray is writeable
    assert not x.flags.aligned
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=2) as sim:
        assert sim(x) == 1.0
        assert sim.value_and_grad(x)[0] == 1.0
        assert [o.value for o in sim.evaluate([x, x])] == [1.0, 1.0]
    with pybridge.Pool([bundled("pybridge-rosenbrock")], workers=2, n_params=2) as pool:
        assert list(pool.map(pool, [x, x, x])) == [1.0, 1.0, 1.0]
