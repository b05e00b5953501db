"""The irctl command line: the composition root, and the only package that imports both the
frontends and the backend.  One small module per command; the logic lives in the libraries."""
