"""The generic training loop: single process, and 2 gloo processes under DDP giving the same parameters."""

import pytest
import torch

from pyode.nn.cnf import CNF
from pyode.nn.continuous import TimeMLP
from pyode.nn.train import fit, launch_local_processes

pytestmark = pytest.mark.usefixtures("one_thread")


STEPS, BATCH = 3, 16


def make_problem():
    """A float64 CNF with a fixed-step solver (so DDP and one process agree to rounding) and its data."""
    torch.manual_seed(0)
    model = CNF(TimeMLP(2, hidden=8).double(), dim=2, method="rk4", options={"step_size": 0.25})
    data = torch.randn(40, 2, dtype=torch.float64) * torch.tensor([1.0, 0.3], dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    return model, data, optimizer


def negative_log_likelihood(model, x):
    return -model(x).mean()


def train(model, data, optimizer):
    return fit(model, negative_log_likelihood, data, optimizer, steps=STEPS, batch_size=BATCH, seed=3,
               progress=False)


def ddp_worker(rank, world_size, out_path):
    model, data, optimizer = make_problem()
    result = train(model, data, optimizer)
    if rank == 0:
        torch.save({"params": model.state_dict(), "losses": result.losses}, out_path)


def test_ddp_on_two_processes_matches_single_process_on_combined_batch(tmp_path):
    model, data, optimizer = make_problem()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    single = train(model, data, optimizer)
    out_path = tmp_path / "ddp.pt"
    launch_local_processes(ddp_worker, 2, str(out_path))
    ddp = torch.load(out_path)
    assert single.steps == STEPS and len(ddp["losses"]) == STEPS
    for name, value in model.state_dict().items():
        assert not torch.allclose(value, initial[name])  # training moved every parameter
        torch.testing.assert_close(ddp["params"][name], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single.losses), rtol=1e-10, atol=0)


def test_fit_reduces_the_loss_and_validates_arguments():
    model, data, optimizer = make_problem()
    result = fit(model, negative_log_likelihood, data, optimizer, steps=12, batch_size=20, progress=False)
    assert result.steps == 12
    assert sum(result.losses[-3:]) < sum(result.losses[:3])
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, negative_log_likelihood, data, optimizer, steps=1, batch_size=0)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        fit(model, negative_log_likelihood, data, optimizer, steps=1, batch_size=41)
