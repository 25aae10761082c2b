"""Generate the package pages (``api/``) and the paper pages (``papers/``) of the docs at build time.

Package pages use ``automodule :members:`` on every public submodule found on disk, so a new module appears
without editing the docs; a package listed in :data:`PACKAGES` that does not exist (yet) is skipped. Paper pages
come from the claim registry (:func:`gradlab.claims.registry.load_registry`): the paper's statement, its
components (linked to their reference pages), and each claim with its title, its criterion and result from the
result store when one exists (``GRADLAB_DOCS_STORE``, default ``.gradlab/results.sqlite``), and its criterion
history (:attr:`gradlab.claims.types.Paper.revisions`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import textwrap
from pathlib import Path

PACKAGES: tuple[tuple[str, str], ...] = (
    ("optim", "Optimisers and update rules"),
    ("schedules", "Batch-size and sampling schedules"),
    ("curvature", "Curvature: Hessian products, Lanczos, SLQ, sketching"),
    ("explain", "Attribution and explanation methods"),
    ("incontext", "In-context learning"),
    ("dynamics", "Training dynamics and parametrisations"),
    ("training", "Training algorithms"),
    ("operators", "Neural operators and scientific ML"),
    ("kernels", "Kernels"),
    ("compression", "Model compression"),
    ("generative", "Generative models"),
    ("detection", "Detection"),
    ("bench", "Benchmarks"),
    ("claims", "The claim framework"),
    ("core", "Core utilities"),
)

_RST_SPECIAL = re.compile(r"([\\`*_|\[\]<>])")


def rst_escape(text: str) -> str:
    """Text shown verbatim inside RST prose (backslash before every inline-markup character)."""
    return _RST_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _heading(text: str, char: str) -> str:
    return f"{text}\n{char * max(len(text), 3)}\n"


def _write(path: Path, text: str) -> None:
    """Write only when the content changed (Sphinx then rebuilds only what changed); atomic."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _public_submodules(package: str) -> list[str]:
    """Dotted names of the public (no leading ``_``) modules under ``package``, depth first, sorted."""
    spec = importlib.util.find_spec(package)
    out: list[str] = []
    if spec is None or not spec.submodule_search_locations:
        return out
    for info in sorted(pkgutil.iter_modules(spec.submodule_search_locations), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        out.append(name)
        if info.ispkg:
            out.extend(_public_submodules(name))
    return out


def _undocumented_exports(module: str) -> list[str]:
    """Names in ``module.__all__`` that autodoc's ``:members:`` skips: data without a doc comment or docstring
    (constants such as ``PRESETS``), defined in this module. Listing them keeps every exported name in the docs."""
    from sphinx.pycode import ModuleAnalyzer

    mod = importlib.import_module(module)
    # without its own __all__, a module's constants count as exported when its package exports them
    package = importlib.import_module(".".join(module.split(".")[:2]))
    exported = getattr(mod, "__all__", None) or getattr(package, "__all__", None) or []
    try:
        attr_docs = {name for (_, name) in ModuleAnalyzer.for_module(module).find_attr_docs()}
    except Exception:  # no source (compiled module)
        attr_docs = set()
    source = inspect.getsource(mod)
    out = []
    for name in exported:
        obj = getattr(mod, name, None)
        if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj) or name in attr_docs:
            continue
        if re.search(rf"^{re.escape(name)}\s*[:=]", source, flags=re.M):  # assigned here, not imported
            out.append(name)
    return out


def documented_modules() -> set[str]:
    """Every module that gets an ``automodule`` entry (for linking paper components)."""
    mods: set[str] = set()
    for short, _ in PACKAGES:
        package = f"gradlab.{short}"
        if importlib.util.find_spec(package) is None:
            continue
        mods.add(package)
        mods.update(_public_submodules(package))
    return mods


def package_page(short: str, title: str, papers_of: dict[str, list[str]] | None = None) -> str | None:
    package = f"gradlab.{short}"
    try:
        if importlib.util.find_spec(package) is None:
            return None
    except ModuleNotFoundError:
        return None
    lines = [_heading(f"``{package}`` — {title}", "="), "",
             f".. automodule:: {package}", "   :no-members:", ""]
    exported = getattr(importlib.import_module(package), "__all__", None)
    if exported:
        lines += ["Importable from the package: " + ", ".join(f"``{n}``" for n in exported) + ".", ""]
    for module in _public_submodules(package):
        # a subpackage re-exports its modules' members: document those where they are defined
        is_package = bool(importlib.util.find_spec(module).submodule_search_locations)
        lines += [_heading(f"``{module}``", "-")]
        users = (papers_of or {}).get(module, [])
        if users:
            lines += ["Implements (component of): " + ", ".join(f":ref:`paper-{k}`" for k in users) + ".", ""]
        lines += [f".. automodule:: {module}", "   :no-members:" if is_package else "   :members:", ""]
        if not is_package:
            for name in _undocumented_exports(module):
                kind = type(getattr(importlib.import_module(module), name)).__name__
                lines += [f".. py:data:: {name}", f"   :module: {module}", f"   :type: {kind}", "",
                          "   Exported constant (described in the module text above).", ""]
    return "\n".join(lines)


def _component_ref(component: str, documented: set[str]) -> str:
    if component in documented:
        return f":mod:`{component}`"
    return f"``{component}`` (internal)"


def _claim_doc(spec) -> str:
    doc = inspect.getdoc(spec.fn) or ""
    return rst_escape(doc) if doc else ""


def _text_of(node: ast.AST, globals_: dict) -> str | None:
    """The text of a string expression: literals as they are, f-string fields as ``{source}``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                known = globals_.get(value.value.id) if isinstance(value.value, ast.Name) else None
                if isinstance(known, (int, float, str)) and not isinstance(known, bool) and value.format_spec is None:
                    parts.append(str(known))  # a module constant: its value is fixed before the run
                else:
                    parts.append("{" + ast.unparse(value.value) + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text_of(node.left, globals_), _text_of(node.right, globals_)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Name) and isinstance(globals_.get(node.id), str):
        return globals_[node.id]
    return None


def criterion_in_code(fn) -> str | None:
    """The ``criterion=`` text of the ``Evidence(...)`` a claim function returns, read from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Evidence":
            for kw in node.keywords:
                if kw.arg == "criterion":
                    return _text_of(kw.value, getattr(fn, "__globals__", {}))
    return None


def _store_lines():
    """``{claim_id: ClaimLine}`` from the result store, or ``{}`` when there is none."""
    path = os.environ.get("GRADLAB_DOCS_STORE", str(Path(__file__).resolve().parents[1] / ".gradlab" /
                                                     "results.sqlite"))
    if not path or not Path(path).is_file():
        return {}, None
    from gradlab.claims.registry import load_registry
    from gradlab.claims.report import collect
    from gradlab.claims.store import ResultStore

    lines = collect(load_registry(), ResultStore(path, create=False))
    return {c.claim_id: c for line in lines for c in line.claims}, path


def paper_page(entry, documented: set[str], results: dict) -> str:
    from gradlab.claims.report import headline_metrics

    p = entry.paper
    out = [f".. _paper-{p.key}:", "", _heading(rst_escape(p.short_title or p.key) + f" (``{p.key}``)", "="), ""]
    out += [f"**{rst_escape(p.title)}**", ""]
    meta = [f"cluster *{p.cluster}*"]
    if p.arxiv:
        meta.append(f"`arXiv:{p.arxiv} <https://arxiv.org/abs/{p.arxiv}>`__")
    meta.append(f"module ``{entry.module}``")
    out += [" · ".join(meta), ""]
    if entry.import_error:
        out += [".. warning::", "", "   The paper module failed to import; its claims are not listed.", ""]
    if p.statement:
        out += [_heading("Statement", "-"), rst_escape(p.statement), ""]
    out += [_heading("Components", "-")]
    if p.components:
        out += [f"* {_component_ref(c, documented)}" for c in p.components] + [""]
    else:
        out += ["No library component yet.", ""]
    out += [_heading("Claims", "-")]
    if not entry.claims:
        out += ["No claim implemented yet.", ""]
    for spec in entry.claims:
        out += [_heading(f"``{spec.id}``", "~"), f"**{rst_escape(spec.title)}**", ""]
        doc = _claim_doc(spec)
        if doc:
            out += [doc, ""]
        out += [f"Designed for scale *{spec.budget}*. Run it: ``gradlab reproduce --only {p.key}`` or "
                f"``gradlab.claims.inline.run_claim_inline(\"{spec.id}\", scale=\"quick\")``.", ""]
        written = criterion_in_code(spec.fn)
        if written:
            out += [f"**Criterion** (as written in the code; ``{{...}}`` is filled in at run time): "
                    f"{rst_escape(written)}", ""]
        line = results.get(spec.id)
        row = line.row if line is not None else None
        if row is not None:
            out += [f"* **Latest result** ({row.scale} scale, seed {row.seed}): **{row.status}**"]
            if row.criterion:
                out += [f"* **Criterion of that run:** {rst_escape(row.criterion)}"]
            for name, value in headline_metrics(row):
                out += [f"* ``{name}`` = {rst_escape(value)}"]
            out += [""]
        else:
            note = f" ({line.note})" if line is not None and line.note else ""
            out += [f"*No quick or full result for the current code in the result store{rst_escape(note)}.*", ""]
        revs = [r for r in p.revisions if r.claim in (spec.id, spec.name)]
        if revs:
            out += ["**Criterion history**", ""]
            for r in revs:
                out += [f"* *{rst_escape(r.date)}*", "",
                        f"  * **was:** {rst_escape(r.old)}",
                        f"  * **now:** {rst_escape(r.new)}",
                        f"  * **why:** {rst_escape(r.reason)}"]
                if r.old_result:
                    out += [f"  * **result under the old criterion:** {rst_escape(r.old_result)}"]
                out += [""]
    return "\n".join(out)


def generate(docs: Path) -> None:
    """Write ``api/*.rst`` and ``papers/*.rst`` under ``docs`` (stale pages removed)."""
    api, papers = docs / "api", docs / "papers"
    api.mkdir(exist_ok=True)
    papers.mkdir(exist_ok=True)
    wanted: set[Path] = set()
    api_index = [_heading("API reference", "="), "",
                 "One page per package; every public module is listed with its members (its ``__all__`` where it "
                 "has one).", "", ".. toctree::", "   :maxdepth: 1", ""]
    from gradlab.claims.registry import load_registry

    registry = load_registry()
    papers_of: dict[str, list[str]] = {}
    for key, entry in registry.papers.items():
        for component in entry.paper.components:
            papers_of.setdefault(component, []).append(key)
    for short, title in PACKAGES:
        text = package_page(short, title, papers_of)
        if text is not None:
            path = api / f"{short}.rst"
            _write(path, text)
            wanted.add(path)
            api_index.append(f"   api/{short}")
    _write(docs / "api.rst", "\n".join(api_index) + "\n")

    documented = documented_modules()
    results, _ = _store_lines()
    index = [_heading("Papers", "="), "",
             "One page per paper of the claim registry: the paper's statement, the components that implement it, "
             "and each claim with its criterion, latest result and criterion history.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    for key, entry in registry.papers.items():
        path = papers / f"{key}.rst"
        _write(path, paper_page(entry, documented, results))
        wanted.add(path)
        index.append(f"   papers/{key}")
    index_path = docs / "papers.rst"
    _write(index_path, "\n".join(index) + "\n")
    for folder in (api, papers):
        for stale in folder.glob("*.rst"):
            if stale not in wanted:
                stale.unlink()
