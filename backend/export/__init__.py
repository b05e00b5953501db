"""Exporters: turn an ``ImageSpec`` (layer dirs + config) into an OCI layout, a docker archive,
a registry push, or a flattened rootfs. Shared assembly lives in ``image.py``."""
