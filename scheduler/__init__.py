"""Timers at millisecond resolution handed to the workers in batches, and upkeep; one active."""
