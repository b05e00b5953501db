"""irctl steps as REAPI actions: the remote cache, remote execution, and the worker that runs them.

A step's cache action is a pure function of its content-based cache key, so any machine that computes
the same key finds the same result; its result names layer blobs in the server's CAS, fetched only
when something reads them.  See spec/remote.md.
"""
