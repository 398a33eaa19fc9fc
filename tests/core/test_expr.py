"""Tests of the safe expression evaluator (sigtune._expr)."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigtune import SearchSpaceError
from sigtune._expr import Expression


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("num_layers >= 4", {"num_layers": 4}, True),
        ("num_layers >= 4", {"num_layers": 3}, False),
        ("2 * units + 1", {"units": 16}, 33),
        ("a / b", {"a": 1, "b": 4}, 0.25),
        ("a // b + a % b", {"a": 7, "b": 3}, 3),
        ("-a ** 2", {"a": 3}, -9),
        ("1 < x <= 3", {"x": 3}, True),
        ("1 < x <= 3", {"x": 4}, False),
        ("act in ['relu', 'tanh']", {"act": "tanh"}, True),
        ("act not in ('relu',)", {"act": "relu"}, False),
        ("a and b", {"a": 0, "b": 5}, 0),
        ("a or b", {"a": 0, "b": 5}, 5),
        ("not flag", {"flag": False}, True),
        ("x is None", {"x": None}, True),
        ("x is not None", {"x": 1}, True),
        ("1 if x > 0 else -1", {"x": -2}, -1),
        ("max(a, b, 3)", {"a": 1, "b": 2}, 3),
        ("min(a, b)", {"a": 1, "b": 2}, 1),
        ("abs(x) + sqrt(16)", {"x": -1.5}, 5.5),
        ("log(exp(2.0))", {}, 2.0),
        ("log10(1000) + log2(8)", {}, 6.0),
        ("floor(2.7) + ceil(2.1) + round(2.5)", {}, 7),
        ("int(x) + float(1)", {"x": 3.9}, 4.0),
        ("range(1, n + 1)", {"n": 3}, [1, 2, 3]),
        ("[units, 2 * units]", {"units": 8}, [8, 16]),
        ("len(name)", {"name": "abc"}, 3),
        ("pi", {}, math.pi),
        ("e", {"e": 2}, 2),  # a parameter named like a constant wins
        ("'relu'", {}, "relu"),
        ("True and not False", {}, True),
    ],
)
def test_evaluate(source: str, values: dict[str, object], expected: object) -> None:
    assert Expression.parse(source).evaluate(values) == expected


def test_names_are_collected_without_constants_or_functions() -> None:
    expr = Expression.parse("max(units_1, 2 * pi) if num_layers > 2 else units_2 + e")
    assert expr.names == frozenset({"units_1", "num_layers", "units_2"})


def test_and_or_short_circuit() -> None:
    # the right operand would fail (None > 3); short-circuit must not evaluate it
    assert Expression.parse("x is not None and x > 3").evaluate({"x": None}) is False
    assert Expression.parse("x is None or x > 3").evaluate({"x": None}) is True


@given(a=st.integers(-1000, 1000), b=st.integers(-1000, 1000).filter(lambda v: v != 0))
def test_arithmetic_matches_python(a: int, b: int) -> None:
    cases = {
        "a + b * 3 - a": a + b * 3 - a,
        "a // b": a // b,
        "a % b": a % b,
        "(a - b) ** 2": (a - b) ** 2,
        "a / b": a / b,
        "a < b or a == b": a < b or a == b,
        "max(a, b) - min(a, b)": max(a, b) - min(a, b),
    }
    for source, expected in cases.items():
        assert Expression.parse(source).evaluate({"a": a, "b": b}) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("__import__('os').system('true')", "__import__('os').system"),
        ("open('x')", "calling 'open'"),
        ("eval('1')", "calling 'eval'"),
        ("x.real", "Attribute"),
        ("x[0]", "Subscript"),
        ("lambda: 1", "Lambda"),
        ("[i for i in range(3)]", "ListComp"),
        ("{1: 2}", "Dict"),
        ("{1, 2}", "Set"),
        ("max(a, key=abs)", "keyword arguments"),
        ("max(*a)", "unpacking"),
        ("[*a]", "unpacking"),
        ("(y := 1)", "NamedExpr"),
        ("b'x'", "constant b'x'"),
        ("f'{x}'", "JoinedStr"),
        ("x @ y", "MatMult"),
        ("x << 2", "LShift"),
        ("~x", "Invert"),
        ("(1).__class__", "Attribute"),
    ],
)
def test_rejects_constructs_outside_whitelist(source: str, fragment: str) -> None:
    with pytest.raises(SearchSpaceError) as info:
        Expression.parse(source, where="search_space.units.only")
    message = str(info.value)
    assert message.startswith("search_space.units.only:")
    assert fragment in message
    assert "not allowed" in message


def test_syntax_error_names_where() -> None:
    with pytest.raises(
        SearchSpaceError, match=r"^search_space\.x\.bounds\[1\]: invalid expression"
    ):
        Expression.parse("units +", where="search_space.x.bounds[1]")


def test_non_string_is_rejected() -> None:
    with pytest.raises(SearchSpaceError, match="must be a string"):
        Expression.parse(3, where="w")  # type: ignore[arg-type]


def test_evaluation_error_names_expression_and_values() -> None:
    expr = Expression.parse("a / b", where="search_space.lr.bounds[1]")
    with pytest.raises(SearchSpaceError) as info:
        expr.evaluate({"a": 1, "b": 0})
    message = str(info.value)
    assert "search_space.lr.bounds[1]" in message
    assert "'a / b'" in message
    assert "ZeroDivisionError" in message
    assert "'b': 0" in message


def test_missing_name_is_an_error() -> None:
    with pytest.raises(SearchSpaceError, match="NameError"):
        Expression.parse("x + 1").evaluate({})


@pytest.mark.parametrize(
    "source", ["9 ** 9 ** 9", "'a' * 10 ** 9", "[0] * 10 ** 9", "range(10 ** 9)"]
)
def test_resource_guards(source: str) -> None:
    start = time.perf_counter()
    with pytest.raises(SearchSpaceError, match="too"):
        Expression.parse(source).evaluate({})
    assert time.perf_counter() - start < 1.0
