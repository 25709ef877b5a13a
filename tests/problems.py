"""Classic non-stiff test problems with their right-hand sides in torch and numpy."""

import numpy as np
import torch


def lotka_volterra(t, y):
    a, b, c, d = 1.5, 1.0, 3.0, 1.0
    x, z = y[..., 0], y[..., 1]
    return torch.stack([a * x - b * x * z, -c * z + d * x * z], -1)


def van_der_pol(t, y, mu=1.0):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, mu * (1 - x * x) * v - x], -1)


def two_body(t, y):
    r = y[..., :2]
    v = y[..., 2:]
    dist3 = (r * r).sum(-1, keepdim=True) ** 1.5
    return torch.cat([v, -r / dist3], -1)


def brusselator(t, y, a=1.0, b=3.0):
    x, z = y[..., 0], y[..., 1]
    return torch.stack([a + x * x * z - (b + 1) * x, b * x - x * x * z], -1)


A_LINEAR = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.1, 0.0, -1.0]], dtype=torch.float64)


def linear(t, y):
    return y @ A_LINEAR.T.to(y.dtype)


PROBLEMS = {
    "lotka_volterra": (lotka_volterra, [1.0, 1.0], 10.0),
    "van_der_pol": (van_der_pol, [2.0, 0.0], 6.0),
    "two_body": (two_body, [0.5, 0.0, 0.0, np.sqrt(3.0)], 6.0),  # eccentricity 0.5 orbit
    "brusselator": (brusselator, [1.5, 3.0], 10.0),
    "linear": (linear, [1.0, 0.0, -1.0], 5.0),
}


def numpy_rhs(f):
    def rhs(t, y):
        return f(torch.tensor(t), torch.from_numpy(np.asarray(y, dtype=np.float64))).numpy()
    return rhs
