"""The BuildGrid fixtures every farm test stands on: the server answers, is REAPI v2 with SHA-256 and
remote execution, accepts action-cache updates, listens on loopback only, a fresh one is empty, and the
config re-queues a silent bot's lease within seconds. Checked with BuildGrid's own client and protos,
not irctl's."""

from __future__ import annotations

import json
import subprocess
import uuid

from tests.support.buildgrid import BGD, listening_sockets

LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:")


def _capabilities(url: str) -> dict:
    """Asked with BuildGrid's own client, not irctl's: the fixture is checked independently of the code
    under test."""
    done = subprocess.run([str(BGD), "capabilities", "--remote", url.replace("grpc://", "http://")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_server_answers_get_capabilities(buildgrid):
    caps = _capabilities(buildgrid.url)
    assert caps["cacheCapabilities"]["digestFunctions"] == ["SHA256"]
    assert caps["cacheCapabilities"]["actionCacheUpdateCapabilities"]["updateEnabled"] is True
    assert caps["executionCapabilities"]["execEnabled"] is True
    assert caps["highApiVersion"]["major"] == 2


def test_nothing_listens_beyond_loopback(buildgrid):
    postmaster = buildgrid.cluster.postmaster_pid()
    assert postmaster is not None
    for pid, expected_port in ((buildgrid.process.pid, buildgrid.port), (postmaster, buildgrid.cluster.port)):
        addresses = listening_sockets(pid)
        assert any(a.endswith(f":{expected_port}") for a in addresses), addresses  # the scan sees sockets
        assert all(a.startswith(LOOPBACK) for a in addresses), addresses


def test_fresh_server_is_an_empty_one_of_its_own(buildgrid, fresh_buildgrid):
    assert (fresh_buildgrid.url, fresh_buildgrid.database) != (buildgrid.url, buildgrid.database)
    blob = f"fixture probe for {fresh_buildgrid.url}".encode()
    assert _cas_probe(buildgrid.url, blob) == {"missing_before": True, "missing_after": False}
    assert _cas_probe(fresh_buildgrid.url, blob, upload=False) == {"missing_before": True, "missing_after": True}


# FindMissingBlobs, then BatchUpdateBlobs, then FindMissingBlobs again, with BuildGrid's own protos.
PROBE = """
import hashlib, json, sys, grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re, remote_execution_pb2_grpc as rg
target, blob, upload = sys.argv[1], sys.argv[2].encode(), sys.argv[3] == "1"
digest = re.Digest(hash=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob))
cas = rg.ContentAddressableStorageStub(grpc.insecure_channel(target))
missing = lambda: bool(cas.FindMissingBlobs(re.FindMissingBlobsRequest(blob_digests=[digest]), timeout=30).missing_blob_digests)
before = missing()
if upload:
    cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(requests=[re.BatchUpdateBlobsRequest.Request(digest=digest, data=blob)]), timeout=30)
print(json.dumps({"missing_before": before, "missing_after": missing()}))
"""


def _cas_probe(url: str, blob: bytes, upload: bool = True) -> dict:
    done = subprocess.run([str(BGD.parent / "python"), "-c", PROBE, url.removeprefix("grpc://"), blob.decode(),
                           "1" if upload else "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


# Two bots with BuildGrid's own protos: A takes the lease of an Execute and falls silent (a killed worker);
# B polls until BuildGrid hands it that lease, then completes it, and the client's Execute stream ends.
REQUEUE = """
import hashlib, json, sys, threading, time, grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re, remote_execution_pb2_grpc as rg
from buildgrid._protos.google.devtools.remoteworkers.v1test2 import bots_pb2 as bp, bots_pb2_grpc as bg
from buildgrid._protos.google.rpc import status_pb2
channel = grpc.insecure_channel(sys.argv[1])
bots, salt = bg.BotsStub(channel), sys.argv[2]
digest = lambda b: re.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=len(b))
command = re.Command(arguments=["true", salt]).SerializeToString()
root = re.Directory().SerializeToString()
action = re.Action(command_digest=digest(command), input_root_digest=digest(root)).SerializeToString()
rg.ContentAddressableStorageStub(channel).BatchUpdateBlobs(re.BatchUpdateBlobsRequest(requests=[
    re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in (command, root, action)]), timeout=30)
done = {}
def execute():
    for op in rg.ExecutionStub(channel).Execute(re.ExecuteRequest(action_digest=digest(action), skip_cache_lookup=True), timeout=60):
        if op.done:
            response = re.ExecuteResponse(); op.response.Unpack(response); done["exit"] = response.result.exit_code
threading.Thread(target=execute, daemon=True).start()
def session(bot_id):
    return bots.CreateBotSession(bp.CreateBotSessionRequest(bot_session=bp.BotSession(bot_id=bot_id, status=bp.OK)), timeout=10)
def update(s):
    return bots.UpdateBotSession(bp.UpdateBotSessionRequest(name=s.name, bot_session=s), timeout=10)
a = session("probe-a-" + salt)
while not a.leases:
    a = update(a)
a.leases[0].state = bp.LeaseState.ACTIVE
a = update(a)
silent = time.monotonic()
b = session("probe-b-" + salt)
while not any(l.id == a.leases[0].id for l in b.leases):
    b = update(b)
requeued = time.monotonic() - silent
lease = next(l for l in b.leases if l.id == a.leases[0].id)
lease.state = bp.LeaseState.COMPLETED
lease.result.Pack(re.ActionResult(exit_code=0))
lease.status.CopyFrom(status_pb2.Status(code=0))
update(b)
deadline = time.monotonic() + 30
while "exit" not in done and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"requeued_after": requeued, "client_exit": done.get("exit"), "action": digest(action).hash}))
"""


def test_a_silent_bots_lease_goes_to_another_bot_within_seconds(buildgrid):
    """The config's keepalive: a worker killed mid-step loses its step to another in ~6 s, not minutes."""
    salt = uuid.uuid4().hex[:12]
    done = subprocess.run([str(BGD.parent / "python"), "-c", REQUEUE, buildgrid.url.removeprefix("grpc://"), salt],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:] + buildgrid.log_tail()
    result = json.loads(done.stdout)
    assert result["client_exit"] == 0
    assert 4.0 <= result["requeued_after"] <= 9.0, result  # keepalive 5 s + the 1 s expiry sweep + assignment
    (job,) = [j for j in buildgrid.jobs() if j["action_digest"].startswith(result["action"])]
    assert (job["stage"], job["worker_name"], job["n_tries"], job["status_code"]) == ("4", f"probe-b-{salt}", "2", "0")
    assert f"probe-a-{salt}" not in buildgrid.bots()  # the silent session was closed
