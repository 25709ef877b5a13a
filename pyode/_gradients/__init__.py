"""How gradients flow through a solve. Each mode owns its loop:

=============  ==========================================  =====================================  =========================
mode           what it differentiates                       memory                                 accuracy of the gradient
=============  ==========================================  =====================================  =========================
backprop       the solver's operations (autograd)          O(steps x stages x graph)              exact for the discrete solve
checkpoint     the same operations, replayed step by step  O(steps x state) + one step's graph    equal to backprop (ACA)
adjoint        the continuous adjoint ODE, solved backward O(state + params): flat in steps       O(tolerance) (Chen et al. 2018)
reversible     asynchronous leapfrog, reconstructed        O(state + params): flat in steps       exact for the ALF solve (MALI)
=============  ==========================================  =====================================  =========================
"""

from pyode._gradients.params import resolve_params

__all__ = ["resolve_params"]
