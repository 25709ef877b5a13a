"""Size thresholds shared by the kernel backends and the solvers (no extension import needed)."""

# Up to this many elements, a differentiable linear combination is built from torch's own ops (stack +
# addmm/addmv): their autograd nodes are C++, while a Python autograd.Function costs ~17 us forward and
# ~35 us backward per call, which dominates small-state backprop (measured: 13 / 18 us per stage for the
# native ops at n = 2 and n = 1024). Above it the fused kernel's single pass over memory wins.
NATIVE_GRAD_MAX_NUMEL = 1 << 14
