"""pyode's benchmark suite: pyode, torchdiffeq and torchode side by side, in one process.

Usage (from the repository root)::

    python bench/run.py                      # the full suite, 1 and 2 threads (~15 min on 2 cores)
    python bench/run.py --quick              # tiny sizes, for CI / smoke tests (seconds)
    python bench/run.py --problems P1,P3 --threads 2 --out bench/results
    python bench/run.py --thp                # with torch's transparent-huge-page allocations (see below)

``--thp`` re-runs the process with ``THP_MEM_ALLOC_ENABLE=1``, torch's switch for backing CPU allocations
of >= 2 MB with transparent huge pages (read once, at torch's first allocation: it cannot be turned on
later). It applies to every library alike; on large states it removes most of the page-fault cost of a
fresh tensor (40 MB: 15 -> 4 ms) and of freeing one (2.5 -> 0.3 ms), which otherwise lands in each
library's loop. The setting used is recorded in ``results.json`` (``meta.thp``).

For every case and thread count: yardsticks are measured (one eager ``torch.add`` on 1024 floats; for
P3 the STREAM-triad bandwidth at the case's size), each (library, mode) is warmed up once per problem,
then the libraries run interleaved -- repetition r starts at library r mod L, so drift in the machine's
load hits all of them alike. Medians and min-max over the repetitions go to ``<out>/results.json``,
charts to ``<out>/*.png``, and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable without shadowing an installed pyode
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
from tqdm import tqdm

from bench import measure, report
from bench.peers import PEERS, NotAvailable, Peer, make_peers
from bench.problems import PROBLEM_KEYS, Case, make_cases

# what a library may raise when it fails on a case (torchode asserts; pyode raises RuntimeError subclasses)
LIBRARY_FAILURES = (RuntimeError, ValueError, TypeError, AssertionError, AttributeError, IndexError, KeyError)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 repetitions (smoke test)")
    parser.add_argument("--problems", default=",".join(PROBLEM_KEYS), help="comma-separated, e.g. P1,P3")
    parser.add_argument("--libraries", default=",".join(PEERS), help="comma-separated subset of "
                        + ", ".join(PEERS))
    parser.add_argument("--threads", default="1,2", help="torch.set_num_threads values, e.g. 1,2")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per case (default: per case)")
    parser.add_argument("--out", default="bench/results", help="folder for results.json and the charts")
    parser.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true",
                        help="no progress bar (it shows only on a terminal anyway)")
    parser.add_argument("--thp", action="store_true", help="run with THP_MEM_ALLOC_ENABLE=1 (torch's huge-page "
                        "allocations, for every library; re-executes the process)")
    args = parser.parse_args(argv)
    args.problems = _csv(args.problems, "--problems")
    args.libraries = _csv(args.libraries, "--libraries")
    try:
        args.threads = [int(n) for n in _csv(args.threads, "--threads")]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if any(n < 1 for n in args.threads) or (args.reps is not None and args.reps < 1):
        parser.error("--threads values and --reps must be >= 1")
    return args


def _csv(text: str, name: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise SystemExit(f"{name} needs at least one value")
    return items


class Suite:
    """Runs every (case, threads, library, mode) combination and collects one record for each."""

    def __init__(self, cases: list[Case], peers: list[Peer], threads: list[int], reps: int | None,
                 progress: bool):
        self.cases, self.peers, self.threads, self.reps = cases, peers, threads, reps
        self.records: list[dict] = []
        self.warmed: set[tuple] = set()
        self.bar = tqdm(total=self._total_runs(), desc="bench", unit="run", disable=not progress or None)

    def _entries(self, case: Case) -> list[tuple[Peer, str]]:
        return [(peer, mode) for mode in case.modes for peer in self.peers]

    def _total_runs(self) -> int:
        per_case = [len(self._entries(c)) * (self.reps or c.reps) for c in self.cases]
        return sum(per_case) * len(self.threads)

    def run(self) -> list[dict]:
        for case in self.cases:
            for n_threads in self.threads:
                torch.set_num_threads(n_threads)
                self._run_block(case, n_threads)
        self.bar.close()
        return self.records

    def _run_block(self, case: Case, n_threads: int) -> None:
        """All libraries and modes on one case at one thread count, interleaved."""
        env = {"eager_op_s": measure.eager_op_seconds(),
               "triad_bytes_per_s": measure.triad_bandwidth(case.y0.numel()) if case.bytes_per_step else None}
        reps = self.reps or case.reps
        live, runs = [], {}
        for peer, mode in self._entries(case):
            record = self._new_record(case, peer, mode, n_threads, env)
            reason = peer.unavailable_reason(case, case.method, mode)
            if reason is not None:
                record.update(status="n/a", reason=reason)
            else:
                reason = self._warm_up(case, peer, mode, n_threads, record)
            if reason is None:
                live.append((peer, mode, record))
                runs[id(record)] = []
            else:
                self.bar.update(reps)
        for rep in range(reps):
            shift = rep % max(len(live), 1)
            for peer, mode, record in live[shift:] + live[:shift]:
                if record["status"] == "ok":
                    self._timed_run(case, peer, mode, record, runs[id(record)])
                self.bar.update(1)
        for _, _, record in live:
            if record["status"] == "ok":
                record["runs"] = runs[id(record)]
                record["summary"] = measure.summarise(record["runs"])

    def _new_record(self, case: Case, peer: Peer, mode: str, n_threads: int, env: dict) -> dict:
        record = {"problem": case.problem, "variant": case.variant, "library": peer.name, "mode": mode,
                  "method": case.method, "rtol": case.rtol, "atol": case.atol, "threads": n_threads,
                  "state_numel": case.y0.numel(), "status": "ok", "reason": None, **env}
        self.records.append(record)
        return record

    def _warm_up(self, case: Case, peer: Peer, mode: str, n_threads: int, record: dict) -> str | None:
        """One untimed run per (problem, library, mode, threads); returns why it failed, if it did."""
        key = (case.problem, peer.name, mode, n_threads)
        if key in self.warmed:
            return None
        try:
            peer.solve(case, case.method, case.rtol, case.atol, mode)
        except NotAvailable as exc:
            record.update(status="n/a", reason=str(exc))
            return str(exc)
        except LIBRARY_FAILURES as exc:  # a failing library is a result, not a reason to stop the suite
            record.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:500])
            return record["reason"]
        self.warmed.add(key)
        return None

    def _timed_run(self, case: Case, peer: Peer, mode: str, record: dict, runs: list[dict]) -> None:
        try:
            result = peer.solve(case, case.method, case.rtol, case.atol, mode)
        except NotAvailable as exc:
            record.update(status="n/a", reason=str(exc))
            return
        except LIBRARY_FAILURES as exc:
            record.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:500])
            return
        runs.append(measure.run_metrics(case, result, record["eager_op_s"], record["triad_bytes_per_s"]))


def environment(args: argparse.Namespace, argv: list[str]) -> dict:
    """What the numbers were measured with."""
    import torchdiffeq
    import torchode

    import pyode

    info = {"command": " ".join(["python bench/run.py", *argv]),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
            "torchdiffeq": torchdiffeq.__version__, "torchode": torchode.__version__,
            "pyode": getattr(pyode, "__version__", "?"), "cpu_count": os.cpu_count(),
            "threads": args.threads, "quick": args.quick, "problems": args.problems, "thp": thp_state()}
    backend_info = getattr(pyode, "backend_info", None)
    info["pyode_backend"] = backend_info() if backend_info else "unknown"
    return info


def thp_state() -> str:
    """Whether torch allocates with transparent huge pages here: the env switch and the kernel's mode."""
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        mode = "unknown"
    return f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}; kernel: {mode}"


def _reexec_with_thp() -> None:
    """Starts this command again with torch's huge-page switch set (it is read at torch's first allocation)."""
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main(argv: list[str] | None = None) -> dict:
    """Runs the suite; returns the results dict (also written to ``<out>/results.json``)."""
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.thp and os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
        if not from_command_line:  # never replace a caller's process (a test, a notebook) behind its back
            raise SystemExit("--thp re-executes the process, so it works only from the command line; here, set "
                             "THP_MEM_ALLOC_ENABLE=1 in the environment before Python starts instead")
        _reexec_with_thp()
    start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S")
    cases = make_cases(args.problems, args.quick)
    peers = make_peers(args.libraries)
    measure.reference_solutions(cases, args.quick)
    records = Suite(cases, peers, args.threads, args.reps, progress=not args.no_progress).run()
    results = {"meta": {**environment(args, argv), "date": started, "seconds": time.perf_counter() - start},
               "records": records}
    paths = report.write(results, Path(args.out))
    print(report.markdown(results))
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return results


if __name__ == "__main__":
    main()
