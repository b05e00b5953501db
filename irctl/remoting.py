"""``--remote-cache`` for ``build`` and ``solve``: the REAPI server the solver looks steps up in and
uploads results to (``backend.farm``).  A malformed value is a user error before anything runs; a
server that cannot be reached is the solver's warning, and the build goes on locally."""

from __future__ import annotations

from irctl.errors import UserError

REMOTE_CACHE_HELP = ("Look steps up in a REAPI server's action cache and upload what runs here: grpc://HOST:PORT "
                     "(grpcs:// for TLS), with ,instance=NAME and ,upload=false (read only).")
BOOLEANS = {"true": True, "false": False}


def farm_options(remote_cache: str | None, source_date_epoch: int | None = None):
    """What the solver asks of a REAPI server (``backend.farm.FarmOptions``), or None for none."""
    if not remote_cache:
        return None
    from backend.farm import FarmOptions  # lazy: --help loads this module
    from backend.reapi.address import parse_endpoint  # lazy: as above

    try:
        endpoint, extra = parse_endpoint(remote_cache, "--remote-cache", allowed=("upload",))
    except ValueError as e:
        raise UserError(str(e)) from None
    upload = extra.get("upload", "true")
    if upload not in BOOLEANS:
        raise UserError(f"--remote-cache {remote_cache}: upload={upload!r}: expected true or false")
    return FarmOptions(cache=endpoint, upload=BOOLEANS[upload], source_date_epoch=source_date_epoch)
