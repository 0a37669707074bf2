"""The agent's calculator evaluates arithmetic and nothing else."""

from __future__ import annotations

import pytest

from graphs.tools import CalculatorError, calculator, evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("-3 ** 2", -9),
        ("2 ** 10", 1024),
        ("1.5e3 + 1", 1501.0),
    ],
)
def test_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "x + 1",
        "(1).__class__",
        "[1, 2]",
        "'a' * 3",
        "9 ** 9 ** 9",
        "10 ** 1000",
        "1 / 0",
        "2 +",
        "1" * 300,
    ],
)
def test_anything_else_is_refused(expression: str) -> None:
    with pytest.raises(CalculatorError):
        evaluate(expression)


def test_the_tool_reports_errors_as_text_for_the_model() -> None:
    assert calculator.invoke({"expression": "1/0"}) == "error: division by zero"
    assert calculator.invoke({"expression": "6*7"}) == "42"
