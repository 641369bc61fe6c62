"""Dependencies point inward: the domain core imports no framework or storage SDK."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "repo_service"
ADAPTER_LIBRARIES = {"starlette", "uvicorn", "pyftpdlib", "boto3", "botocore", "httpx"}


@pytest.mark.parametrize("module", sorted((PACKAGE / "domain").glob("*.py")), ids=lambda path: path.name)
def test_domain_modules_import_no_adapter_library(module: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("repo_service.http") or node.module.startswith("repo_service.storage.s3"):
                imported.add(node.module)
    assert not imported & ADAPTER_LIBRARIES
    assert not {name for name in imported if name.startswith("repo_service.http") or name == "repo_service.storage.s3"}
