"""Where the parts of the fwrepo checkout under test are."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "repo_service"


def cli_modules() -> list[Path]:
    """The CLI's source: repo_service/cli.py, or the package repo_service/cli/ it becomes (one module per job)."""
    return [path for path in [PACKAGE / "cli.py", *sorted((PACKAGE / "cli").rglob("*.py"))] if path.exists()]
