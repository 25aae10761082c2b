"""Code fingerprints: a claim's evidence is reused only while the code it ran is unchanged.

The fingerprint of a paper hashes the source of its paper module, of every module named in
``PAPER.components`` (a package counts with all its files), of :mod:`gradlab.core`, of the claim types and of
the claim statistics (:mod:`gradlab.claims.stats`: its intervals decide verdicts).
What is hashed is the code, not its documentation: each file's syntax tree with docstrings removed (comments
and formatting never reach the tree), so editing a docstring or reformatting does not invalidate results,
while any change to a statement, expression or literal does. A file that does not parse is hashed byte for byte.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from gradlab.claims.types import Paper

_ALWAYS = ("gradlab.core", "gradlab.claims.types", "gradlab.claims.stats")


def _module_files(module_name: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        # ``gradlab.optim.DiffGrad`` style: an attribute of a module; hash the module it lives in.
        parent, _, attr = module_name.rpartition(".")
        if not parent:
            raise ValueError(f"component {module_name!r} is not an importable module")
        try:
            obj = getattr(importlib.import_module(parent), attr, None)
        except ImportError:
            obj = None
        mod_name = getattr(obj, "__module__", None)
        if obj is None or mod_name is None:
            raise ValueError(f"component {module_name!r} is not an importable module or object")
        return _module_files(mod_name)
    if spec.submodule_search_locations:
        files: list[Path] = []
        for loc in spec.submodule_search_locations:
            files.extend(sorted(Path(loc).rglob("*.py")))
        return files
    if spec.origin is None or not spec.origin.endswith(".py"):
        return []
    return [Path(spec.origin)]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop the docstring (a leading string-constant statement) of the module and of every class and function."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_digest(source: bytes) -> str:
    """SHA-256 of a Python source's code: its syntax tree without docstrings (raw bytes if it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return hashlib.sha256(source).hexdigest()
    return hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()


@lru_cache(maxsize=None)
def _file_digest(path: str, mtime_ns: int) -> str:
    return code_digest(Path(path).read_bytes())


def fingerprint_files(paper: Paper, module_name: str | None = None) -> list[Path]:
    """The source files :func:`paper_fingerprint` hashes, sorted."""
    modules = [module_name or paper.module_name, *paper.components, *_ALWAYS]
    files: set[Path] = set()
    for name in modules:
        files.update(_module_files(name))
    return sorted(files)


def paper_fingerprint(paper: Paper, module_name: str | None = None) -> str:
    """SHA-256 (hex, 16 chars) over the sources the paper's claims depend on (:func:`fingerprint_files`)."""
    files = fingerprint_files(paper, module_name)
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in files:
        resolved = path.resolve()
        label = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else path.name
        digest.update(label.encode())
        digest.update(_file_digest(str(path), path.stat().st_mtime_ns).encode())
    return digest.hexdigest()[:16]
