"""Smoke test of bench/stiff_node.py at a tiny size: the stiff neural ODE takes training steps through kvaerno5
(the loss falls), after which the model is stiff: dopri5 runs out of steps on it where kvaerno5 does not."""

import pytest
import torch

import pyode
from bench import stiff_node
from pyode.errors import MaxStepsError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stiff_node_trains_with_kvaerno5_where_dopri5_fails():
    t, data, s = stiff_node.make_data(6)
    # the scaled data are O(1) with each species' maximum 1
    torch.testing.assert_close(data.abs().amax(0), torch.ones(3, dtype=torch.float64))
    model = stiff_node.StiffNODE(stiff_node.rate_scale(s)).double()
    record = stiff_node.train(model, t, data, "kvaerno5", 3, 2e-2, "backprop")
    assert record["failure"] is None and len(record["losses"]) == 3
    assert record["losses"][-1] < record["losses"][0]
    with torch.no_grad():
        stiff = pyode.solve(model, data[0], t, method="kvaerno5", **stiff_node.TOL).stats
        assert stiff.n_accepted < 500
        with pytest.raises(MaxStepsError):
            pyode.odeint(model, data[0], t, method="dopri5", options={"max_num_steps": 500}, **stiff_node.TOL)
