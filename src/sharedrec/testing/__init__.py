"""Test benches for people who run sharedrec: :mod:`sharedrec.testing.netvolume` models a network volume."""
