"""Per-sample step sizes: each batch row its own time and step size."""

import numpy as np
import pytest
import scipy.integrate
import torch

import pyode

MU = torch.tensor([2.0, 2.0, 25.0, 25.0], dtype=torch.float64)


def van_der_pol(t, y):
    assert t.shape == (y.shape[0],)  # every row its own time
    x, v = y[:, 0], y[:, 1]
    return torch.stack([v, MU * (1 - x * x) * v - x], -1)


def test_rows_match_scipy_and_take_fewer_steps_than_joint_stepping():
    y0 = torch.tensor([[2.0, 0.0]] * 4, dtype=torch.float64)
    t = torch.linspace(0, 8, 17, dtype=torch.float64)
    sol = pyode.solve(van_der_pol, y0, t, rtol=1e-8, atol=1e-8, options={"per_sample": True})
    joint = pyode.solve(lambda t, y: van_der_pol(t.expand(4), y), y0, t, rtol=1e-8, atol=1e-8)
    for row in range(4):
        mu = float(MU[row])
        ref = scipy.integrate.solve_ivp(lambda s, y, mu=mu: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0, 8), [2, 0],
                                        method="DOP853", rtol=1e-12, atol=1e-12, t_eval=t.numpy()).y.T
        assert np.abs(sol.ys[:, row].numpy() - ref).max() < 1e-5
    per_row = sol.stats.per_sample_accepted + sol.stats.per_sample_rejected
    assert int(per_row.sum()) < 4 * joint.stats.n_steps  # the mild rows no longer pay for the stiff ones
    assert int(per_row[:2].max()) < joint.stats.n_steps


def test_reverse_time_and_bad_input():
    y0 = torch.tensor([[2.0, 0.0]] * 4, dtype=torch.float64)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    back = pyode.odeint(van_der_pol, y0, t, rtol=1e-9, atol=1e-9, options={"per_sample": True})
    ref = pyode.odeint(lambda t, y: van_der_pol(t.expand(4), y), y0, t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(back, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="per_sample"):
        pyode.odeint(lambda t, s: s, (y0, y0), t, options={"per_sample": True})
    with pytest.raises(ValueError, match="per_sample"):
        pyode.odeint(van_der_pol, y0, t, options={"per_sample": True, "jump_t": [0.5]})
