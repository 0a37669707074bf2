"""The run engine: starts runs, maps what LangGraph does to internal events, keeps them in an
event log, ends runs exactly once. It speaks no wire protocol and imports no web framework;
the protocols (app/protocols/) call `RunManager` and frame its events themselves."""
