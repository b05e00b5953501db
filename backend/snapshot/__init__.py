"""Snapshots: a writable root made of read-only layer dirs plus an upper dir that becomes the new
layer (overlayfs, fuse-overlayfs or a copy), and the reaping of those a killed process left."""
