"""A/B of two pyode source trees on the suite's problems: each round runs every case once in a fresh process per
tree (alternating which tree goes first), so both see the same machine drift; medians over the rounds.

    python bench/ab_trees.py --base /path/to/old/tree [--head .] [--problems P2,P4]
        [--modes forward,forward_per_sample,backprop] [--rounds 5] [--repeats 1] [--threads 1]

A tree is a directory holding a ``pyode`` package (e.g. ``git archive <commit> pyode | tar -x -C DIR`` plus the
compiled ``_C*.so`` copied in, when the C++ bindings did not change). The problems and the timing harness are
this checkout's ``bench/`` (pyode's public API only), so only the library differs. Reported per case: wall
time and the loop time per step outside ``func`` (the suite's "loop/step"), base / head ratios (> 1: head faster):
the median over the rounds of each process's median over ``--repeats`` solves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, statistics
import torch
import pyode
from bench.peers import PyodePeer
from bench.problems import make_cases
torch.set_num_threads({threads})
out = []
peer = PyodePeer()
for case in make_cases({problems!r}, quick=False):
    for mode in {modes!r}:
        if mode not in case.modes or peer.unavailable_reason(case, case.method, mode):
            continue
        peer.solve(case, case.method, case.rtol, case.atol, mode)  # warm-up
        walls, loops = [], []
        for _ in range({repeats}):
            r = peer.solve(case, case.method, case.rtol, case.atol, mode)
            steps = r.steps_fwd.accepted + r.steps_fwd.rejected
            wall = r.wall_fwd + (r.wall_bwd or 0.0)
            walls.append(wall)
            loops.append((wall - r.func_fwd - (r.func_bwd or 0.0)) / max(steps, 1))
        out.append(dict(case=case.label, mode=mode, wall=statistics.median(walls),
                        loop_per_step=statistics.median(loops), file=pyode.__file__))
print(json.dumps(out))
"""


def child_code(tree: str, body: str) -> str:
    """Python source that imports ``pyode`` from ``tree`` and ``bench`` from this checkout, then runs ``body``."""
    tree = str(Path(tree).resolve())
    head = "import sys\n"
    if tree != str(ROOT):  # an editable install's finder would shadow the tree on sys.path
        head += "sys.meta_path = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
    return head + f"sys.path.insert(0, {tree!r}); sys.path.append({str(ROOT)!r})\n" + body


def run_child(code: str, wrapper: Sequence[str] = (), env: dict[str, str] | None = None):
    """Runs ``code`` in a fresh interpreter (under ``wrapper``, e.g. valgrind; ``env`` added to this process's,
    PYTHONPATH cleared) and returns the JSON its last output line holds."""
    env = dict(os.environ, PYTHONPATH="", **(env or {}))
    done = subprocess.run([*wrapper, sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_tree(tree: str, args) -> list[dict]:
    body = _CHILD.format(threads=args.threads, repeats=args.repeats, problems=args.problems.split(","),
                         modes=args.modes.split(","))
    return run_child(child_code(tree, body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--head", default=str(ROOT))
    parser.add_argument("--problems", default="P2,P4")
    parser.add_argument("--modes", default="forward,forward_per_sample,backprop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="solves per case and process (their median)")
    args = parser.parse_args()
    results: dict[str, list[list[dict]]] = {"base": [], "head": []}
    for r in range(args.rounds):
        order = ("base", "head") if r % 2 == 0 else ("head", "base")
        for name in order:
            results[name].append(run_tree(getattr(args, name), args))
    print(f"trees: base {results['base'][0][0]['file']}, head {results['head'][0][0]['file']}; "
          f"{args.rounds} rounds of {args.repeats} solve(s) a case, {args.threads} thread(s)")
    print("| case | mode | base wall ms | head wall ms | wall base/head | base loop/step us | head loop/step us "
          "| loop base/head |")
    print("|---|---|---|---|---|---|---|---|")
    for i, rec in enumerate(results["base"][0]):
        med = {k: {m: statistics.median(rnd[i][m] for rnd in results[k]) for m in ("wall", "loop_per_step")}
               for k in results}
        print(f"| {rec['case']} | {rec['mode']} | {med['base']['wall'] * 1e3:.2f} | {med['head']['wall'] * 1e3:.2f} "
              f"| {med['base']['wall'] / med['head']['wall']:.2f} | {med['base']['loop_per_step'] * 1e6:.1f} "
              f"| {med['head']['loop_per_step'] * 1e6:.1f} "
              f"| {med['base']['loop_per_step'] / med['head']['loop_per_step']:.2f} |")


if __name__ == "__main__":
    main()
