"""The dataset registry: every source registers itself, lookups fail with the list of names, and the
data package's modules import one way (sources -> shared parts -> registry), never the package itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import snn_delays.data as data
from snn_delays.data import DatasetError, available_datasets, open_dataset, registry

PACKAGE = Path(data.__file__).parent


def test_every_source_is_registered():
    assert available_datasets() == ["dvs-gesture", "event-motion", "fsdd", "gsc", "nmnist", "shd", "ssc", "synthetic"]
    assert data.open_dataset is registry.open_dataset and data.DatasetError is registry.DatasetError


def test_unknown_name_and_split_list_the_choices():
    with pytest.raises(DatasetError, match="available: dvs-gesture, event-motion, fsdd, gsc, nmnist, shd, ssc, synthetic"):
        open_dataset("mnist")
    with pytest.raises(DatasetError, match="train, valid, test, all"):
        open_dataset("synthetic", split="dev")


def _relative_imports(path: Path) -> set[str]:
    """The sibling modules (or "" for the package itself) that ``path`` imports, function-local ones too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name if (PACKAGE / f"{a.name}.py").exists() else "" for a in node.names)
    return out


def test_modules_never_import_the_package_init_and_registry_is_a_leaf():
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ("__init__.py", "cli.py"):
            continue
        assert "" not in _relative_imports(path), f"{path.name} imports from the package __init__"
    assert _relative_imports(PACKAGE / "registry.py") == set()
    assert _relative_imports(PACKAGE / "checksums.py") == set()
    assert _relative_imports(PACKAGE / "spikefile.py") == {"registry"}
