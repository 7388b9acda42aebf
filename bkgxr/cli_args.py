"""Checked option values of the command line: a bad value is one line naming its option, exit code 2.

Each function here is an ``argparse`` type: it turns the text of one option
into its value or raises :class:`argparse.ArgumentTypeError`, which
:class:`Parser` prints as ``bkgxr: error: argument --kernel-sigma: ...`` on
one line (argparse's own usage block is left out). Nothing heavy is imported,
so ``bkgxr --help`` stays quick.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
from typing import TYPE_CHECKING, NoReturn, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T", int, float)

#: Largest ``--workers`` per CPU of this machine: more processes than that only compete.
WORKERS_PER_CPU = 4
#: Largest ``--events-per-run`` of ``simulate`` and ``demo`` (a run's events are held in memory).
MAX_EVENTS_PER_RUN = 1e8
#: Largest ``--dpi`` of ``plot`` (the figure is drawn in memory).
MAX_DPI = 1000


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line: ``bkgxr: error: <what> (see bkgxr build --help)``."""

    def error(self, message: str) -> NoReturn:
        hint = ""
        if "expected one argument" in message:
            hint = "; a value starting with '-' is given as --option=VALUE"
        self.exit(2, f"bkgxr: error: {message}{hint} (see {self.prog} --help)\n")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _bounded(parse: Callable[[str], T], ok: Callable[[T], bool], rule: str, doc: str) -> Callable[[str], T]:
    """Return an argparse type: ``parse`` the text, then refuse a value that is not ``ok``, saying the ``rule``."""

    def check(text: str) -> T:
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    check.__doc__ = doc
    return check


positive = _bounded(_float, lambda v: v > 0, "> 0", "A finite number > 0 (widths, radii).")
width_or_zero = _bounded(_float, lambda v: v >= 0, ">= 0 (0: none)", "A finite number >= 0, where 0 means none (kernel terms, exclusion radius).")
count = _bounded(_int, lambda v: v >= 1, ">= 1", "An integer >= 1 (runs).")
seed = _bounded(_int, lambda v: v >= 0, ">= 0", "An integer >= 0 (numpy's seeds).")


def workers(text: str) -> int:
    """An integer from 1 to :data:`WORKERS_PER_CPU` x the CPUs of this machine."""
    value = count(text)
    most = WORKERS_PER_CPU * (os.cpu_count() or 1)
    if value > most:
        raise argparse.ArgumentTypeError(f"at most {most} on this machine ({WORKERS_PER_CPU} per CPU), got {value}")
    return value


def events_per_run(text: str) -> float:
    """A number of events > 0, at most :data:`MAX_EVENTS_PER_RUN`."""
    value = positive(text)
    if value > MAX_EVENTS_PER_RUN:
        raise argparse.ArgumentTypeError(f"at most {MAX_EVENTS_PER_RUN:g} events per run, got {text!r}")
    return value


def dpi(text: str) -> int:
    """A resolution from 1 to :data:`MAX_DPI`."""
    value = count(text)
    if value > MAX_DPI:
        raise argparse.ArgumentTypeError(f"at most {MAX_DPI}, got {value}")
    return value


def _numbers(text: str) -> list[float]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return [_float(item) for item in items]


def values(text: str) -> list[float]:
    """Comma-separated finite numbers, e.g. ``0.5,1.5``."""
    return _numbers(text)


def edges(text: str) -> list[float]:
    """Comma-separated bin edges: at least two finite numbers, strictly increasing."""
    numbers = _numbers(text)
    if len(numbers) < 2 or any(b <= a for a, b in itertools.pairwise(numbers)):
        raise argparse.ArgumentTypeError(f"edges must be two or more strictly increasing numbers, got {text!r}")
    return numbers


def range_of(low: float, high: float) -> Callable[[str], tuple[float, float]]:
    """Return the type of a range ``'lo,hi'`` with ``low <= lo < hi <= high``."""

    def parse(text: str) -> tuple[float, float]:
        numbers = _numbers(text)
        if len(numbers) != 2 or not low <= numbers[0] < numbers[1] <= high:
            raise argparse.ArgumentTypeError(f"expected 'lo,hi' with {low:g} <= lo < hi <= {high:g}, got {text!r}")
        return numbers[0], numbers[1]

    parse.__name__ = "range"
    return parse


def date(text: str) -> str:
    """An ISO date (``2026-01-01``) or date and time (``2026-01-01T12:00:00``), as the FITS DATE keyword holds."""
    try:
        (dt.datetime if "T" in text else dt.date).fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date like 2026-01-01, got {text!r}") from None
    if not text.isascii() or len(text) > 26:
        raise argparse.ArgumentTypeError(f"expected an ISO date like 2026-01-01, got {text!r}")
    return text


def output_file(text: str) -> str:
    """An output file name: not empty, not ending in a folder separator (``newdir/`` names a folder, not a file).

    The text is kept as given (a ``Path`` would drop the trailing separator);
    :func:`bkgxr.io.write.check_output` does the remaining checks.
    """
    name = text.rstrip()
    separators = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if not name or name.endswith(separators) or os.path.basename(name) in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} names a folder; give the output file, e.g. {name.rstrip(os.sep) or '.'}/models.fits")
    return text
