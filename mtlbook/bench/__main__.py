"""`python -m mtlbook.bench weighting|scaling [options]`; see `cli.py`."""

from mtlbook.bench.cli import main

main()
