"""The package's structure: layers that import only downwards, no import cycles, a light import."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eosdetect"

#: Layers, lowest first: a module may import its own layer and those before it, never one after.
LAYERS = [
    ("errors", ["eosdetect.errors"]),
    ("core", ["eosdetect.core"]),
    ("io", ["eosdetect.io", "eosdetect.annotations", "eosdetect.slideio"]),
    ("models", ["eosdetect.models"]),
    ("analysis", ["eosdetect.analysis"]),
    ("training", ["eosdetect.training"]),
    ("apps", ["eosdetect.apps", "eosdetect.__main__"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """Index into LAYERS; None for the package itself (its lazy public API names every layer)."""
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def imports_of(path: Path) -> set[str]:
    """The eosdetect modules ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("eosdetect")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eosdetect"):
            assert node.level == 0, f"{path}: relative import"
            for a in node.names:  # `from eosdetect.training import recipes` imports a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file()
                        or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else node.module)
    return out


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "eosdetect" and layer_of(m) is None] == []


@pytest.mark.parametrize("module", [m for m in MODULES if m != "eosdetect"])
def test_modules_import_only_their_layer_and_those_below(module):
    own = layer_of(module)
    above = sorted(t for t in imports_of(MODULES[module]) if t != "eosdetect" and layer_of(t) > own)
    assert above == [], f"{module} ({LAYERS[own][0]}) imports from higher layers: {above}"


def test_no_module_imports_the_package_api_internally():
    """Inside the package, modules import from the module that defines a name, not via ``eosdetect``
    (``from eosdetect import __version__`` is the one exception)."""
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "eosdetect":
                names = {a.name for a in node.names}
                assert names <= {"__version__"} or all(f"eosdetect.{n}" in MODULES for n in names), (module, names)


def test_no_import_cycles():
    graph = {m: {t for t in imports_of(p) if t in MODULES and t != m and t != "eosdetect"}
             for m, p in MODULES.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_import_eosdetect_is_light():
    """``import eosdetect`` (and the array-level API) loads no TensorFlow or Keras."""
    code = ("import sys, eosdetect as ed; ed.Detections; ed.read_image; ed.hpf_summary; ed.Thresholds; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_api_is_complete_and_documented():
    import pydoc

    import eosdetect

    assert "load_model" in eosdetect.__all__ and "analyse" in eosdetect.__all__
    for name in eosdetect.__all__:
        obj = getattr(eosdetect, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"eosdetect.{name} has no docstring"
    assert set(eosdetect.__all__) <= set(dir(eosdetect))
    text = pydoc.render_doc(eosdetect, renderer=pydoc.plaintext)
    assert "load_model" in text and "detect_slide" in text
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        eosdetect.nothing  # noqa: B018
