"""``python -m benchmark optimizers``: the optimizer registry as a table."""

from __future__ import annotations

import argparse

from optim.factory import get_optimizer_spec, list_optimizers, optimizer_table

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Print name, family, paper, defaults and search space of every (or each named) entry."""
    parser = argparse.ArgumentParser(prog="python -m benchmark optimizers", description=__doc__)
    parser.add_argument("names", nargs="*", help="registry names (default: all of them)")
    parser.add_argument("--describe", action="store_true", help="also print each entry's description and source")
    args = parser.parse_args(argv)
    names = args.names or list_optimizers()
    for name in names:
        get_optimizer_spec(name)  # an unknown name raises, listing the valid ones
    print(optimizer_table(names))
    if args.describe:
        for name in names:
            spec = get_optimizer_spec(name)
            print(f"\n{spec.name} ({spec.display_name}): {spec.description}\n  defaults from: {spec.source}")
    return 0
