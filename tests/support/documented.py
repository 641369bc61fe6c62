"""Code blocks of the docs that tests run as written, found between their page's markers."""

from __future__ import annotations

import re

from tests.support.checkout import ROOT


def documented_block(page: str, name: str, language: str) -> str:
    """The block between ``<!-- NAME: begin -->`` and ``<!-- NAME: end -->`` of docs/PAGE."""
    path = ROOT / "docs" / page
    block = re.search(rf"<!-- {re.escape(name)}: begin -->\n```{language}\n(.*?)```\n<!-- {re.escape(name)}: end -->",
                      path.read_text(), re.DOTALL)
    assert block is not None, f"{path} lost its {name} block"
    return block.group(1)
