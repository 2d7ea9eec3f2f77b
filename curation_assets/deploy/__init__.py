"""Files and the code location for running pipelines on a cluster (docs/deployment.md, "Beyond one machine")."""
