"""Shared caches (``--cache-to``/``--cache-from``): a solve's results carried between machines through
a registry, an OCI layout directory or the image itself, found again by the same content-based keys.
The format (``format``), the options (``options``), reading (``sources``), what a solve notes
(``ledger``) and writing (``export``); spec/cache.md is the format for other tools."""
