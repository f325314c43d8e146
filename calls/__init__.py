"""A call's life as every process sees it: create, move, keep live, publish, record."""
