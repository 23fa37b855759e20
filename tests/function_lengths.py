"""Every function in src/ longer than a limit, longest first: `python tests/function_lengths.py [LIMIT]`.

A function's length is its whole definition, decorators excluded (ast: end_lineno - lineno + 1);
tests/unit/test_function_length.py holds the packages that must stay under the limit to it.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LIMIT = 60


def function_lengths(root: Path = SRC) -> list[tuple[int, str]]:
    """(lines, "path:qualified.name") of every function and method under ``root``, longest first."""
    found: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _collect(tree, path.relative_to(root.parent).as_posix(), "", found)
    return sorted(found, key=lambda item: (-item[0], item[1]))


def _collect(node: ast.AST, where: str, prefix: str, found: list[tuple[int, str]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                found.append((child.end_lineno - child.lineno + 1, f"{where}:{name}"))
            _collect(child, where, name + ".", found)
        else:
            _collect(child, where, prefix, found)


def main(argv: list[str]) -> int:
    limit = int(argv[0]) if argv else LIMIT
    longer = [(n, name) for n, name in function_lengths() if n > limit]
    for n, name in longer:
        print(f"{n:5d}  {name}")
    print(f"{len(longer)} function(s) over {limit} lines in {SRC.name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
