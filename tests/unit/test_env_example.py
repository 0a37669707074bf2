"""`.env.example` lists every setting (API.md: "every setting listed there with its default and
a one-line meaning"), and nothing that is not one."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting_with_a_comment() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", text, re.M)
    assert set(listed) == {name.upper() for name in Settings.model_fields}
    lines = text.splitlines()
    for name in listed:
        at = next(i for i, line in enumerate(lines) if re.match(rf"^#?\s*{name}=", line))
        assert at > 0 and lines[at - 1].startswith("#"), f"{name} has no comment above it"
