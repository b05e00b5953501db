"""The on-disk store: content-addressed blobs, layer dirs, the result index, cache mounts, their
locks, crash recovery and garbage collection."""
