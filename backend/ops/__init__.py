"""Op handlers: one per IR op kind (``backend.ops.registry``), each owning what goes into its op's
cache key and how the op runs, plus what they share (``backend.ops.workspace``).

This file imports nothing: a module of the room imports the module it needs, never the package."""
