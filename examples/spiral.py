"""Neural ODE on a spiral (Chen et al. 2018, section 5): an MLP learns ``dy/dt = (y**3) @ A`` from short windows
of one trajectory, by backpropagation through pyode's dopri5 solver (the model, data and training loop are those
of :mod:`pyode.examples.spiral`, which ``python -m pyode demo spiral`` also runs).

    python examples/spiral.py [--smoke] [--out outputs]      # writes spiral.png
"""

import sys

from _common import parse_args

from pyode.examples import spiral


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    quiet = not sys.stderr.isatty()  # the example's tqdm bar only on a terminal
    result = spiral.run(args.out, iterations=5 if args.smoke else 300, quiet=quiet)
    print(f"mean |error| over the whole trajectory: {result['trajectory_l1']:.4f} "
          f"(predicting 0: {result['baseline_l1']:.4f}); forward NFE {result['forward_nfe']}, "
          f"{result['seconds']:.1f} s; wrote {result['png']}")


if __name__ == "__main__":
    main()
