"""Backend: solver, cache, snapshots, registry client and exporters. Imports ir only."""
