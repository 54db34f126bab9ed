"""One module per stage kind: `add(graph, ...)` puts its nodes in the graph, `run_*(node, folder, deps, run_dir)`
does one node's work (docs/ARCHITECTURE.md, "Adding a stage kind")."""
