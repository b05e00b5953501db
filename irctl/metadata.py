"""What a build says about the image it wrote, in buildx's words: ``--iidfile``, ``--metadata-file``
and ``-q/--quiet``.

buildx's rules, kept: the image id (``--iidfile``, and what ``-q`` prints) is the config digest when
the image written is a single manifest, else the digest of the index (several platforms, or an
attestation); ``--metadata-file`` holds the exporter's keys (``containerimage.digest``,
``containerimage.config.digest`` for a single manifest, ``containerimage.descriptor``,
``image.name``) and ``buildx.build.ref``. With several image outputs the first one speaks, as an
iidfile can hold only one id. ``-q`` leaves stderr silent unless the build fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import string
import sys
import time

from irctl.errors import user_errors


@functools.cache
def build_id() -> str:
    """This build's reference (buildx's is 25 base-36 characters): ``buildx.build.ref``, and the
    provenance's ``buildInvocationID``."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(25))


_STARTED: list[int] = []


def started_ns() -> int:
    """When the build command started (``reporting``), or now."""
    return _STARTED[0] if _STARTED else time.time_ns()


def image_metadata(top: dict, images, names) -> dict:
    """The exporter's metadata of an image written: ``top`` its manifest's or index's descriptor,
    ``images`` the ``BuiltImage``s in it."""
    desc = {k: top[k] for k in ("mediaType", "digest", "size")}
    meta: dict = {"containerimage.digest": top["digest"], "containerimage.descriptor": desc}
    if top["digest"] == images[0].digest:
        config = images[0].manifest["config"]["digest"]
        meta["containerimage.config.digest"] = config
        desc["annotations"] = {"config.digest": config}
        if images[0].config.get("created"):
            desc["annotations"]["org.opencontainers.image.created"] = images[0].config["created"]
        if images[0].descriptor.get("platform"):
            desc["platform"] = dict(images[0].descriptor["platform"])
    if names:
        meta["image.name"] = ",".join(names)
    return meta


def image_id(meta: dict) -> str:
    return meta.get("containerimage.config.digest") or meta.get("containerimage.digest", "")


def finish(exported: list[dict], *, iidfile, metadata_file, quiet: bool) -> None:
    """Write ``--iidfile`` and ``--metadata-file``; with ``-q`` print the image id on stdout."""
    images = [e["metadata"] for e in exported if e.get("metadata")]
    meta = {**(images[0] if images else {}), "buildx.build.ref": f"irctl/local/{build_id()}"}
    if iidfile is not None:
        _write(iidfile, image_id(meta))
    if metadata_file is not None:
        _write(metadata_file, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if quiet and image_id(meta):
        print(image_id(meta))


def _write(path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def reporting(command):
    """Wrap the build command: note when it started, remove a stale ``--iidfile`` first (as buildx
    does: a failed build leaves none behind), and with ``quiet`` silence stderr until it returns;
    an error still reaches the real stderr (it is reported after this returns)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        _STARTED[:] = [time.time_ns()]
        if kwargs.get("iidfile") is not None:
            with user_errors(), contextlib.suppress(FileNotFoundError):  # a directory there: one line
                os.remove(kwargs["iidfile"])
        if not kwargs.get("quiet"):
            return command(*args, **kwargs)
        kwargs["progress"] = "quiet"
        real = sys.stderr
        with open(os.devnull, "w") as sys.stderr:
            try:
                return command(*args, **kwargs)
            finally:
                sys.stderr = real
    return run
