"""Training as optimal control: Pontryagin's maximum principle, (E-)MSA and YOPO.

* PMP machinery for residual and fixed-step ODE networks: :class:`Hamiltonian`,
  :func:`state_pass`, :func:`costate_pass`, :func:`pmp_gradients` (Li, Chen, Tai & E, "Maximum
  Principle Based Algorithms for Deep Learning", JMLR 18(165), 2018).
* :class:`MSATrainer`: basic MSA (``rho=0``) and extended MSA (``rho>0``) from the same paper.
* :class:`YOPOTrainer`, :class:`PGDTrainer`, :func:`pgd_attack`, :func:`robust_accuracy`: adversarial
  training "You Only Propagate Once" (Zhang, Zhang, Lu, Zhu & Dong, NeurIPS 2019) and its PGD-k baseline.
* :func:`run_msa_demo`, :func:`run_yopo_demo`: the sin(x) toy and the digits experiment.

Examples:
    The costate pass of a residual network gives backprop's parameter gradient:

    >>> import torch
    >>> from torch import nn
    >>> from pyode.control import ResidualNet, costate_pass, pmp_gradients, state_pass, terminal_costate
    >>> net = ResidualNet([nn.Sequential(nn.Linear(3, 3), nn.Tanh()) for _ in range(4)], 0.25).double()
    >>> x0, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    >>> def loss(x_final, y):
    ...     return 0.5 * (x_final.mean(dim=1) - y) ** 2
    >>> states = state_pass(net, x0)
    >>> grads = pmp_gradients(net, states, costate_pass(net, states, terminal_costate(loss, states[-1], y)))
    >>> loss(net(x0), y).sum().backward()
    >>> all(torch.allclose(grads[p], p.grad) for p in net.parameters())
    True
"""

from .demos import run_msa_demo, run_yopo_demo
from .msa import MSATrainer, augmented_hamiltonian
from .pmp import (
    ControlSystem,
    FixedStepODENet,
    Hamiltonian,
    ResidualNet,
    costate_pass,
    discrete_hamiltonian,
    pmp_gradients,
    state_pass,
    terminal_costate,
    total_cost,
)
from .yopo import (
    PGDTrainer,
    YOPOTrainer,
    pgd_attack,
    pgd_step,
    project_perturbation,
    random_perturbation,
    robust_accuracy,
    yopo_step,
)

__all__ = [
    "ControlSystem",
    "FixedStepODENet",
    "Hamiltonian",
    "MSATrainer",
    "PGDTrainer",
    "ResidualNet",
    "YOPOTrainer",
    "augmented_hamiltonian",
    "costate_pass",
    "discrete_hamiltonian",
    "pgd_attack",
    "pgd_step",
    "pmp_gradients",
    "project_perturbation",
    "random_perturbation",
    "robust_accuracy",
    "run_msa_demo",
    "run_yopo_demo",
    "state_pass",
    "terminal_costate",
    "total_cost",
    "yopo_step",
]
