"""Graph-to-graph passes, one file each; every pass is followed by the IR verifier."""
