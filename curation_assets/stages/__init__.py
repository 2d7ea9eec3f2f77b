"""Stage and selection kinds: one module per kind, each a spec class plus a run function."""
