"""backend.ops.mounts rules that need no runtime: the SSH_AUTH_SOCK a step with ssh mounts gets."""

from __future__ import annotations

from backend.ops.mounts import ssh_auth_sock
from ir import ops

ROOT = ops.Mount("/", input=0, output=0)


def exec_op(*mounts: ops.Mount, env: tuple[str, ...] = ()) -> ops.ExecOp:
    return ops.ExecOp(args=("true",), mounts=(ROOT, *mounts), env=env)


def ssh(target: str, id: str = "default") -> ops.Mount:
    return ops.Mount(target, "ssh", ssh=ops.SSHOptions(id))


def test_ssh_auth_sock_is_the_first_ssh_mount_unless_the_environment_sets_it():
    """BuildKit ``ExecOp.Marshal``: the first ssh mount (in mount order, granted or not) wins; an
    ENV/ARG value, or a secret exposed under that name, is left alone."""
    tmp = ops.Mount("/tmp", "tmpfs")
    assert ssh_auth_sock(exec_op(tmp), []) == []
    assert ssh_auth_sock(exec_op(tmp, ssh("/b.sock", "other"), ssh("/a.sock")), []) == ["SSH_AUTH_SOCK=/b.sock"]
    assert ssh_auth_sock(exec_op(ssh("/a.sock"), env=("PATH=/bin", "SSH_AUTH_SOCK=/mine")), []) == []
    assert ssh_auth_sock(exec_op(ssh("/a.sock"), env=("SSH_AUTH_SOCK=",)), []) == []  # set, even if empty
    assert ssh_auth_sock(exec_op(ssh("/a.sock")), ["SSH_AUTH_SOCK=from-a-secret"]) == []
    assert ssh_auth_sock(exec_op(ssh("/a.sock"), env=("SSH_AUTH_SOCKET=/x",)), []) == ["SSH_AUTH_SOCK=/a.sock"]
