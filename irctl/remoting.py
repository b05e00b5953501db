"""``--remote-cache`` and ``--remote`` for ``build`` and ``solve``: the REAPI server the solver looks
steps up in and uploads results to, and the one it sends exec steps to (``backend.farm``).  A
malformed value is a user error before anything runs; a cache server that cannot be reached is the
solver's warning, and the build goes on locally; an execution server that cannot be, its error."""

from __future__ import annotations

from irctl.errors import UserError

REMOTE_CACHE_HELP = ("Look steps up in a REAPI server's action cache and upload what runs here: grpc://HOST:PORT "
                     "(grpcs:// for TLS), with ,instance=NAME and ,upload=false (read only).")
REMOTE_HELP = ("Run exec steps on a REAPI build farm (BuildGrid): grpc://HOST:PORT (grpcs:// for TLS), with "
               ",instance=NAME; its action cache is the remote cache unless --remote-cache names another.")
BOOLEANS = {"true": True, "false": False}


def farm_options(remote_cache: str | None, source_date_epoch: int | None = None, remote: str | None = None):
    """What the solver asks of a REAPI server (``backend.farm.FarmOptions``), or None for none.
    ``--remote`` executes there, and caches there too unless ``--remote-cache`` says where."""
    if not remote_cache and not remote:
        return None
    from backend.farm import FarmOptions  # lazy: --help loads this module
    from backend.reapi.address import parse_endpoint  # lazy: as above

    try:
        execute = parse_endpoint(remote, "--remote")[0] if remote else None
        endpoint, extra = parse_endpoint(remote_cache, "--remote-cache", allowed=("upload",)) if remote_cache \
            else (execute, {})
    except ValueError as e:
        raise UserError(str(e)) from None
    upload = extra.get("upload", "true")
    if upload not in BOOLEANS:
        raise UserError(f"--remote-cache {remote_cache}: upload={upload!r}: expected true or false")
    return FarmOptions(cache=endpoint, upload=BOOLEANS[upload], execute=execute, source_date_epoch=source_date_epoch)
