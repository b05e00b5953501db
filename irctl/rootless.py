"""The rootless hook: a command that mounts or runs containers calls `enter_if_unprivileged()` first.

As root it does nothing. As an ordinary user it moves the rest of the command into a user and mount
namespace where the process is uid 0 (`backend.userns.enter`, with the user's /etc/subuid and
/etc/subgid ranges), so overlayfs, runc and the cache under ~/.cache/irctl work as they do for root.
`IRCTL_ROOTLESS=0` refuses instead (for scripts that must not run rootless by accident).
"""

from __future__ import annotations

import os
import sys

from irctl.errors import UserError


def enter_if_unprivileged(*, announce: bool = True) -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("IRCTL_ROOTLESS", "").strip() == "0":
        raise UserError("not root and IRCTL_ROOTLESS=0: refusing to build in a user namespace")
    from backend import userns  # lazy: only an unprivileged user needs it (~10 ms)

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a user's soft limit is often 1024
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uid = os.getuid()
    try:
        userns.enter()
    except userns.UserNamespaceError as e:
        raise UserError(str(e)) from None
    if announce:
        maps = ", ".join(f"{inside}-{inside + count - 1}→{outside}-{outside + count - 1}" if count > 1
                         else f"{inside}→{outside}" for inside, outside, count in userns.read_id_map("uid"))
        sys.stderr.write(f"rootless: user namespace as uid 0 (uid {uid}; uids {maps})\n")
