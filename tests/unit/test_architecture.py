"""The package's imports point one way: no module imports, even for types, one that imports it.

``tools/import_graph.py`` reads the graph from the source; ``docs/architecture.md`` shows it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools.import_graph import cycles, import_graph, render

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "import_graph.py"


def test_the_package_has_no_import_cycle() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "_websocket " in result.stdout


def test_the_documented_graph_is_the_current_one() -> None:
    documented = (ROOT / "docs" / "architecture.md").read_text()
    assert render(import_graph()) in documented, (
        "docs/architecture.md shows an old import graph: paste `python tools/import_graph.py`'s output"
    )


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("a.py", "from .b import B\n"),
        ("a.py", "from . import b\n"),
        ("a.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"),
        ("a.py", "def f():\n    from .b import B\n"),
        ("a.py", "import pkg.b\n"),
        ("a.py", "from pkg import b\n"),
        ("a.py", "from pkg.b import B\n"),
        ("sub/a.py", "from ..b import B\n"),
        ("sub/a.py", "from .. import b\n"),
    ],
)
def test_a_cycle_is_found_whatever_the_form_of_the_import(tmp_path: Path, module: str, source: str) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for init in (package / "__init__.py", package / "sub" / "__init__.py"):
        init.write_text("")
    (package / module).write_text(source)
    importer = module.removesuffix(".py").replace("/", ".")
    (package / "b.py").write_text(f"from pkg.{importer} import A\n")
    assert cycles(import_graph(package)) == [sorted([importer, "b"])]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(package)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (
        1,
        f"import cycle among: {', '.join(sorted([importer, 'b']))}\n",
    )


def test_without_a_cycle_each_module_comes_after_what_it_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .top import T\n")
    (package / "top.py").write_text("from .low import L\nfrom . import mid\nimport os\n")
    (package / "mid.py").write_text("from .low import L\n")
    (package / "low.py").write_text("import trio\n")
    assert render(import_graph(package)) == (
        "low      -> -\nmid      -> low\ntop      -> low, mid\n__init__ -> top\n"
    )


def test_every_public_name_is_where_the_package_says() -> None:
    """The package imports its public names when first used (its Rule 1): each of ``__all__``
    has its module, and is the object that module defines."""
    import importlib

    import trio_c10k

    assert sorted(trio_c10k._WHERE) == sorted(trio_c10k.__all__)
    for name, where in trio_c10k._WHERE.items():
        assert getattr(trio_c10k, name) is getattr(importlib.import_module(where, "trio_c10k"), name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        trio_c10k.nothing  # noqa: B018
