"""The docs stay true to the tree: the code maps name every module of the package, and nothing else."""

from __future__ import annotations

import re

import pytest
from helpers import REPO

PACKAGE = REPO / "src" / "posenc_exp"


@pytest.mark.parametrize("page", ["README.md", "docs/development.md"])
def test_code_map_names_every_module_and_package(page: str) -> None:
    text = (REPO / page).read_text()
    code_map = text[text.index("```\nconf/") :]
    code_map = code_map[: code_map.index("\n```")]
    listed = set(re.findall(r"^  (\w+\.py|\w+/)", code_map, re.MULTILINE))
    tree = {
        path.name + ("/" if path.is_dir() else "")
        for path in PACKAGE.iterdir()
        if path.name not in ("__init__.py", "__pycache__") and (path.is_dir() or path.suffix == ".py")
    }
    assert listed == tree, f"{page}: missing {sorted(tree - listed)}, not in the tree {sorted(listed - tree)}"
