"""A graph module that cannot be imported: startup must stop and name it."""

from __future__ import annotations

raise RuntimeError("this graph module is broken on purpose")
