"""The package promises Python >= 3.9 (pyproject.toml) but its tests run on whatever
Python the machine has: at least its syntax must stay 3.9's, which ast checks without
a 3.9 interpreter. (Run-time APIs newer than 3.9 are gated by version where used, as
aio.py does for eager tasks.)"""
import ast
import os

import ferry_worker

PACKAGE = os.path.dirname(ferry_worker.__file__)


def test_every_module_parses_as_python_3_9():
    modules = sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py"))
    assert "codec.py" in modules and len(modules) >= 8
    for name in modules:
        with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
            ast.parse(f.read(), filename=name, feature_version=(3, 9))


def test_the_check_refuses_newer_syntax():
    try:
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 9))
    except SyntaxError:
        return
    raise AssertionError("a match statement parsed as Python 3.9")
