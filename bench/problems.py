"""The benchmark problems P1-P5 of the performance issue, built identically for every library.

Each builder returns a :class:`Case`: the dynamics as an ``nn.Module`` ``func(t, y)`` (torchdiffeq's
convention: ``t`` a 0-dim tensor, ``y`` shaped like ``y0``), the initial state, output times,
tolerances, which gradient modes to time, and (for forward+backward problems) a scalar loss of the
trajectory. Parameters come from a fixed seed, so a float64 copy built with the same seed is the same
model in higher precision -- that copy gives the reference solution and gradient.

Problems:
    P1  toy continuous normalising flow (Chen et al. 2018, "Neural Ordinary Differential Equations";
        the hypernetwork dynamics of torchdiffeq's ``examples/cnf.py``), 2-D, batch 512, with the
        exact trace of the Jacobian written in closed form (no autograd inside ``func``).
    P2  spiral MLP neural ODE (torchdiffeq's ``examples/ode_demo.py``), state 2, hidden 50.
    P3  large non-stiff linear ODE ``y' = c (roll(y, 1) - 2 y + roll(y, -1)) - 0.5 y``, c = 0.25.
    P4  batched Van der Pol oscillators, one period, 200 output times.
    P5  an MLP neural ODE with >= 1e5 parameters, gradients by the continuous adjoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

SEED = 0
PROBLEM_KEYS = ("P1", "P2", "P3", "P4", "P5")


@dataclass
class Case:
    """One benchmark configuration.

    Attributes:
        problem: "P1" ... "P5".
        variant: what distinguishes it inside its problem (e.g. ``"N=1e6"``, ``"mu=25"``).
        func: dynamics ``func(t, y) -> dy/dt`` with ``y``: (*state).
        y0: (*state) initial state.
        t: (T,) output times; ``t[0]`` is the initial time.
        modes: what to time: ``"forward"``, ``"forward_per_sample"``, ``"backprop"``, ``"adjoint"``,
            ``"adjoint_seminorm"``, ``"checkpoint"`` (see :mod:`bench.peers`).
        loss: scalar loss of the trajectory (T, *state), for the gradient modes.
        reference: (T, *state) exact or float64 tight-tolerance solution, if cheaply available (set by
            :func:`bench.reference`).
        reps: timed repetitions per library (large problems take fewer).
        bytes_per_step: minimum memory traffic of one fused dopri5 step (P3's bandwidth figure), or 0.
        exact_solution: returns the (T, *state) exact solution in float64, where one is known.
        reference_tol: rtol = atol of the float64 reference solve (when there is no exact solution).
    """

    problem: str
    variant: str
    func: nn.Module
    y0: Tensor
    t: Tensor
    rtol: float
    atol: float
    modes: tuple[str, ...]
    method: str = "dopri5"
    loss: Callable[[Tensor], Tensor] | None = None
    reps: int = 5
    bytes_per_step: int = 0
    exact_solution: Callable[[], Tensor] | None = None
    reference_tol: float = 1e-10
    reference: Tensor | None = field(default=None, repr=False)
    reference_grad: Tensor | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.problem} {self.variant}"

    @property
    def params(self) -> list[Tensor]:
        """The parameters whose gradient the gradient modes compute (those of ``func``)."""
        return list(self.func.parameters())

    @property
    def needs_grad(self) -> bool:
        return any(mode not in ("forward", "forward_per_sample") for mode in self.modes)


def _generator(offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + offset)


# ----------------------------------------------------------------------------------------------- P1
class HyperNetwork(nn.Module):
    """Time -> the weights ``W, U, B`` of a one-layer planar-flow-like vector field (torchdiffeq's CNF).

    Returns W: (width, d), U: (width, d) gated by a sigmoid, B: (width,).
    """

    def __init__(self, dim: int, hidden: int, width: int):
        super().__init__()
        self.dim, self.width = dim, width
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 3 * width * dim + width))
        # a larger output layer than PyTorch's default init gives the untrained flow the complexity
        # of a trained one (tens of dopri5 steps at rtol 1e-5 on [0, 10]) instead of 2-3 steps
        nn.init.normal_(self.net[4].weight, std=1.0)
        nn.init.normal_(self.net[4].bias, std=1.0)

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        params = self.net(t.reshape(1, 1)).reshape(-1)
        block = self.width * self.dim
        w = params[:block].reshape(self.width, self.dim)
        u = params[block:2 * block].reshape(self.width, self.dim)
        gate = params[2 * block:3 * block].reshape(self.width, self.dim)
        return w, u * torch.sigmoid(gate), params[3 * block:]


class CNFDynamics(nn.Module):
    """``dz/dt = mean_w u_w tanh(w_w . z + b_w)`` and ``dl/dt = tr(df/dz)``, exact and in closed form.

    State y: (batch, d + 1) = [z, l]; the trace is ``mean_w (1 - tanh^2) (w_w . u_w)``.
    """

    def __init__(self, dim: int = 2, hidden: int = 32, width: int = 64):
        super().__init__()
        self.dim = dim
        self.hyper = HyperNetwork(dim, hidden, width)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        w, u, b = self.hyper(t)
        width = w.shape[0]
        h = torch.tanh(y[:, :self.dim] @ w.t() + b)            # (batch, width)
        dz = h @ u / width                                       # (batch, d)
        trace = (1 - h * h) @ (w * u).sum(1, keepdim=True) / width  # (batch, 1)
        return torch.cat([dz, trace], dim=1)


def two_circles(batch: int, gen: torch.Generator) -> Tensor:
    """(batch, 2) points on two noisy concentric circles (radii 1 and 2)."""
    angle = 2 * math.pi * torch.rand(batch, generator=gen, dtype=torch.float64)
    radius = 1.0 + (torch.rand(batch, generator=gen) < 0.5).double() + 0.05 * torch.randn(
        batch, generator=gen, dtype=torch.float64)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)


def cnf_loss(ys: Tensor) -> Tensor:
    """Negative log-likelihood: ``log p(x) = log N(z(1); 0, I) + l(1)``; ys: (T, batch, 3)."""
    z, logdet = ys[-1, :, :2], ys[-1, :, 2]
    log_base = -0.5 * (z * z).sum(1) - math.log(2 * math.pi)
    return -(log_base + logdet).mean()


def make_p1(dtype: torch.dtype, quick: bool) -> list[Case]:
    torch.manual_seed(SEED)
    func = CNFDynamics().to(dtype)
    batch = 32 if quick else 512
    x = two_circles(batch, _generator(1))
    y0 = torch.cat([x, torch.zeros(batch, 1, dtype=torch.float64)], dim=1).to(dtype)
    t = torch.tensor([0.0, 1.0 if quick else 10.0], dtype=dtype)  # t1 = 10 as in torchdiffeq's example
    return [Case("P1", f"batch={batch}", func, y0, t, rtol=1e-5, atol=1e-5, modes=("backprop", "adjoint", "checkpoint"),
                 loss=cnf_loss, reps=2 if quick else 3)]


# ----------------------------------------------------------------------------------------------- P2
SPIRAL_MATRIX = ((-0.1, 2.0), (-2.0, -0.1))


class SpiralMLP(nn.Module):
    """torchdiffeq's ode_demo model: ``f(y) = W2 tanh(W1 y^3 + b1) + b2``, hidden 50; y: (batch, 2)."""

    def __init__(self, hidden: int = 50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        for layer in (self.net[0], self.net[2]):
            nn.init.normal_(layer.weight, std=0.5)
            nn.init.zeros_(layer.bias)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y ** 3)


def spiral_targets(y0: Tensor, t: Tensor) -> Tensor:
    """(T, batch, 2) trajectories of the true spiral ``y' = y^3 A`` (float64, Heun with tiny steps)."""
    a = torch.tensor(SPIRAL_MATRIX, dtype=torch.float64)
    y, out, substeps = y0.double(), [y0.double()], 200
    for t0, t1 in zip(t[:-1].tolist(), t[1:].tolist()):
        h = (t1 - t0) / substeps
        for _ in range(substeps):  # targets only need to be smooth and fixed, not exact
            k1 = y ** 3 @ a
            k2 = (y + h * k1) ** 3 @ a
            y = y + 0.5 * h * (k1 + k2)
        out.append(y)
    return torch.stack(out)


def make_p2(dtype: torch.dtype, quick: bool) -> list[Case]:
    cases = []
    t = torch.linspace(0.0, 2.0, 10, dtype=torch.float64)
    for batch in ((8, 1) if quick else (512, 1)):
        torch.manual_seed(SEED)
        func = SpiralMLP().to(dtype)
        y0 = 2.0 * (torch.rand(batch, 2, generator=_generator(2), dtype=torch.float64) - 0.5)
        target = spiral_targets(y0, t).to(dtype)

        def loss(ys: Tensor, target: Tensor = target) -> Tensor:
            return ((ys - target) ** 2).mean()

        cases.append(Case("P2", f"batch={batch}", func, y0.to(dtype), t.to(dtype), rtol=1e-6, atol=1e-8,
                          modes=("backprop", "forward"), loss=loss, reps=2 if quick else 5))
    return cases


# ----------------------------------------------------------------------------------------------- P3
class DiffusionDecay(nn.Module):
    """``y' = c (roll(y, 1) - 2 y + roll(y, -1)) - 0.5 y`` on a periodic 1-D grid; y: (N,).

    Its eigenvalues ``c (2 cos(2 pi k / N) - 2) - 0.5`` lie in [-0.5 - 4c, -0.5]: non-stiff for c = 0.25.
    """

    def __init__(self, c: float = 0.25, decay: float = 0.5):
        super().__init__()
        self.c, self.decay = c, decay

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.c * (torch.roll(y, 1) - 2 * y + torch.roll(y, -1)) - self.decay * y

    def exact(self, y0: Tensor, t: Tensor) -> Tensor:
        """(T, N) exact solution through the FFT (the operator is circulant), in float64."""
        n = y0.numel()
        freq = torch.arange(n, dtype=torch.float64)
        rate = self.c * (2 * torch.cos(2 * math.pi * freq / n) - 2) - self.decay
        spectrum = torch.fft.fft(y0.double())
        return torch.stack([torch.fft.ifft(spectrum * torch.exp(rate * ti)).real for ti in t.double().tolist()])


def make_p3(dtype: torch.dtype, quick: bool) -> list[Case]:
    cases = []
    for exponent in ((4,) if quick else (6, 7)):
        n = 10 ** exponent
        func = DiffusionDecay()
        y0 = torch.randn(n, generator=_generator(3), dtype=torch.float32).to(dtype)
        t = torch.tensor([0.0, 1.0], dtype=dtype)
        case = Case("P3", f"N=1e{exponent}", func, y0, t, rtol=1e-5, atol=1e-5, modes=("forward",),
                    reps=2 if quick else (3 if exponent <= 6 else 2),
                    bytes_per_step=40 * n * y0.element_size())
        case.exact_solution = lambda func=func, y0=y0, t=t: func.exact(y0, t)
        cases.append(case)
    return cases


# ----------------------------------------------------------------------------------------------- P4
# Periods of the Van der Pol limit cycle (computed once with scipy's DOP853 at rtol 1e-12).
VDP_PERIODS = {2.0: 7.629874, 25.0: 42.595787}


class VanDerPol(nn.Module):
    """``x' = v, v' = mu (1 - x^2) v - x``; y: (batch, 2). Autonomous, so per-row times are harmless."""

    def __init__(self, mu: float):
        super().__init__()
        self.mu = mu

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1 - x * x) * v - x], dim=-1)


def make_p4(dtype: torch.dtype, quick: bool) -> list[Case]:
    cases = []
    batch = 16 if quick else 256
    for mu, period in VDP_PERIODS.items():
        y0 = 4.0 * (torch.rand(batch, 2, generator=_generator(4), dtype=torch.float64) - 0.5)
        span = period * (0.03 if quick else 1.0)
        t = torch.linspace(0.0, span, 20 if quick else 200, dtype=dtype)
        cases.append(Case("P4", f"mu={mu:g}", VanDerPol(mu), y0.to(dtype), t, rtol=1e-5, atol=1e-5,
                          # mu = 2 runs take ~15-90 ms: 7 repetitions steady its medians for little time
                          modes=("forward", "forward_per_sample"), reps=2 if quick or mu > 2 else 7,
                          reference_tol=1e-8))  # 1e-10 costs ~30 s at mu = 25; 1e-8 is ample vs 1e-5
    return cases


# ----------------------------------------------------------------------------------------------- P5
class WideMLP(nn.Module):
    """``f(y) = W3 tanh(W2 tanh(W1 y + b1) + b2) + b3``; y: (batch, dim); dim 32, hidden 300 -> 109 832
    parameters."""

    def __init__(self, dim: int = 32, hidden: int = 300):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, dim))
        with torch.no_grad():  # twice PyTorch's default weights: ~10 dopri5 steps on [0, 5], not 3
            for layer in self.net[::2]:
                layer.weight.mul_(2.0)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def final_state_loss(ys: Tensor) -> Tensor:
    return (ys[-1] ** 2).mean()


def make_p5(dtype: torch.dtype, quick: bool) -> list[Case]:
    torch.manual_seed(SEED)
    func = WideMLP(hidden=32 if quick else 300).to(dtype)
    batch = 8 if quick else 64
    y0 = torch.randn(batch, 32, generator=_generator(5), dtype=torch.float32).to(dtype)
    t = torch.tensor([0.0, 1.0 if quick else 5.0], dtype=dtype)
    n_params = sum(p.numel() for p in func.parameters())
    return [Case("P5", f"params={n_params}", func, y0, t, rtol=1e-5, atol=1e-6,
                 modes=("adjoint", "adjoint_seminorm"), loss=final_state_loss, reps=2 if quick else 3)]


BUILDERS = {"P1": make_p1, "P2": make_p2, "P3": make_p3, "P4": make_p4, "P5": make_p5}


def make_cases(problems: list[str], quick: bool, dtype: torch.dtype = torch.float32) -> list[Case]:
    """The cases of the selected problems (e.g. ``["P1", "P3"]``), in float32 unless told otherwise."""
    unknown = [p for p in problems if p not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown problem(s) {unknown}; choose from {', '.join(PROBLEM_KEYS)}")
    return [case for key in problems for case in BUILDERS[key](dtype, quick)]
