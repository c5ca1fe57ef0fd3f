"""Files and functions of src/ stay small enough to read in one sitting.

``OVER`` lists what is still over the limits with its size today: those may only shrink (split them
and delete their entry); nothing else may cross the limits.
"""
from __future__ import annotations

import ast

from test_layers import SRC, modules

#: at most this many lines in a file of src/, and in one function (its docstring included)
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
#: still over, at most this long: to be split by the code's owners (issue 15's report names them)
OVER: dict[str, int] = {}


def sizes() -> dict[str, int]:
    """Every file's line count and every function's (``file:Class.function``)."""
    found = {}
    for path in modules().values():
        name = str(path.relative_to(SRC))
        text = path.read_text()
        found[name] = text.count("\n")
        tree = ast.parse(text)
        for parent in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
            prefix = f"{parent.name}." if isinstance(parent, ast.ClassDef) else ""
            for node in ast.iter_child_nodes(parent):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{name}:{prefix}{node.name}"] = node.end_lineno - node.lineno + 1
    return found


def test_files_and_functions_stay_small():
    too_long = []
    for name, lines in sizes().items():
        limit = MAX_FUNCTION_LINES if ":" in name else MAX_FILE_LINES
        if lines > OVER.get(name, limit):
            too_long.append(f"{name}: {lines} lines (at most {OVER.get(name, limit)})")
    assert not too_long, "\n".join(too_long)
