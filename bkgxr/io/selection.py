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
lambdas, comprehensions, f-strings, nested lists, ``is``) is refused with a one-line
``ValueError`` naming what was refused. So are a comparison without a column
(``1 < 2``), values of another kind than their column (a number against a text
column, ``True`` against a number: pandas would silently match nothing), selections
longer than :data:`MAX_LENGTH` characters or nested deeper than :data:`MAX_DEPTH`.
The expression is parsed with :mod:`ast` and computed here on the columns; no code
of the user's runs.
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
#: Deepest nesting of conditions and signs accepted (``not not ...``, ``-(-(...))``).
MAX_DEPTH = 50
#: Characters of a refused selection quoted in its error line.
SHOWN = 80


class _Refused(ValueError):
    """A construct the selection language does not allow."""


def _kind(value: Any) -> str:
    """Return the kind of a literal or a column: 'bool', 'number' or 'text'."""
    if isinstance(value, np.ndarray):
        return {"b": "bool", "i": "number", "u": "number", "f": "number"}.get(value.dtype.kind, "text")
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, (int, float)) else "text"


def _literal(node: ast.expr, depth: int = 0) -> Any:
    """Return the value of a literal node (number, string, bool, or a flat list/tuple of them)."""
    if depth > MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, depth + 1)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)) and depth == 0:
        items = [_literal(item, depth + 1) for item in node.elts]
        if any(isinstance(item, list) for item in items):
            raise _Refused("a list inside a list")
        return items
    raise _Refused(f"{type(node).__name__} is not a literal")


def _operand(node: ast.expr, frame: pd.DataFrame) -> tuple[Any, str | None]:
    """Return a column (as a numpy array) or a literal, with the column's name (None for a literal)."""
    if isinstance(node, ast.Name):
        if node.id in ("True", "False"):  # old-style names, as pandas accepts
            return node.id == "True", None
        if node.id not in frame.columns:
            raise _Refused(f"unknown column {node.id!r}")
        return frame[node.id].to_numpy(), node.id
    return _literal(node), None


def _described(value: Any, name: str | None) -> str:
    return f"column {name} ({_kind(value)})" if name else f"{value!r} ({_kind(value)})"


def _same_kind(left: Any, left_name: str | None, right: Any, right_name: str | None) -> None:
    """Refuse a comparison of values of different kinds, e.g. a number with a text column."""
    if left_name is None and right_name is None:
        raise _Refused("a comparison without a column")
    values = right if isinstance(right, list) else [right]
    for value in values:
        if _kind(left) != _kind(value):
            raise _Refused(f"{_described(left, left_name)} compared with {_described(value, right_name)}")


def _compare(node: ast.Compare, frame: pd.DataFrame) -> np.ndarray:
    result = np.ones(len(frame), dtype=bool)
    left, left_name = _operand(node.left, frame)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right, right_name = _operand(right_node, frame)
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, list):
                raise _Refused("'in' needs a list of literals on its right")
            _same_kind(left, left_name, right, right_name)
            inside = np.isin(np.asarray(left, dtype=object), np.asarray(right, dtype=object))
            result &= ~inside if isinstance(op, ast.NotIn) else inside
        elif type(op) in _COMPARE:
            if isinstance(left, list) or isinstance(right, list):
                raise _Refused("a list outside 'in'")
            _same_kind(left, left_name, right, right_name)
            result &= np.asarray(_COMPARE[type(op)](left, right), dtype=bool)
        else:
            raise _Refused(f"operator {type(op).__name__}")
        left, left_name = right, right_name
    return result


def _mask(node: ast.expr, frame: pd.DataFrame, depth: int = 0) -> np.ndarray:
    """Return the boolean mask of a selection node."""
    if depth > MAX_DEPTH:
        raise _Refused(f"conditions nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.BoolOp):
        masks = np.stack([_mask(value, frame, depth + 1) for value in node.values])
        return np.asarray(masks.all(axis=0) if isinstance(node.op, ast.And) else masks.any(axis=0))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        left, right = _mask(node.left, frame, depth + 1), _mask(node.right, frame, depth + 1)
        return np.asarray(left & right if isinstance(node.op, ast.BitAnd) else left | right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
        return ~_mask(node.operand, frame, depth + 1)
    if isinstance(node, ast.Compare):
        return _compare(node, frame)
    raise _Refused(f"{type(node).__name__} where a condition is expected")


def _shown(text: str) -> str:
    """Return the selection as quoted in an error line: repr, cut to :data:`SHOWN` characters."""
    return repr(text) if len(text) <= SHOWN else repr(text[:SHOWN]) + f"... ({len(text)} characters)"


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
        raise ValueError(f"selection {_shown(text)} is not a valid expression: {err.msg}") from None
    except (RecursionError, MemoryError):  # the parser's own limits on nesting
        raise ValueError(f"selection {_shown(text)} refused: nested too deeply to parse") from None
    try:
        mask = _mask(tree.body, frame)
    except _Refused as err:
        raise ValueError(
            f"selection {_shown(text)} refused: {err}; allowed: column names, literals, comparisons, "
            "in/not in a list, and/or/not"
        ) from None
    except (TypeError, OverflowError) as err:
        raise ValueError(f"selection {_shown(text)}: cannot compare these values: {err}") from None
    return frame[np.asarray(mask, dtype=bool)]
