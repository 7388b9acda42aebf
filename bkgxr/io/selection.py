"""Run selections: a small expression language over the observation index, parsed, never evaluated.

A selection reads like a pandas query, ``TARGET_NAME == "Off data" and ZEN_PNT < 40``,
but only these are allowed:

- column names of the observation index (``OBS_ID``, ``ZEN_PNT``, ...);
- literals: numbers, strings, ``True``/``False``, and lists or tuples of them;
- comparisons ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` (chained too, ``20 <= ZEN_PNT < 40``)
  and ``in`` / ``not in`` a list;
- ``and``, ``or``, ``not`` (and their pandas spellings ``&``, ``|``, ``~``), parentheses;
- a unary minus on a number.

Anything else (``@`` references, attribute access, calls, subscripts, arithmetic,
lambdas, comprehensions, f-strings) is refused with a one-line ``ValueError`` naming
what was refused. The expression is parsed with :mod:`ast` and computed here on the
columns; no code of the user's runs.
"""

from __future__ import annotations

import ast
import operator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: Comparison operators allowed, and the function each applies.
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
#: Longest selection accepted, characters.
MAX_LENGTH = 10_000


class _Refused(ValueError):
    """A construct the selection language does not allow."""


def _literal(node: ast.expr) -> Any:
    """Return the value of a literal node (number, string, bool, or a list/tuple of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    raise _Refused(f"{type(node).__name__} is not a literal")


def _operand(node: ast.expr, frame: pd.DataFrame) -> Any:
    """Return a column (as a numpy array) or a literal."""
    if isinstance(node, ast.Name):
        if node.id in ("True", "False"):  # old-style names, as pandas accepts
            return node.id == "True"
        if node.id not in frame.columns:
            raise _Refused(f"unknown column {node.id!r}")
        return frame[node.id].to_numpy()
    return _literal(node)


def _compare(node: ast.Compare, frame: pd.DataFrame) -> np.ndarray:
    result = np.ones(len(frame), dtype=bool)
    left = _operand(node.left, frame)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _operand(right_node, frame)
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, list):
                raise _Refused("'in' needs a list of literals on its right")
            inside = np.isin(np.asarray(left, dtype=object), np.asarray(right, dtype=object))
            result &= ~inside if isinstance(op, ast.NotIn) else inside
        elif type(op) in _COMPARE:
            result &= np.asarray(_COMPARE[type(op)](left, right), dtype=bool)
        else:
            raise _Refused(f"operator {type(op).__name__}")
        left = right
    return result


def _mask(node: ast.expr, frame: pd.DataFrame) -> np.ndarray:
    """Return the boolean mask of a selection node."""
    if isinstance(node, ast.BoolOp):
        masks = np.stack([_mask(value, frame) for value in node.values])
        return np.asarray(masks.all(axis=0) if isinstance(node.op, ast.And) else masks.any(axis=0))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        left, right = _mask(node.left, frame), _mask(node.right, frame)
        return np.asarray(left & right if isinstance(node.op, ast.BitAnd) else left | right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
        return ~_mask(node.operand, frame)
    if isinstance(node, ast.Compare):
        return _compare(node, frame)
    raise _Refused(f"{type(node).__name__} where a condition is expected")


def select_rows(frame: pd.DataFrame, selection: str) -> pd.DataFrame:
    """Return the rows of ``frame`` that ``selection`` keeps (see the module docstring).

    Raises
    ------
    ValueError
        If the selection cannot be parsed, uses anything the language does not
        allow, names an unknown column, or compares values that cannot be compared.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"OBS_ID": [1, 2, 3], "ZEN_PNT": [10.0, 30.0, 50.0]})
    >>> select_rows(frame, "ZEN_PNT < 40 and OBS_ID != 1")["OBS_ID"].tolist()
    [2]
    >>> select_rows(frame, "__import__('os')")
    Traceback (most recent call last):
    ...
    ValueError: selection "__import__('os')" refused: Call where a condition is expected; allowed: column names, literals, comparisons, in/not in a list, and/or/not
    """
    text = str(selection)
    if len(text) > MAX_LENGTH:
        raise ValueError(f"selection refused: longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"selection {text!r} is not a valid expression: {err.msg}") from err
    try:
        mask = _mask(tree.body, frame)
    except _Refused as err:
        raise ValueError(
            f"selection {text!r} refused: {err}; allowed: column names, literals, comparisons, "
            "in/not in a list, and/or/not"
        ) from None
    except TypeError as err:
        raise ValueError(f"selection {text!r}: cannot compare these values: {err}") from err
    return frame[np.asarray(mask, dtype=bool)]
