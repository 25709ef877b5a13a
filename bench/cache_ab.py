"""Load-independent A/B of two pyode trees on one case: instructions and simulated cache misses per solve
(valgrind's cachegrind), and how often ``func``'s hidden-layer temporary (its first ``nn.Linear``'s output)
lands on the buffer the previous call freed. Wall-time A/Bs on a shared 2-core VM swing by more than a few
percent between processes; these counts do not depend on the machine's load, though hash seeds and garbage
collection move them by about a percent from process to process (hence several solves per process).

    python bench/cache_ab.py --base /path/to/old/tree [--head .] [--problem P2] [--case batch=512]
        [--mode backprop] [--solves 4] [--preload /usr/lib/x86_64-linux-gnu/libjemalloc.so.2] [--reuse-only]

Trees are as for ``bench/ab_trees.py``. Per solve (forward and backward) = (a run with ``--solves`` solves after
the warm-up minus a run with none) / ``--solves``. The caches simulated: L1d 32 KiB 8-way and a 512 KiB 8-way
last level (an L2 of this machine's EPYC). ``--preload`` runs both trees under another allocator (LD_PRELOAD).
Needs ``valgrind`` on PATH; each run takes minutes (the two trees run in parallel).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.ab_trees import ROOT, child_code, run_child

EVENTS = ("Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")
CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=524288,8,64")

_CHILD = """
import json, torch, pyode
from bench.peers import PyodePeer
from bench.problems import make_cases
torch.set_num_threads(1)
case = next(c for c in make_cases([{problem!r}], quick=False) if c.label == {label!r})
hidden = []  # data pointers of func's first nn.Linear output (its hidden-layer temporary), one per func call
first = next((m for m in case.func.modules() if isinstance(m, torch.nn.Linear)), None)
if first is not None:
    first.register_forward_hook(lambda module, args, out: hidden.append(out.data_ptr()))
peer = PyodePeer()
peer.solve(case, case.method, case.rtol, case.atol, {mode!r})  # warm-up
hidden.clear()
for _ in range({solves}):
    peer.solve(case, case.method, case.rtol, case.atol, {mode!r})
same = sum(a == b for a, b in zip(hidden, hidden[1:]))
print(json.dumps(dict(calls=len(hidden), distinct=len(set(hidden)), same_as_previous=same)))
"""


def _child_code(tree: str, args, solves: int) -> str:
    body = _CHILD.format(problem=args.problem, label=f"{args.problem} {args.case}", mode=args.mode, solves=solves)
    return child_code(tree, body)


def _env(args) -> dict[str, str]:
    return {"LD_PRELOAD": args.preload} if args.preload else {}


def _cachegrind(tree: str, args, solves: int, out_dir: str) -> list[int]:
    """Totals of EVENTS for one process running ``solves`` solves after the warm-up (``out_dir``: this tree's)."""
    out = os.path.join(out_dir, f"{solves}.out")
    valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", *CACHES, f"--cachegrind-out-file={out}"]
    run_child(_child_code(tree, args, solves), wrapper=valgrind, env=_env(args))
    summary = next(line for line in Path(out).read_text().splitlines() if line.startswith("summary:"))
    return [int(x) for x in summary.split()[1:]]


def per_solve(tree: str, args) -> list[float]:
    with tempfile.TemporaryDirectory() as out_dir:  # one per tree: two trees may share a directory name
        base = _cachegrind(tree, args, 0, out_dir)
        more = _cachegrind(tree, args, args.solves, out_dir)
    return [(b - a) / args.solves for a, b in zip(base, more)]


def reuse(tree: str, args) -> dict:
    return run_child(_child_code(tree, args, args.solves), env=_env(args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--head", default=str(ROOT))
    parser.add_argument("--problem", default="P2")
    parser.add_argument("--case", default="batch=512")
    parser.add_argument("--mode", default="backprop")
    parser.add_argument("--solves", type=int, default=4)
    parser.add_argument("--preload", default="", help="a shared library to LD_PRELOAD (another malloc)")
    parser.add_argument("--reuse-only", action="store_true", help="skip cachegrind (seconds instead of minutes)")
    args = parser.parse_args()
    trees = [str(Path(t).resolve()) for t in (args.base, args.head)]
    reuses = [reuse(t, args) for t in trees]
    print(f"{args.problem} {args.case} {args.mode}; base {trees[0]}, head {trees[1]}; "
          f"allocator: {args.preload or 'glibc malloc'}; {args.solves} solves")
    if not args.reuse_only:
        with ThreadPoolExecutor(2) as pool:
            counts = list(pool.map(lambda t: per_solve(t, args), trees))
        print("| event | base per solve | head per solve | head / base |")
        print("|---|---|---|---|")
        for name, b, h in zip(EVENTS, *counts):
            print(f"| {name} | {b:,.0f} | {h:,.0f} | {h / b:.3f} |")
    for name, r in zip(("base", "head"), reuses):
        print(f"{name}: func's hidden-layer output over {r['calls']} calls: {r['distinct']} distinct buffers, "
              f"{r['same_as_previous']} calls reusing the previous call's")


if __name__ == "__main__":
    main()
