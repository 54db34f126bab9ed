"""Executors run a stage graph against a stage store: `local` (this process, and the helper processes of
`--workers N`, sharing the store through its locks) and `ray` (each node a Ray task). Neither knows a stage kind."""

EXECUTORS = ("local", "ray")
