"""The solver: walks the graph, asks each op for its cache key, runs misses in parallel, and records
why each step ran (``--explain``)."""
