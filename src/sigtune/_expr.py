"""Safe evaluation of the small expressions allowed in declarative search spaces.

YAML run-configs may write conditions and dynamic bounds as expressions over other parameters,
for example ``only: "num_layers >= 4"`` or ``bounds: [1, "units_1"]``. These strings are parsed
with :mod:`ast` and interpreted node by node against a whitelist; nothing is ever passed to
``eval``. Allowed:

* names of other parameters (and the constants ``True``, ``False``, ``None``, ``pi``, ``e``,
  ``inf`` when no parameter has that name);
* numeric, string and boolean literals, and list/tuple literals of allowed expressions;
* arithmetic ``+ - * / // % **`` (integer powers are limited in size), unary ``+ - not``;
* comparisons ``== != < <= > >= in not in is is not`` (chained comparisons work);
* ``and``, ``or`` and ``a if cond else b``;
* calls of the functions in :data:`FUNCTIONS` (positional arguments only).

Anything else (attribute access, subscripts, lambdas, comprehensions, keyword arguments...) is
rejected when the expression is parsed, with a :class:`~sigtune.SearchSpaceError` that names
where the expression came from.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sigtune._exceptions import SearchSpaceError

__all__ = ["FUNCTIONS", "Expression"]


def _range(*args: Any) -> list[int]:
    values = range(*(operator.index(a) for a in args))
    if len(values) > _MAX_SEQUENCE:
        raise ValueError(f"range() with {len(values)} elements is too long (max {_MAX_SEQUENCE})")
    return list(values)


_MAX_SEQUENCE = 100_000
_MAX_INT_POWER = 10_000  # largest |exponent| for int ** int, so "9 ** 9 ** 9" cannot hang

#: Functions an expression may call.
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "bool": bool,
    "len": len,
    "range": _range,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "floor": math.floor,
    "ceil": math.ceil,
}

_CONSTANTS: Mapping[str, Any] = {"pi": math.pi, "e": math.e, "inf": math.inf}


def _safe_pow(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and abs(exponent) > _MAX_INT_POWER:
        raise ValueError(f"integer power with exponent {exponent} is too large")
    return operator.pow(base, exponent)


def _safe_mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            if len(seq) * count > _MAX_SEQUENCE:
                raise ValueError(f"repeating a sequence {count} times is too long")
    return operator.mul(left, right)


_BINARY: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _safe_mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _safe_pow,
}
_UNARY: Mapping[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
    ast.Not: operator.not_,
}
_COMPARE: Mapping[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


@dataclass(frozen=True)
class Expression:
    """A parsed, validated expression over named parameters.

    Build one with :meth:`parse`; evaluate it with :meth:`evaluate`.

    Attributes:
        source: The expression text as written.
        where: Where the expression comes from, used in error messages
            (for example ``"search_space.units_2.bounds"``).
        names: The parameter names the expression reads.
    """

    source: str
    where: str
    names: frozenset[str]
    _tree: ast.expr = field(repr=False, compare=False)

    @classmethod
    def parse(cls, source: str, *, where: str = "expression") -> Expression:
        """Parse and validate ``source``.

        Args:
            source: The expression, e.g. ``"num_layers >= 4 and activation != 'relu'"``.
            where: Context for error messages (the config path of the expression).

        Returns:
            The validated expression.

        Raises:
            SearchSpaceError: On a syntax error or a construct outside the whitelist.
        """
        if not isinstance(source, str):
            raise SearchSpaceError(f"{where}: an expression must be a string, got {source!r}")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise SearchSpaceError(
                f"{where}: invalid expression {source!r}: {exc.msg} (column {exc.offset})"
            ) from None
        names: set[str] = set()
        _check(tree.body, source, where, names)
        return cls(source=source, where=where, names=frozenset(names), _tree=tree.body)

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Evaluate the expression.

        Args:
            values: Values of the parameters the expression reads (must contain all of
                :attr:`names` that are not builtin constants).

        Returns:
            The value of the expression.

        Raises:
            SearchSpaceError: If evaluation fails (unknown name, type error, division by zero...).
        """
        try:
            return _eval(self._tree, values)
        except SearchSpaceError:
            raise
        except Exception as exc:  # any arithmetic / type problem of the user's expression
            shown = {n: values.get(n) for n in sorted(self.names) if n in values}
            raise SearchSpaceError(
                f"{self.where}: evaluating {self.source!r} with {shown} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _check(node: ast.AST, source: str, where: str, names: set[str]) -> None:
    """Walk ``node`` and reject anything outside the whitelist; collect parameter names."""

    def reject(what: str) -> SearchSpaceError:
        return SearchSpaceError(
            f"{where}: {what} is not allowed in expression {source!r}; allowed are parameter "
            f"names, literals, arithmetic, comparisons, and/or/not, if-else and the functions "
            f"{', '.join(sorted(FUNCTIONS))}"
        )

    if isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool) and node.value is not None:
            raise reject(f"the constant {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            names.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise reject(f"the operator {type(node.op).__name__}")
        _check(node.left, source, where, names)
        _check(node.right, source, where, names)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise reject(f"the operator {type(node.op).__name__}")
        _check(node.operand, source, where, names)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, source, where, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise reject(f"the comparison {type(op).__name__}")
        _check(node.left, source, where, names)
        for comparator in node.comparators:
            _check(comparator, source, where, names)
    elif isinstance(node, ast.IfExp):
        for child in (node.test, node.body, node.orelse):
            _check(child, source, where, names)
    elif isinstance(node, ast.List | ast.Tuple):
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                raise reject("unpacking with '*'")
            _check(elt, source, where, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise reject(f"calling {called!r}")
        if node.keywords:
            raise reject("keyword arguments")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise reject("unpacking with '*'")
            _check(arg, source, where, names)
    else:
        raise reject(f"the construct {type(node).__name__} ({ast.unparse(node)!r})")


def _eval(node: ast.expr, values: Mapping[str, Any]) -> Any:
    """Interpret a node already accepted by :func:`_check`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in values:
            return values[node.id]
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise NameError(f"name {node.id!r} has no value")
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, values))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _eval(value, values)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _eval(value, values)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        if _eval(node.test, values):
            return _eval(node.body, values)
        return _eval(node.orelse, values)
    if isinstance(node, ast.List):
        return [_eval(elt, values) for elt in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(elt, values) for elt in node.elts)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # guaranteed by _check
        return FUNCTIONS[node.func.id](*(_eval(arg, values) for arg in node.args))
    raise TypeError(f"unsupported node {type(node).__name__}")  # pragma: no cover - _check guards
