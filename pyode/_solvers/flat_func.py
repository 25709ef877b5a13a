"""The user's ``func(t, y)`` seen by the solvers: a flat (n,) state, forward time, counted calls."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from pyode._kernels.autograd import NUMPY_DTYPES
from pyode._solvers.perturb import Perturb, accepts_perturb, nudge
from pyode.solution import SolverStats

_MAX_NUDGED = 256  # nudged times remembered for func's perturb keyword (each is used by the next few calls)
# A time of a dtype in NUMPY_DTYPES is handed to func as a CPU 0-dim tensor over a fresh NumPy scalar array:
# ~0.4 us less per call than torch.scalar_tensor, a tenth of what the C++ loop spends around a small func.


class FlatFunc:
    """Wraps ``func(t, y)`` so solvers work on one contiguous (n,) vector whatever ``y0`` was.

    Handles a tuple ``y0`` (split on the way in, concatenated on the way out), a complex ``y0`` (the flat
    state holds real pairs: ``torch.view_as_real``; ``func`` sees complex views), decreasing time (the
    solver integrates ``s = -t`` forward and the derivative flips sign: torchdiffeq's approach), the
    time dtype, and counts evaluations into ``stats.nfe``. Every output is checked for type, shape and
    device, because a wrong one would otherwise surface as a cryptic kernel error; an output of another
    floating dtype than ``y0`` is cast to it (torchdiffeq stores ``func``'s result in ``y0``'s dtype).

    Args:
        func: user function ``func(t, y) -> dy/dt``.
        shapes: the shapes of the state tensors (one entry for a plain tensor ``y0``).
        is_tuple: whether the user passed a tuple ``y0``.
        dtype, device: of the state (a complex dtype for a complex ``y0``; the flat state is then real).
        t_dtype: dtype of the 0-dim ``t`` tensors handed to ``func``.
        reverse: integrate in decreasing time.
    """

    def __init__(self, func: Callable, shapes: Sequence[torch.Size], is_tuple: bool, dtype: torch.dtype,
                 device: torch.device, t_dtype: torch.dtype, reverse: bool, stats: SolverStats):
        self.func, self.shapes, self.is_tuple = func, [torch.Size(s) for s in shapes], is_tuple
        self.dtype, self.device, self.t_dtype, self.reverse, self.stats = dtype, device, t_dtype, reverse, stats
        self.is_complex = dtype.is_complex
        # Entries of the flat (real) state per component: a complex number takes two.
        self.sizes = [s.numel() * (2 if self.is_complex else 1) for s in self.shapes]
        self.shape_args = tuple(self.shapes[0])  # a plain tuple: Tensor.view(tuple) beats view(torch.Size)
        self._time_options = {"dtype": t_dtype, "device": device}
        self._numpy_time = NUMPY_DTYPES.get(t_dtype) if torch.device(device).type == "cpu" else None
        # Complex states take the structured path (real pairs <-> complex views) everywhere.
        self.structured = is_tuple or self.is_complex
        self.pass_perturb = accepts_perturb(func)
        self._nudged: dict[float, Perturb] = {}
        self._counter = "nfe"  # the SolverStats field a call counts in (backward_counting: "nfe_backward")

    @contextlib.contextmanager
    def backward_counting(self):
        """Within the block, calls count as backward evaluations (``stats.nfe_backward``): a gradient method that
        replays steps through this function (checkpoint, reversible) is counted where it belongs."""
        previous, self._counter = self._counter, "nfe_backward"
        try:
            yield
        finally:
            self._counter = previous

    def nudge(self, s: float, direction: float) -> float:
        """Solver time one ulp of the time dtype after (``direction`` +1) or before (-1) ``s``: evaluating
        ``func`` there sees only the piece of ``f`` on that side of a discontinuity at ``s``. A ``func``
        with a ``perturb`` keyword is told which side (:class:`Perturb`) when it is called there."""
        moved = nudge(s, direction, self.t_dtype)
        if self.pass_perturb:
            if len(self._nudged) >= _MAX_NUDGED:
                self._nudged.clear()
            self._nudged[moved] = Perturb.NEXT if direction > 0 else Perturb.PREV
        return moved

    def _count(self) -> None:
        """One evaluation, counted where it belongs (``stats.nfe``, or ``nfe_backward`` in backward_counting)."""
        if self._counter == "nfe":
            self.stats.nfe += 1
        else:
            self.stats.nfe_backward += 1

    def _call_user(self, s: float, y):
        """``func`` at solver time ``s`` on ``y`` in the user's structure (counted)."""
        self._count()
        if self.pass_perturb:
            return self.func(self.time_tensor(s), y, perturb=self._nudged.get(s, Perturb.NONE))
        return self.func(self.time_tensor(s), y)

    def time_tensor(self, s: float) -> Tensor:
        """The user's time for solver time ``s`` (0-dim tensor, filled on the device: no host-to-device copy;
        each call a fresh tensor, so a func may keep the ones it gets)."""
        if self._numpy_time is not None and not torch.compiler.is_compiling():
            return torch.from_numpy(np.array(-s if self.reverse else s, dtype=self._numpy_time))
        return torch.scalar_tensor(-s if self.reverse else s, **self._time_options)

    def unflatten(self, y: Tensor) -> Tensor | tuple[Tensor, ...]:
        """(..., n) -> the user's structure, with leading dims kept."""
        lead = tuple(y.shape[:-1])
        parts = torch.split(y, self.sizes, dim=-1) if self.is_tuple else (y,)
        if self.is_complex:
            out = tuple(torch.view_as_complex(p.reshape(lead + tuple(s) + (2,))) for p, s in zip(parts, self.shapes))
        else:
            out = tuple(p.reshape(lead + tuple(s)) for p, s in zip(parts, self.shapes))
        return out if self.is_tuple else out[0]

    def __call__(self, s: float, y: Tensor) -> Tensor:
        """dy/ds at solver time ``s`` for the flat state ``y`` (n,); returns a contiguous (n,) tensor."""
        if not self.structured:
            return self.call_shaped(s, y.view(self.shape_args)).view(-1)
        flat = self._flatten_output(self._call_user(s, self.unflatten(y)))
        return -flat if self.reverse else flat

    def call_shaped(self, s: float, y: Tensor) -> Tensor:
        """The hot path for a plain-tensor state: ``y`` already has the user's shape; returns the
        derivative, checked, contiguous, in the user's shape (in solver time)."""
        out = self._call_user(s, y)
        if type(out) is not Tensor or out.shape != self.shapes[0] or out.dtype != self.dtype \
                or out.device != self.device:
            out = self._check_output(0, out, self.shapes[0])
        if not out.is_contiguous():
            out = out.contiguous()
        return -out if self.reverse else out

    def shaped_caller(self) -> Callable[[float, Tensor], Tensor]:
        """:meth:`call_shaped` as one closure for the loops' hot path (a plain-tensor state only).

        Where nothing but ``func`` itself varies between calls (forward time, no ``perturb`` keyword, a CPU time
        dtype NumPy has, not under torch.compile), the closure inlines ``_call_user``'s call and ``time_tensor``:
        the same calls, counts and checks, ~0.5 us less per call, which the C++ loop pays around every small
        ``func`` (``bench/callback_cost.py``)."""
        if self.structured:
            raise ValueError("shaped_caller: the state is a tuple or complex; call the FlatFunc itself")
        np_time = self._numpy_time
        if self.reverse or self.pass_perturb or np_time is None or torch.compiler.is_compiling():
            return self.call_shaped
        func, shape, dtype, count = self.func, self.shapes[0], self.dtype, self._count
        from_numpy, np_array, check = torch.from_numpy, np.array, self._check_output

        def call(s: float, y: Tensor) -> Tensor:
            count()
            out = func(from_numpy(np_array(s, dtype=np_time)), y)
            if type(out) is not Tensor or out.shape != shape or out.dtype != dtype or not out.is_cpu:
                out = check(0, out, shape)
            return out if out.is_contiguous() else out.contiguous()

        return call

    def user_time_call(self, t: Tensor, y: Tensor) -> Tensor:
        """``func`` at the user's time ``t`` (0-dim tensor) for the flat state ``y`` (n,): flat (n,) output.
        Not counted in ``stats`` (used by gradient methods, which keep their own counts)."""
        return self._flatten_output(self.func(t, self.unflatten(y)))

    def _flatten_output(self, out) -> Tensor:
        outs = out if self.is_tuple else (out,)
        if self.is_tuple and not isinstance(out, (tuple, list)):
            raise TypeError(f"func must return a tuple of {len(self.shapes)} tensors for a tuple y0, "
                            f"got {type(out).__name__}")
        if len(outs) != len(self.shapes):
            raise ValueError(f"func returned {len(outs)} tensors; y0 has {len(self.shapes)}")
        outs = [self._check_output(i, o, shape) for i, (o, shape) in enumerate(zip(outs, self.shapes))]
        if self.is_complex:  # resolve_conj: view_as_real refuses a lazily conjugated tensor
            outs = [torch.view_as_real(o.resolve_conj()) for o in outs]
        if len(outs) == 1:
            return outs[0].reshape(-1)
        return torch.cat([o.reshape(-1) for o in outs])

    def _check_output(self, i: int, out, shape: torch.Size) -> Tensor:
        """``out`` checked, and cast to the state's dtype when it is another floating (or, for a complex
        state, complex) dtype."""
        where = f"func output[{i}]" if self.is_tuple else "func output"
        if not isinstance(out, Tensor):
            raise TypeError(f"{where} must be a torch.Tensor, got {type(out).__name__}")
        if out.shape != shape:
            raise ValueError(f"{where} has shape {tuple(out.shape)}, expected {tuple(shape)} (the shape of y0); "
                             "func(t, y) must return dy/dt shaped like y")
        if out.device != self.device:
            raise ValueError(f"{where} is on {out.device}, expected {self.device} (the device of y0)")
        if out.dtype != self.dtype:
            castable = out.is_floating_point() or (self.is_complex and out.is_complex())
            if not castable:
                hint = "; make y0 complex" if out.is_complex() else ""
                raise ValueError(f"{where} has dtype {out.dtype}, expected {self.dtype} (the dtype of y0){hint}")
            out = out.to(self.dtype)
        return out
