"""docs/data.md names every registered dataset builder, so a new builder comes with its data layout."""
from __future__ import annotations

from pathlib import Path

from lavis.common.registry import registry

import lavis_evlgen  # noqa: F401  registers the builders

DOC = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()


def test_every_plugin_builder_is_documented():
    ours = [name for name, cls in registry.mapping["builder_name_mapping"].items()
            if cls.__module__.startswith("lavis_evlgen.")]
    assert len(ours) >= 19
    assert [name for name in ours if f"`{name}`" not in DOC] == []
