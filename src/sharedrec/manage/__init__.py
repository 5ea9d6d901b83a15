"""Operating a store: versions and refs, garbage collection, diff, leases and the fleet
view, integrity checks. Internal."""
