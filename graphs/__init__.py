"""Graphs served by the API: every module here that exports `graph` (a StateGraph builder).

Helper modules (`models`, `offline`, `tools`) export no `graph` and are not served.
"""
