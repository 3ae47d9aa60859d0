"""Taking the branches a script's settings decide: each ``if``, ``x if test else y`` and ``and``/``or``
operand whose test reads only the settings is replaced by what the settings make of it, as source text
(comments and layout kept), so an exported script carries only the path its recipe takes.
"""

from __future__ import annotations

import ast
import copy
import io
import tokenize
from typing import Any


# The builtins a test the settings decide may call: isinstance(EVAL, float).
BUILTINS = {f.__name__: f for f in (isinstance, len, str, int, float, bool, dict, list, tuple)}


# What a test the settings decide may hold: reading settings, their items and methods, comparing.
_EVALUABLE = (ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Call, ast.Subscript, ast.Compare, ast.BoolOp,
              ast.UnaryOp, ast.keyword, ast.Tuple, ast.List, ast.Slice, ast.cmpop, ast.boolop, ast.unaryop)


def prune(code: str, known: dict[str, Any]) -> str:
    """``code`` with every test that reads only ``known`` names decided: an ``if`` becomes the branch
    taken (statements after a branch that returns are left out), ``a if test else b`` the side taken,
    and an ``and``/``or`` loses the operands that cannot change its value.

    Example:
        >>> print(prune("def f():\\n    if Q:\\n        return 1\\n    return 2\\n", {"Q": None}))
        def f():
            return 2
        <BLANKLINE>
    """
    while True:
        edited = _edit(code, known)
        if edited is None:
            return code
        code = edited


def _evaluate(node: ast.expr, known: dict[str, Any]) -> tuple[bool, Any]:
    """(True, value) of expression ``node`` when it reads only ``known`` names, else (False, None)."""
    nodes = list(ast.walk(node))
    names = {n.id for n in nodes if isinstance(n, ast.Name)}
    private = any(isinstance(n, ast.Attribute) and n.attr.startswith("_") for n in nodes)
    if not names <= known.keys() | BUILTINS.keys() or private or not all(isinstance(n, _EVALUABLE) for n in nodes):
        return False, None
    values = copy.deepcopy({name: known[name] for name in names if name in known})  # a test cannot change a setting
    try:
        return True, eval(compile(ast.Expression(node), "<settings>", "eval"),  # noqa: S307 - the template's test
                          {"__builtins__": BUILTINS}, values)
    except Exception:  # a test that fails on these values: left to the script
        return False, None


def _edit(code: str, known: dict[str, Any]) -> str | None:
    """``code`` with one decided test taken, or None when none is left."""
    tree = ast.parse(code)
    lines = code.splitlines(keepends=True)
    for block in blocks(tree):
        for i, node in enumerate(block):
            if isinstance(node, ast.If):
                decided, value = _evaluate(node.test, known)
                if decided:
                    return _take_branch(lines, block, i, bool(value))
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp):
            decided, value = _evaluate(node.test, known)
            if decided:
                return _splice(code, lines, node, _segment(code, node.body if value else node.orelse))
        elif isinstance(node, ast.BoolOp):
            kept = _operands(node, known)
            if kept is not None:
                joined = (" and " if isinstance(node.op, ast.And) else " or ").join(_segment(code, n) for n in kept)
                return _splice(code, lines, node, joined)
    return None


def _operands(node: ast.BoolOp, known: dict[str, Any]) -> list[ast.expr] | None:
    """The operands of ``node`` that can still matter (None if all can): a known one that passes the
    value on (true in ``and``, false in ``or``) goes, unless last; everything after a known one that
    decides (false in ``and``, true in ``or``) goes."""
    kept, last = [], len(node.values) - 1
    for i, operand in enumerate(node.values):
        decided, value = _evaluate(operand, known)
        if decided and bool(value) == isinstance(node.op, ast.And) and i < last:
            continue
        kept.append(operand)
        if decided:
            break
    return None if len(kept) == len(node.values) else kept


def blocks(tree: ast.AST) -> list[list[ast.stmt]]:
    """Every statement list (body, else, finally) in ``tree``: the places a branch or an import sits in.

    Example:
        >>> [len(b) for b in blocks(ast.parse("if x:\\n    a = 1\\n    b = 2\\nelse:\\n    c = 3\\n"))]
        [1, 2, 1]
    """
    return [getattr(node, name) for node in ast.walk(tree) for name in ("body", "orelse", "finalbody")
            if isinstance(getattr(node, name, None), list) and getattr(node, name)
            and isinstance(getattr(node, name)[0], ast.stmt)]


def _take_branch(lines: list[str], block: list[ast.stmt], i: int, value: bool) -> str:
    """The code with ``block[i]`` (an ``if``) replaced by the branch ``value`` takes, dedented."""
    node = block[i]
    branch = node.body if value else node.orelse
    end = node.end_lineno
    if branch and branch is node.orelse and isinstance(branch[0], ast.If) and \
            lines[branch[0].lineno - 1].lstrip().startswith("elif"):
        new = lines[branch[0].lineno - 1:branch[0].end_lineno]
        new[0] = new[0].replace("elif", "if", 1)
    elif branch:
        if value:
            start = node.test.end_lineno
        else:
            start = next(k for k in range(node.body[-1].end_lineno, branch[0].lineno)
                         if lines[k].strip().startswith("else")) + 1
        shift = branch[0].col_offset - node.col_offset
        new = [(line[shift:] if line[:shift].isspace() else line) if line.strip() else "\n"
               for line in lines[start:branch[-1].end_lineno]]
        comment = _comment(lines[node.lineno - 1]) if value and node.lineno == node.test.end_lineno else None
        if comment:
            new.insert(0, " " * node.col_offset + comment + "\n")
        if isinstance(branch[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break)):
            end = block[-1].end_lineno  # what follows the branch is never reached
    else:
        new = [" " * node.col_offset + "pass\n"] if len(block) == 1 else []
    return "".join(lines[:node.lineno - 1] + new + lines[end:])


def _comment(line: str) -> str | None:
    """The comment that ends ``line`` (an ``if`` line), or None."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n    pass\n").readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    return next((t.string for t in tokens if t.type == tokenize.COMMENT), None)


def _segment(code: str, node: ast.expr) -> str:
    text = ast.get_source_segment(code, node)
    return f"({text})" if isinstance(node, (ast.BoolOp, ast.IfExp, ast.Lambda, ast.NamedExpr)) else text


def _splice(code: str, lines: list[str], node: ast.expr, text: str) -> str:
    def offset(line: int, column: int) -> int:  # ast's columns count UTF-8 bytes
        return sum(map(len, lines[:line - 1])) + len(lines[line - 1].encode()[:column].decode())

    return code[:offset(node.lineno, node.col_offset)] + text + code[offset(node.end_lineno, node.end_col_offset):]
