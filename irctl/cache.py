"""``irctl cache du`` and ``irctl cache prune``: look at and shrink the cache store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from irctl.errors import UserError, user_errors
from irctl.rootless import enter_if_unprivileged

app = typer.Typer(help="Inspect and prune the build cache.", no_args_is_help=True)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UserError(f"--keep-storage {text!r}: expected a size such as 500MB or 10GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1024
    return f"{size:.1f}TB"  # pragma: no cover


_CACHE_DIR = typer.Option(None, "--cache-dir", help="cache store (default $IRCTL_CACHE_DIR, $XDG_CACHE_HOME/irctl, "
                                                    "~/.cache/irctl)")


@app.command("du")
def du(cache_dir: Optional[Path] = _CACHE_DIR) -> None:
    """Show what the cache store holds."""
    with user_errors():
        from backend.store.cache import CacheStore, default_root  # lazy: --help imports every command (~30 ms)

        store = CacheStore(default_root(cache_dir))
        u = store.du()
    typer.echo(f"store:   {store.root}")
    typer.echo(f"results: {u.results}")
    typer.echo(f"layers:  {u.layers} ({human(u.layer_bytes)})")
    typer.echo(f"blobs:   {human(u.blob_bytes)}")
    typer.echo(f"mounts:  {u.mounts} ({human(u.mount_bytes)})")
    typer.echo(f"total:   {human(u.total)}")


@app.command("prune")
def prune(keep_storage: str = typer.Option("0", "--keep-storage", help="keep at most this much (e.g. 5GB)"),
          all_: bool = typer.Option(False, "--all", help="delete everything, cache mounts included"),
          keep_images: bool = typer.Option(False, "--keep-images",
                                           help="with --all: keep the base images builds pulled (their blobs and "
                                                "unpacked layers), as `docker builder prune -a` keeps pulled images"),
          cache_dir: Optional[Path] = _CACHE_DIR) -> None:
    """Delete least recently used cache entries until the store fits in --keep-storage."""
    with user_errors():
        if keep_images and not all_:
            raise UserError("--keep-images goes with --all (a size-bounded prune drops least recently used entries)")
        enter_if_unprivileged(announce=False)  # layers hold files of the user's subordinate ids
        # lazy: --help imports every command (~30 ms); and the backend only inside the user namespace
        from backend.store.cache import CacheStore, default_root
        from backend.runtime.container import reap_dead_build  # lazy: as above

        root = default_root(cache_dir)
        store = CacheStore(root, reap_runtime_dir=reap_dead_build)
        images = None
        if keep_images:
            from irctl.resolver import remembered_images  # lazy: only with --keep-images

            images = remembered_images(root)
        freed = store.prune(parse_size(keep_storage), all=all_, keep_images=images)
    typer.echo(f"freed {human(freed)}; total now {human(store.du().total)}")


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="cache")
