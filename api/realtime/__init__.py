"""Realtime delivery: one Redis subscription per process, fanned out in memory."""
