"""``--load`` and ``--output type=docker`` without ``dest``: the built image into the local engine.

buildx's ``--load`` is shorthand for ``--output type=docker``, and a docker output without ``dest`` loads
into the Docker engine; irctl does the same, and falls back to podman's containers-storage where no Docker
is configured (``backend.export.load`` chooses, and talks to the engine). This module is the CLI's side:
the option's meaning, buildx's refusal of several platforms, and the line saying where the image went.
"""

from __future__ import annotations

from irctl.errors import UserError

SEVERAL_PLATFORMS = "docker exporter does not currently support exporting manifest lists"  # buildx's words


def loads(kind: str, attrs: dict) -> bool:
    """An output that goes into an engine rather than to a file: buildx's docker exporter without ``dest``."""
    return kind == "docker" and not attrs.get("dest")


def check_engine(outputs: list, platforms: int = 1) -> None:
    """Before the build: a docker output is of one platform, and the engine a load output will need is
    there (no long build for nothing)."""
    if platforms > 1 and any(o.type == "docker" for o in outputs):
        raise UserError(f"--output type=docker: {SEVERAL_PLATFORMS} ({platforms} platforms); push them, or "
                        "--output type=oci,dest=… for an index")
    if not any(loads(o.type, o.attrs) for o in outputs):
        return
    from backend.export.load import LoadError, find_engine  # lazy: only a load needs it

    try:
        find_engine()
    except LoadError as e:
        raise UserError(f"--load: {e}") from None


def load_image(specs: list, store, names: list[str], options):
    """Load the one image of ``specs`` (a multi-platform build has several: refused, as buildx does);
    returns the line saying where it went and under which names (or its id when it has none), and the
    image as built (for ``--metadata-file``)."""
    from backend.export.docker import DockerArchive  # lazy: only an export needs the exporters
    from backend.export.image import build_image  # lazy: as above
    from backend.export.load import LoadError, find_engine, load  # lazy: as above

    if len(specs) != 1:
        raise UserError(f"--load: {SEVERAL_PLATFORMS} ({len(specs)} platforms); push them, or --output "
                        "type=oci,dest=… for an index")
    try:
        engine = find_engine()  # before the image is assembled: no engine, no work
        image = build_image(specs[0], store, options)
        load(engine, DockerArchive(image, store, names, options.source_date_epoch or 0), names,
             scratch=store.tmp_dir)
    except LoadError as e:
        raise UserError(f"--load: {e}") from None
    image_id = image.manifest["config"]["digest"]
    if not names:
        return f"loaded untagged image {image_id} into {engine.where}", image
    return f"loaded {', '.join(names)} (image id {image_id}) into {engine.where}", image
