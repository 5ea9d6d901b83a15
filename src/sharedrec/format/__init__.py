"""The on-disk contract: names and paths, key normalisation, and the one schema of
manifests, pointers and leases. Internal: the public names are re-exported by ``sharedrec``."""
