"""Snapshots: a writable root made of read-only layer dirs plus an upper dir that becomes the new
layer (overlayfs, fuse-overlayfs or a copy); what a killed process left mounted is unmounted by
``mount.unmount_below`` (the store's crash recovery calls it)."""
