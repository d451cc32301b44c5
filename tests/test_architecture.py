"""The shape of the code (ARCHITECTURE.md): layers that point one way, no import cycles, and
the extension points that make growth one file per thing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "src" / "factcap"

#: Each part of factcap (a top-level module or subpackage) and its layer. A part may import
#: parts of lower layers and itself; within the base layer, ``BASE_MAY_IMPORT`` says who may
#: import whom. This is ARCHITECTURE.md's picture, as data.
LAYER = {
    "errors": 0,
    "schema": 0,
    "roles": 0,
    "text": 0,
    "prompts": 0,
    "images": 0,
    "assets": 0,
    "inputs": 0,
    "config": 0,
    "media": 0,
    "examples": 0,
    "plugins": 0,
    "stats": 0,
    "access": 0,
    "boxes": 0,
    "rows": 0,
    "backends": 1,
    "pipeline": 2,
    "metrics": 2,
    "engine": 3,
    "evaluate": 4,
    "report": 4,
    "curation": 4,  # filter and export: read records and scores, write datasets
    "bench": 5,
    "serve": 5,
    "study": 5,  # imports evaluate (layer 4): build_samples for the caption sources
    "cli": 6,
    "__main__": 7,
}
BASE_MAY_IMPORT = {
    "errors": set(),
    "roles": set(),
    "text": {"errors"},
    "schema": set(),
    "prompts": {"errors"},
    "images": {"errors"},
    "inputs": {"errors", "schema", "media"},
    "config": {"errors", "prompts", "roles", "images", "media", "text"},
    "media": {"errors", "schema", "assets", "images", "text"},
    "assets": {"errors"},
    "examples": set(),
    "plugins": set(),
    "stats": set(),
    "access": {"errors"},
    "boxes": set(),
    "rows": {"schema"},
}
#: Allowed beyond the layers: metrics may not import the pipeline or the engine.
FORBIDDEN = {("metrics", "pipeline"), ("metrics", "engine"), ("pipeline", "metrics")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported factcap module, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[str, bool]] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never executed
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, top) for a in child.names if a.name.startswith("factcap"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base_parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(base_parts + ([base] if base else []))
                if base.startswith("factcap"):
                    out.append((base, top))
            visit(child, inner)

    visit(tree, True)
    return out


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _edges() -> list[tuple[str, str, bool]]:
    modules = _modules()
    edges = []
    for name, path in modules.items():
        for target, top in _imports(path, name):
            edges.append((name, target, top))
    return edges


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()} - {None}
    assert parts <= set(LAYER), f"add {sorted(parts - set(LAYER))} to LAYER and ARCHITECTURE.md"


def test_imports_point_down_the_layers():
    wrong = []
    for source, target, _ in _edges():
        a, b = _part(source), _part(target)
        if a is None or b is None or a == b:
            continue  # the root package is the lazy facade; a part may import itself
        if (a, b) in FORBIDDEN or LAYER[b] > LAYER[a]:
            wrong.append(f"{source} imports {target}")
        elif LAYER[a] == LAYER[b] and not (LAYER[a] == 0 and b in BASE_MAY_IMPORT[a]):
            wrong.append(f"{source} imports {target} (same layer)")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    modules = set(_modules())
    parts: dict[str, set[str]] = {}
    top_level: dict[str, set[str]] = {}
    for source, target, top in _edges():
        a, b = _part(source), _part(target)
        if a and b and a != b:
            parts.setdefault(a, set()).add(b)
        if top and target in modules and source != target:
            top_level.setdefault(source, set()).add(target)
    assert _cycle(parts) is None, f"parts import each other: {_cycle(parts)}"
    assert _cycle(top_level) is None, f"modules import each other: {_cycle(top_level)}"


def test_the_executors_and_the_service_name_no_stage_and_no_media_kind():
    """engine/ and serve/ run the stage list and the media registry; they import no stage
    module and no media kind module (so a new stage or kind touches neither)."""
    from factcap.media import MEDIA_MODULES
    from factcap.pipeline.plan import STAGE_MODULES

    named = set(STAGE_MODULES) | set(MEDIA_MODULES)
    wrong = [
        f"{source} imports {target}"
        for source, target, _ in _edges()
        if _part(source) in ("engine", "serve") and target in named
    ]
    assert not wrong, "\n".join(wrong)
    assert "factcap.pipeline.check" in STAGE_MODULES  # the check looks at real names


def test_the_checks_can_fail(tmp_path):
    """The cycle finder finds a cycle; the layer table would flag a metric reaching into the
    pipeline."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert ("metrics", "pipeline") in FORBIDDEN
    fake = tmp_path / "capture.py"
    fake.write_text("def f():\n    from factcap.pipeline.parsing import extract_json\n")
    assert _imports(fake, "factcap.metrics.capture") == [("factcap.pipeline.parsing", False)]


def test_importing_factcap_and_its_front_ends_imports_no_torch():
    code = (
        "import sys, factcap, factcap.config, factcap.pipeline, factcap.engine, factcap.cli,"
        " factcap.evaluate, factcap.metrics, factcap.backends.registry\n"
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("doc", ["ARCHITECTURE.md", "README.md"])
def test_documents_named_in_docstrings_exist(doc):
    assert (ROOT / doc).is_file()
    named = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        named.update(w for w in ("DESIGN.md", "ARCHITECTURE.md", "README.md") if w in text)
    missing = [w for w in named if not (ROOT / w).is_file()]
    assert not missing, f"docstrings point to documents that are not in the repository: {missing}"
