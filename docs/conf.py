"""Sphinx configuration of the gradlab API reference (``make docs`` builds it offline into docs/_build/html).

The package pages (``docs/api/``) and the paper pages (``docs/papers/``) are generated at build time by
:mod:`docs._gen` from the installed packages and the claim registry, so a new module or paper appears without
editing this directory. No intersphinx: the build never reaches the network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("MPLBACKEND", "Agg")

import gradlab  # noqa: E402
from _gen import generate  # noqa: E402

project = "gradlab"
author = "the gradlab authors"
copyright = "the gradlab authors, Apache-2.0"
release = version = gradlab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
# MathJax served from the built site (the ``sphinx-mathjax-offline`` distribution ships MathJax 3), so pages
# render their equations without network access; without it Sphinx's default CDN path is used.
if importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    extensions.append("sphinx-mathjax-offline")

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "ARCHITECTURE.md"]
templates_path: list[str] = []
html_theme = "furo" if importlib.util.find_spec("furo") is not None else "alabaster"
html_title = f"gradlab {release}"
html_static_path: list[str] = []

# autodoc: members in source order, the signature's type hints in the parameter descriptions.
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "description"
autodoc_preserve_defaults = False
autoclass_content = "both"
# An override without a docstring (``forward``, ``step``) would otherwise show torch's text, whose references
# point into torch's own docs.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_attr_annotations = True

# Cross-references are checked (a broken reference to a gradlab object is a warning, so -W fails), but names of
# other projects cannot resolve without intersphinx: those are ignored by module prefix.
nitpicky = True
_EXTERNAL = (r"torch", r"numpy", r"np", r"scipy", r"sklearn", r"matplotlib", r"pathlib", r"collections", r"typing",
             r"concurrent", r"dataclasses", r"enum", r"sqlite3", r"jinja2", r"numba", r"captum", r"diffusers",
             r"transformers", r"ray", r"cvxpy", r"pyamg", r"skimage", r"rich", r"types", r"abc", r"os", r"io",
             r"argparse", r"random", r"logging", r"importlib", r"nn", r"optim", r"Tensor", r"Path", r"_io",
             r"threading", r"multiprocessing", r"contextlib", r"functools", r"PIL", r"joblib", r"loky",
             r"safetensors", r"sp", r"torchvision", r"numbers", r"re", r"json", r"inspect", r"weakref", r"subprocess")
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..*)?"),
    # builtins and typing names as napoleon / typehints write them
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|frozenset|object|type|callable|None|"
               r"Any|Callable|Iterable|Iterator|Sequence|Mapping|MutableMapping|Optional|Union|Literal|"
               r"Generator|TypeVar|Protocol|ClassVar|Self|optional|array_like|array|ndarray|"
               r"Ellipsis|Exception|ValueError|TypeError|RuntimeError|KeyError|TimeoutError|NotImplementedError|"
               r"BaseException|OSError|default|iterable|function|module|np\.ndarray|ArrayLike|NDArray)"),
    # type aliases used in annotations (documented in their module's text, not as objects)
    (r"py:.*", r"(.*\.)?(ArrayLike|ParamsT|LossFn|InsideFn|DecodeFn|RewardFn|OptimizerFactory|SearchSpace|Optimizer)"),
    # private helpers and type variables of gradlab itself are not part of the reference
    (r"py:.*", r"(gradlab\.)?.*\._[A-Za-z].*"),
    (r"py:.*", r"[A-Z]"),
]

suppress_warnings = ["config.cache"]


def _skip_foreign(app, what, name, obj, skip, options):
    """Skip members a class inherits from another library (scikit-learn's generated ``set_*_request``)."""
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and (re.fullmatch(r"set_\w+_request", name) or
                            (callable(obj) and module and not module.startswith("gradlab"))):
        return True
    return None


def _resolve_gradlab_name(app, env, node, contnode):
    """Resolve a reference to a gradlab object written without its module (``:class:`HessianOperator```
    from another module, or a type alias in an annotation) when exactly one documented gradlab object has that
    name; the same module (then the same package) wins a tie. Anything else stays a broken reference."""
    if node.get("refdomain") != "py":
        return None
    from sphinx.util.nodes import make_refnode

    target = node["reftarget"].lstrip("~.")
    name = target.rsplit(".", 1)[-1]
    objects = env.get_domain("py").objects
    candidates = [full for full in objects if full.startswith("gradlab.") and full.endswith("." + name)
                  and (target == name or full.endswith("." + target) or target.startswith("gradlab."))]
    if len(candidates) > 1:
        here = node.get("py:module") or ""
        for scope in (here, here.rsplit(".", 1)[0]):
            near = [c for c in candidates if scope and c.startswith(scope + ".")]
            if len(near) == 1:
                candidates = near
                break
    if len(candidates) != 1:
        return None
    entry = objects[candidates[0]]
    return make_refnode(app.builder, node.get("refdoc", ""), entry.docname, entry.node_id, contnode, candidates[0])


def _drop_generated_namedtuple_doc(app, what, name, obj, options, lines):
    """``autoclass_content = "both"`` appends a NamedTuple's generated ``__new__`` text ("Create new instance of
    Spec(from_, ...)"), whose field names read as RST references; it says nothing the signature does not."""
    if what == "class" and isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
        lines[:] = [line for line in lines if not line.startswith(f"Create new instance of {obj.__name__}(")]


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign)
    app.connect("autodoc-process-docstring", _drop_generated_namedtuple_doc)
    app.connect("missing-reference", _resolve_gradlab_name)


generate(HERE)
