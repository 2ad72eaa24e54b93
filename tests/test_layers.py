"""Imports inside ``lavis_evlgen`` point one way: common <- models, datasets, tasks <- runners <- tools.

``common`` imports nothing of ours but itself. ``models``, ``datasets`` and ``tasks`` do not import ``runners``
or ``tools``; ``runners`` does not import ``tools``. ``embedded`` (the preparation of the embedded default's
weights) is a leaf beside them: it imports only ``common``, and only ``tools`` import it. The package root
(``import lavis_evlgen``) registers everything, so only ``tools`` import it. Every import statement counts,
including those inside functions.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lavis_evlgen"
ROOT = "<root>"  # the package itself: lavis_evlgen/__init__.py and any top-level module
SUBPACKAGES = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}

# layer -> layers of ours it must not import
FORBIDDEN = {
    "common": {"embedded", "models", "datasets", "tasks", "runners", "tools", ROOT},
    "embedded": {"models", "datasets", "tasks", "runners", "tools", ROOT},
    "models": {"embedded", "runners", "tools", ROOT},
    "datasets": {"embedded", "runners", "tools", ROOT},
    "tasks": {"embedded", "runners", "tools", ROOT},
    "runners": {"embedded", "tools", ROOT},
    "tools": set(),
    ROOT: set(),
}


def layer_of(dotted: str) -> str:
    """The layer of a module or name inside the package, ``lavis_evlgen.<layer>...``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else ROOT


def module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_layers(path: Path, package_dir: Path) -> list[tuple[int, str, str]]:
    """(line, imported name, its layer) for every import of ours in the file at ``path``."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, t, layer_of(t)) for t in targets if t.split(".")[0] == "lavis_evlgen"]
    return found


def violations(path: Path, package_dir: Path = PACKAGE) -> list[str]:
    """Imports in the file at ``path`` (inside ``package_dir``) that its layer must not make."""
    own = layer_of(module_name(path, package_dir))
    return [f"{path.relative_to(package_dir.parent)}:{line} ({own}) imports {target} ({layer})"
            for line, target, layer in imported_layers(path, package_dir) if layer in FORBIDDEN[own]]


def test_every_subpackage_has_a_layer():
    assert SUBPACKAGES <= set(FORBIDDEN), f"subpackages without a layer rule: {SUBPACKAGES - set(FORBIDDEN)}"


def test_imports_point_one_way():
    found = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert not found, "imports against the layer order:\n" + "\n".join(found)


@pytest.mark.parametrize("source, bad", [
    ("from lavis_evlgen.runners.launch import main\n", True),
    ("import lavis_evlgen.tools.loss_curve\n", True),
    ("def f():\n    from lavis_evlgen import tools\n", True),
    ("import lavis_evlgen\n", True),
    ("from . import paths\n", False),
    ("from lavis_evlgen.common.paths import cache_dir\n", False),
])
def test_the_rule_sees_a_bad_import(tmp_path, source, bad):
    """A module in ``common`` importing upwards is caught, however the import is written."""
    probe = tmp_path / "lavis_evlgen" / "common" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    assert bool(violations(probe, tmp_path / "lavis_evlgen")) is bad
