# TEMPORARY bootstrap written by the lead so the solver can be tested; the tableaux helper replaces this file.
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F


@dataclass(frozen=True)
class ButcherTableau:
    name: str
    c: tuple
    a: tuple
    b: tuple
    order: int
    b_err: tuple | None = None
    mid: tuple | None = None

    @property
    def num_stages(self):
        return len(self.b)

    @property
    def fsal(self):
        return self.c[-1] == 1 and tuple(self.a[-1]) == tuple(self.b[:-1]) and self.b[-1] == 0

    @property
    def adaptive(self):
        return self.b_err is not None


def _f(x):
    return tuple(float(v) for v in x)


EULER = ButcherTableau("euler", (0.0,), ((),), (1.0,), 1)
MIDPOINT = ButcherTableau("midpoint", (0.0, 0.5), ((), (0.5,)), (0.0, 1.0), 2)
RK4 = ButcherTableau("rk4", _f([0, F(1, 3), F(2, 3), 1]), ((), _f([F(1, 3)]), _f([F(-1, 3), 1]), _f([1, -1, 1])),
                     _f([F(1, 8), F(3, 8), F(3, 8), F(1, 8)]), 4)
_db = [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0]
_dbh = [F(5179, 57600), 0, F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)]
DOPRI5 = ButcherTableau(
    "dopri5", _f([0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1]),
    ((), _f([F(1, 5)]), _f([F(3, 40), F(9, 40)]), _f([F(44, 45), F(-56, 15), F(32, 9)]),
     _f([F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)]),
     _f([F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)]), _f(_db[:6])),
    _f(_db), 5, _f([x - y for x, y in zip(_db, _dbh)]),
    _f([F(6025192743, 30085553152) / 2, 0, F(51252292925, 65400821598) / 2, F(-2691868925, 45128329728) / 2,
        F(187940372067, 1594534317056) / 2, F(-1776094331, 19743644256) / 2, F(11237099, 235043384) / 2]))
_bb = [F(2, 9), F(1, 3), F(4, 9), 0]
_bbh = [F(7, 24), F(1, 4), F(1, 3), F(1, 8)]
BOSH3 = ButcherTableau("bosh3", _f([0, F(1, 2), F(3, 4), 1]),
                       ((), _f([F(1, 2)]), _f([0, F(3, 4)]), _f(_bb[:3])), _f(_bb), 3,
                       _f([x - y for x, y in zip(_bb, _bbh)]))
TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, RK4, DOPRI5, BOSH3)}
