"""The command line: `python -m mtlbook.bench weighting|scaling [options]`."""

import argparse
import logging

from mtlbook.bench import scaling, weighting


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(
                f"must be an int >= {low}, received {text!r}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m mtlbook.bench",
        description="Timed comparisons, printed as tables.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "weighting", help="MultiTaskModel strategies vs plain Keras fit"
    )
    bench.add_argument("--tasks", type=_int_at_least(1), nargs="+",
                       default=[2, 4, 8])
    bench.add_argument("--repeats", type=_int_at_least(1), default=9)
    bench.add_argument("--steps", type=_int_at_least(2), default=300)
    bench.add_argument("--width", type=_int_at_least(1), default=256)
    bench.add_argument("--batch-size", type=_int_at_least(1), default=64)
    bench.add_argument("--strategies", nargs="+", default=None,
                       choices=list(weighting.strategy_factories()))
    bench.add_argument(
        "--quick", action="store_true",
        help="tiny run (T=2, 2 repeats, 3 steps, width 16) for smoke tests",
    )
    bench = commands.add_parser(
        "scaling", help="tf.data, XLA, mixed precision, MirroredStrategy"
    )
    names = list(scaling.SCALING_CONFIGURATIONS)
    bench.add_argument("--configurations", nargs="+", default=None,
                       choices=names)
    bench.add_argument("--repeats", type=_int_at_least(1), default=5)
    bench.add_argument("--steps", type=_int_at_least(2), default=30)
    bench.add_argument("--batch-size", type=_int_at_least(2), default=64)
    bench.add_argument("--image-size", type=_int_at_least(4), default=16)
    bench.add_argument("--width", type=_int_at_least(1), default=16)
    bench.add_argument(
        "--quick", action="store_true",
        help="tiny run (2 repeats, 3 steps, batch 8, 8x8 images, width 4)",
    )
    bench.add_argument(
        "--one", choices=names, default=None, metavar="NAME",
        help="internal: serve one configuration's timed epochs on "
             "stdin/stdout (bench_scaling starts one process per "
             "configuration this way)",
    )
    return parser


def main(argv=None):
    """Runs `python -m mtlbook.bench` with the given arguments.

    Args:
        argv: list of str (default: `sys.argv[1:]`), e.g.
            `["weighting", "--quick"]`.

    Returns:
        The benchmark's results (see `bench_weighting`, `bench_scaling`),
        or None for `scaling --one`.

    Example:

    ```python
    main(["scaling", "--configurations", "xla", "--repeats", "3"])
    ```
    """
    args = _parser().parse_args(argv)
    # TensorFlow warns that many functions are traced: one per model here
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if args.command == "scaling":
        if args.quick:
            args.repeats, args.steps, args.batch_size = 2, 3, 8
            args.image_size, args.width = 8, 4
        sizes = dict(steps=args.steps, batch_size=args.batch_size,
                     image_size=args.image_size, width=args.width)
        if args.one is not None:
            return scaling.serve_stdio(args.one, **sizes)
        return scaling.bench_scaling(
            configurations=args.configurations, repeats=args.repeats,
            **sizes)
    if args.quick:
        args.tasks, args.repeats, args.steps, args.width = [2], 2, 3, 16
    return weighting.bench_weighting(
        tasks=args.tasks, repeats=args.repeats, steps=args.steps,
        batch_size=args.batch_size, width=args.width,
        strategies=args.strategies,
    )
