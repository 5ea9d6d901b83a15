"""The write side: input validation, array writers, the draft, deltas, the one commit,
distributed publishes and guards. Reads only through the public Reader API. Internal."""
