"""pyode.nn: the review's models as ready ``nn.Module`` s.

- :mod:`~pyode.nn.discretisations`: architectures read as ODE schemes (ResNet = forward Euler, PolyNet,
  RK2/RK4 blocks, LM-ResNet, RevNet, Chang et al.'s Hamiltonian/midpoint/leapfrog, Haber & Ruthotto's
  antisymmetric block) and memory-free training of reversible stacks.
- :mod:`~pyode.nn.continuous`: ``ODEBlock`` (Neural ODE layer) and ``AugmentedNODE``.
- :mod:`~pyode.nn.cnf`: continuous normalising flows and FFJORD.
- :mod:`~pyode.nn.latent`: latent ODE with an ODE-RNN encoder, and a GRU baseline.
- :mod:`~pyode.nn.classifier`: ODE-Net and the ResNet it replaces.
- :mod:`~pyode.nn.train`: a training loop that runs unchanged under DDP.
- :mod:`~pyode.nn.demos`: the CNF demo and the comparisons (``python -m pyode.nn.demos``).

Examples:
    A Neural ODE layer and the ResNet block it is the limit of, on ``(batch, dim)`` features:

    >>> import torch
    >>> from pyode.nn import ODEBlock, ResNetBlock, TimeMLP
    >>> x = torch.randn(8, 2)
    >>> ODEBlock(TimeMLP(2, hidden=16))(x).shape
    torch.Size([8, 2])
    >>> ResNetBlock(torch.nn.Linear(2, 2), h=0.5)(x).shape
    torch.Size([8, 2])
"""

from .classifier import ConvODEField, ODENetClassifier, ResNetClassifier, count_parameters
from .cnf import CNF, FFJORD, divergence_exact, divergence_hutchinson, sample_noise, standard_normal_log_prob
from .continuous import AugmentedNODE, CountingField, ODEBlock, TimeMLP
from .discretisations import (
    AntisymmetricBlock,
    HamiltonianBlock,
    LeapfrogBlock,
    LMResNet,
    LMResNetBlock,
    MidpointBlock,
    PolyNetBlock,
    ResNetBlock,
    ReversibleBlock,
    ReversibleSequence,
    RevNetBlock,
    RK2Block,
    RK4Block,
    RungeKuttaBlock,
    SymmetricLayer,
)
from .latent import GRUDeltaT, LatentODE, ODERNNEncoder, latent_negative_elbo, make_spirals
from .train import FitResult, fit, launch_local_processes

__all__ = [
    "CNF",
    "FFJORD",
    "AntisymmetricBlock",
    "AugmentedNODE",
    "ConvODEField",
    "CountingField",
    "FitResult",
    "GRUDeltaT",
    "HamiltonianBlock",
    "LMResNet",
    "LMResNetBlock",
    "LatentODE",
    "LeapfrogBlock",
    "MidpointBlock",
    "ODEBlock",
    "ODENetClassifier",
    "ODERNNEncoder",
    "PolyNetBlock",
    "RK2Block",
    "RK4Block",
    "ResNetBlock",
    "ResNetClassifier",
    "RevNetBlock",
    "ReversibleBlock",
    "ReversibleSequence",
    "RungeKuttaBlock",
    "SymmetricLayer",
    "TimeMLP",
    "count_parameters",
    "divergence_exact",
    "divergence_hutchinson",
    "fit",
    "latent_negative_elbo",
    "launch_local_processes",
    "make_spirals",
    "run_cnf_demo",
    "sample_noise",
    "standard_normal_log_prob",
]


def run_cnf_demo(out_dir: str = ".", quick: bool = False, **kwargs) -> dict:
    """Train the two-circles CNF demo; see :func:`pyode.nn.demos.run_cnf_demo` (imported lazily, since
    the demos need scikit-learn and matplotlib).

    Args:
        out_dir (str): folder where ``cnf_density.png`` and ``cnf_samples.png`` are written (default ``"."``).
        quick (bool): a few steps on small data, in seconds (default False: up to ``time_limit_s``).
        **kwargs: ``seed`` (0), ``threads`` (1), ``time_limit_s`` (90.0), ``progress`` (True) of
            :func:`pyode.nn.demos.run_cnf_demo`.

    Returns:
        dict: the demo's measurements, e.g. ``"test_nll"`` in nats.

    Examples:
        Trains a model and writes figures (seconds with ``quick=True``), hence the skip:

        >>> from pyode.nn import run_cnf_demo
        >>> results = run_cnf_demo("/tmp/cnf_demo", quick=True)  # doctest: +SKIP
    """
    from .demos import run_cnf_demo as _run

    return _run(out_dir, quick, **kwargs)
