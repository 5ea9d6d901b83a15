"""The read side: memory-mapped chunks, key indexes, collections, opening a version, the
Reader and its pointer following. Imports nothing from ``write`` or ``manage``. Internal."""
