"""Argument types shared by every subcommand, so a bad number reads the same everywhere.

argparse turns the `ArgumentTypeError` into one usage line and exit status 2.
"""

from __future__ import annotations

import argparse


def integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None


def positive_int(value: str) -> int:
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def non_negative_int(value: str) -> int:
    number = integer(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return number


def devices(value: str) -> int | str:
    """`--devices`: a number >= 1, `auto`, `-1` (all) or a list of device ids like `[0,1]`."""
    if value == "auto" or value.startswith("["):
        return value
    if value == "-1":
        return -1
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of devices or 'auto', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("number of devices must be at least 1")
    return number
