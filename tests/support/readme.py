"""Code blocks of the README, so tests run what the README shows and the two cannot drift."""

from __future__ import annotations

import re

from tests.support.live import ROOT


def readme_block(section: str, language: str) -> str:
    """The first ```language block of the README section titled `section`, as documented."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {section}\n")
    end = readme.find("\n## ", start + 1)
    body = readme[start : end if end >= 0 else len(readme)]
    match = re.search(rf"```{language}\n(.*?)```", body, re.DOTALL)
    assert match, f"README section {section!r} has no {language} block"
    return match.group(1)
