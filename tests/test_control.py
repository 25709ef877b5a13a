"""pyode.control: PMP identities, (E-)MSA descent, YOPO's PMP identity, PGD, bad input, quick demos."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pyode.control import (
    FixedStepODENet,
    MSATrainer,
    PGDTrainer,
    ResidualNet,
    YOPOTrainer,
    augmented_hamiltonian,
    costate_pass,
    discrete_hamiltonian,
    pgd_attack,
    pgd_step,
    pmp_gradients,
    random_perturbation,
    robust_accuracy,
    run_msa_demo,
    run_yopo_demo,
    state_pass,
    terminal_costate,
    yopo_step,
)
from pyode.control.demos import sin_toy_data, sin_toy_embed, sin_toy_loss, sin_toy_network, toy_gradient_run

ROUNDING = {"rtol": 1e-10, "atol": 1e-12}  # float64 rounding, with room for summation order


pytestmark = pytest.mark.usefixtures("one_thread")


def regression_loss(x_final, y):
    return 0.5 * ((x_final.sum(dim=1) - y) ** 2)


def running_cost(x, layer):
    """A state-dependent cost plus weight decay, so the PMP checks exercise the L term too."""
    return 0.05 * (x ** 2).sum(dim=1) + 1e-3 * sum((p ** 2).sum() for p in layer.parameters())


class TimeDependentField(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim + 1, dim)

    def forward(self, s, x):
        time = torch.full_like(x[:, :1], s)
        return torch.tanh(self.linear(torch.cat([x, time], dim=1)))


def make_system(kind):
    torch.manual_seed(0)
    if kind == "residual":
        layers = [nn.Sequential(nn.Linear(3, 3), nn.Tanh()) for _ in range(6)]
        return ResidualNet(layers, step_size=0.3, running_cost=running_cost).double()
    return FixedStepODENet(TimeDependentField(3), 0.0, 1.5, num_steps=5, method=kind,
                           running_cost=running_cost).double()


def autograd_reference(system, x0, y):
    """Backprop through the plain forward pass: (∂J/∂x_t for every t, ∂J/∂θ)."""
    states = [x0.clone().requires_grad_(True)]
    cost = torch.zeros((), dtype=x0.dtype)
    for t in range(system.num_steps):
        cost = cost + system.step_running_cost(t, states[-1]).sum()
        nxt = system.step(t, states[-1])
        nxt.retain_grad()
        states.append(nxt)
    cost = cost + regression_loss(states[-1], y).sum()
    system.zero_grad()
    cost.backward()
    return [x.grad for x in states], {p: p.grad.clone() for p in system.parameters()}


@pytest.mark.parametrize("kind", ["residual", "euler", "rk4"])
def test_pmp_costate_and_hamiltonian_gradient_match_backprop(kind):
    system = make_system(kind)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(7, generator=generator, dtype=torch.float64)
    states = state_pass(system, x0)
    costates = costate_pass(system, states, terminal_costate(regression_loss, states[-1], y))
    state_grads, param_grads = autograd_reference(system, x0, y)
    for p_t, dj_dx in zip(costates, state_grads):
        torch.testing.assert_close(p_t, -dj_dx, **ROUNDING)  # p_t = −∂J/∂x_t
    pmp = pmp_gradients(system, states, costates)
    assert set(pmp) == set(param_grads)
    for param, grad in param_grads.items():
        assert grad.abs().max() > 1e-6  # the comparison is not vacuous
        torch.testing.assert_close(pmp[param], grad, **ROUNDING)  # −∇_θ H = ∇_θ J


def test_residual_discrete_hamiltonian_is_euler_step_of_continuous_one():
    system = make_system("residual")
    x, p = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    continuous = system.hamiltonian(2)(x, p)  # p·f − L
    expected = (p * x).sum(1) + system.step_size * continuous
    torch.testing.assert_close(discrete_hamiltonian(system, 2, x, p), expected, **ROUNDING)


def test_residual_hamiltonian_gradients_carry_a_factor_h():
    """∇_θ H_t = h ∇_θ H for the Euler step, so pmp_gradients = −h Σ_batch ∇_θ H(x_t, p_{t+1}, θ_t)."""
    system, t = make_system("residual"), 2
    x, p = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    params = list(system.layers[t].parameters())
    continuous = torch.autograd.grad(system.hamiltonian(t)(x, p).sum(), params)
    discrete = torch.autograd.grad(discrete_hamiltonian(system, t, x, p).sum(), params)
    for g_continuous, g_discrete in zip(continuous, discrete):
        assert g_continuous.abs().max() > 1e-3  # not vacuous
        torch.testing.assert_close(g_discrete, system.step_size * g_continuous, **ROUNDING)


def test_msa_trainer_default_lbfgs_iters_is_the_documented_setting():
    trainer = MSATrainer(sin_toy_network(seed=1), sin_toy_loss)
    assert trainer.lbfgs_iters == 10 and trainer.rho == 1.0  # docs/control_results.md: ρ = 1, 10 L-BFGS iterations


def toy_problem():
    data = sin_toy_data(seed=0)
    return sin_toy_network(seed=1), sin_toy_embed(data[0]), data[1]


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_one_msa_iteration_decreases_the_toy_loss(rho):
    net, x0, y = toy_problem()
    trainer = MSATrainer(net, sin_toy_loss, rho=rho, lbfgs_iters=5)
    before = trainer.step(x0, y)
    with torch.no_grad():
        after = sin_toy_loss(net(x0), y).mean().item()
    assert before == pytest.approx(sin_toy_loss(toy_problem()[0](x0), y).mean().item())
    assert after < 0.7 * before


def test_emsa_trains_an_ode_net_with_shared_parameters():
    system = make_system("midpoint")
    system.running_cost = None
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    y = torch.sin(x0.sum(1))
    # θ is shared by all steps, so moving it shifts every step at once: this needs a larger ρ than
    # the residual toy (ρ = 1 overshoots here; see docs/control_results.md).
    trainer = MSATrainer(system, regression_loss, rho=10.0, lbfgs_iters=5)
    losses = [trainer.step(x0, y) for _ in range(3)]
    assert losses[2] < losses[1] < 0.5 * losses[0]


def test_augmented_hamiltonian_equals_hamiltonian_at_the_current_controls():
    """At θ = θ^k both E-MSA penalties vanish, so H̃_t = H_t there."""
    net, x0, y = toy_problem()
    states = state_pass(net, x0)
    costates = costate_pass(net, states, terminal_costate(sin_toy_loss, states[-1], y))
    t = 4
    augmented = augmented_hamiltonian(net, t, states[t], costates[t + 1], states[t + 1], costates[t], rho=3.0)
    torch.testing.assert_close(augmented, discrete_hamiltonian(net, t, states[t], costates[t + 1]), **ROUNDING)


def digits_like_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU()),
                         nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 4)).double()


def digits_like_batch(seed=0, batch=10):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 4, 4, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, 4, (batch,), generator=generator)


def test_yopo_first_layer_update_equals_full_backprop_pgd_step():
    model = digits_like_model()
    x, y = digits_like_batch()
    eps, step = 0.1, 0.03
    trainer = YOPOTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), eps, m=1, n=1, step_size=step)
    eta = random_perturbation(x, eps, generator=torch.Generator().manual_seed(5))
    costate, _ = trainer.full_pass(x, eta, y)
    # The PMP identity: ∇_η [p · f_0(x + η)] with p = ∂ℓ/∂z equals backprop's ∇_η ℓ.
    eta_var = eta.clone().requires_grad_(True)
    (full_grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x + eta_var), y), eta_var)
    (layer_grad,) = torch.autograd.grad((costate * model[0](x + eta_var)).sum(), eta_var)
    torch.testing.assert_close(layer_grad, full_grad, **ROUNDING)
    yopo_eta = yopo_step(model[0], x, eta, costate, eps, step)
    pgd_eta = pgd_step(model, x, eta, y, eps, step)
    assert not torch.equal(yopo_eta, eta)
    torch.testing.assert_close(yopo_eta, pgd_eta, rtol=0, atol=1e-15)


def test_pgd_attack_increases_the_loss_and_respects_the_ball():
    model = digits_like_model()
    x, y = digits_like_batch(batch=32)
    eps = 0.1
    x_adv = pgd_attack(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0))
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(model(x_adv), y) > loss(model(x), y) + 0.01
    assert (x_adv - x).abs().max() <= eps + 1e-12
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_trainers_count_passes_and_learn():
    model = digits_like_model(seed=1)
    x, y = digits_like_batch(seed=2, batch=64)
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    yopo = YOPOTrainer(model, torch.optim.Adam(model.parameters(), 1e-2), 0.05, m=2, n=3)
    pgd_model = digits_like_model(seed=1)
    pgd = PGDTrainer(pgd_model, torch.optim.Adam(pgd_model.parameters(), 1e-2), 0.05, steps=4)
    first_yopo = yopo.train_epoch(batches)
    first_pgd = pgd.train_epoch(batches)
    for _ in range(15):
        last_yopo, last_pgd = yopo.train_epoch(batches), pgd.train_epoch(batches)
    assert yopo.full_passes == 16 * 2 * 2  # m per batch
    assert yopo.first_layer_passes == 16 * 2 * 2 * (3 + 1)  # n updates + one weight gradient per pass
    assert pgd.full_passes == 16 * 2 * (4 + 1)  # k + 1 per batch
    assert last_yopo < first_yopo and last_pgd < first_pgd
    clean, robust = robust_accuracy(model, x, y, 0.05, steps=5)
    assert 0 <= robust <= clean <= 1


def test_bad_input_raises_clear_errors():
    net, x0, y = toy_problem()
    states = state_pass(net, x0)
    with pytest.raises(ValueError, match="rho"):
        MSATrainer(net, sin_toy_loss, rho=-0.1)
    with pytest.raises(ValueError, match="terminal costate"):
        costate_pass(net, states, torch.zeros(len(y), 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_steps"):
        costate_pass(net, states[:-1], torch.zeros_like(states[-1]))
    with pytest.raises(ValueError, match="costate"):
        discrete_hamiltonian(net, 0, x0, torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="samples"):
        MSATrainer(net, sin_toy_loss).step(x0, y[:-1])
    widening = ResidualNet([nn.Linear(1, 5)]).double()  # x0 not embedded: (n, 1) + (n, 5) broadcasts
    with pytest.raises(ValueError, match="keep the state shape"):
        state_pass(widening, x0[:, :1])
    with pytest.raises(TypeError, match="ControlSystem"):
        MSATrainer(nn.Linear(5, 5), sin_toy_loss)
    model = digits_like_model()
    x, label = digits_like_batch()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    for kwargs, name in (({"m": 0}, "m"), ({"n": 0}, "n"), ({"eps": 0.0}, "eps"), ({"eps": -1.0}, "eps"),
                         ({"first_layer_depth": 4}, "first_layer_depth")):
        with pytest.raises(ValueError, match=name):
            YOPOTrainer(model, sgd, **{"eps": 0.1, **kwargs})
    with pytest.raises(TypeError, match="nn.Sequential"):
        YOPOTrainer(nn.Linear(16, 4), sgd, 0.1)
    with pytest.raises(ValueError, match="eps"):
        pgd_attack(model, x, label, eps=0.0)
    with pytest.raises(ValueError, match="steps"):
        PGDTrainer(model, sgd, 0.1, steps=0)
    with pytest.raises(ValueError, match="costate"):
        yopo_step(model[0], x, torch.zeros_like(x), torch.zeros(10, 5, dtype=torch.float64), 0.1, 0.01)


def test_quick_demos_write_pngs_and_report(tmp_path):
    msa = run_msa_demo(str(tmp_path), quick=True)
    assert {run["method"] for run in msa["runs"]} == {"E-MSA", "MSA", "SGD", "Adagrad", "Adam"}
    assert all(math.isfinite(run["losses"][0]) for run in msa["runs"])
    yopo = run_yopo_demo(str(tmp_path), quick=True)
    passes = {s["method"]: s["full_passes"] for s in yopo["summary"]}
    assert passes["YOPO-3-5"] * 11 == passes["PGD-10"] * 3
    assert set(yopo["target"]) == {"YOPO-3-5", "YOPO-5-3"}
    for key in ("figure",):
        assert (tmp_path / msa[key].split("/")[-1]).stat().st_size > 1000
        assert (tmp_path / yopo[key].split("/")[-1]).stat().st_size > 1000


def _emsa_bench():
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "emsa_seeds.py").is_file():
        pytest.skip("bench/ is not part of this checkout")
    if str(root) not in sys.path:
        sys.path.append(str(root))  # appended: an installed pyode still wins over the source folder
    from bench import emsa_seeds

    return emsa_seeds


@pytest.mark.parametrize("name, lr", [("SGD", 1.0), ("Adagrad", 0.3), ("Adam", 0.1)])
def test_emsa_bench_batched_rate_search_matches_torch_optim(name, lr):
    """The bench searches learning rates on stacked copies of the toy; each copy must train exactly like
    torch.optim on its own. float64: the two differ only in summation order (~1e-16 per step), which 10 steps
    of a Lipschitz map cannot lift anywhere near 1e-11."""
    bench = _emsa_bench()
    pairs = [(0, 1), (123, 4)]
    batched = bench.batched_trajectories(name, pairs, lr, 10)
    for (data_seed, net_seed), losses in zip(pairs, batched):
        reference = toy_gradient_run(name, lr, 10, sin_toy_data(data_seed), net_seed=net_seed)["losses"]
        assert reference[-1] < 0.5 * reference[0]  # it trains, so the comparison is not of constants
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(reference), rtol=1e-11, atol=0)


def test_emsa_bench_quick_run_is_consistent(tmp_path):
    bench = _emsa_bench()
    bench.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "emsa_seeds.json").read_text())  # strict JSON: "never" is null
    assert (tmp_path / "emsa_seeds.png").stat().st_size > 1000
    assert "| method | never reach" in (tmp_path / "emsa_seeds.md").read_text()
    cfg, methods = bench.QUICK, results["methods"]
    assert sum(label.startswith("E-MSA") for label in methods) >= 1
    for name in bench.OPTIMISERS:
        tuning = results["baseline_tuning"][name]
        rates = tuning["rates"]
        nan = [[math.nan if v is None else v for v in tuning["grid"][f"{d},{n}"]] for d, n in cfg.tuning_pairs]
        chosen_key = bench.selection_key([row[rates.index(tuning["chosen"])] for row in nan])
        assert all(chosen_key <= bench.selection_key([row[i] for row in nan]) for i in range(len(rates)))
        for label in (f"{name} (tuned lr={tuning['chosen']:g})", f"{name} (per-pair oracle lr)"):
            assert len(methods[label]) == len(cfg.pairs)
            for record in methods[label]:
                # the single torch.optim run reaches the threshold at the iteration the batched search found
                grid_iterations = tuning["grid"][f"{record['pair'][0]},{record['pair'][1]}"]
                assert record["iterations"] == grid_iterations[rates.index(record["lr"])]
