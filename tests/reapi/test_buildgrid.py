"""The client against a real REAPI server (BuildGrid 0.4.4 on loopback): the CAS, the action cache,
Execute, and the Remote Workers API calls a worker makes (played here by a minimal bot thread)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from backend.reapi.address import parse_endpoint
from backend.reapi.client import BlobNotFound, Remote, RemoteError
from backend.reapi.digests import EMPTY, digest_of, from_proto, message_digest, to_proto
from backend.reapi.protos import bots_pb2 as bots, remote_execution_pb2 as pb


def remote_for(server, options: str = "") -> Remote:
    return Remote(parse_endpoint(server.url + options, "--remote")[0], timeout=20)


def test_the_cas_round_trip(buildgrid, tmp_path):
    remote = remote_for(buildgrid)
    caps = remote.capabilities()
    assert caps.exec_enabled and caps.ac_update and 0 < caps.max_batch <= 4 << 20
    small = {digest_of(data): data for data in (os.urandom(1000 + i) for i in range(3))}
    big = os.urandom(5 << 20)  # more than a batch: ByteStream Write and Read
    path = tmp_path / "file"
    path.write_bytes(os.urandom(3 << 20))
    file_digest = digest_of(path.read_bytes())
    wanted = {*small, digest_of(big), file_digest}
    assert remote.find_missing(wanted | {EMPTY}) == wanted
    remote.upload_blobs(small)
    assert remote.upload_bytes(big) == digest_of(big)
    remote.upload_file(path, file_digest)
    assert remote.find_missing(wanted) == set()
    for digest, data in small.items():
        assert remote.read_bytes(digest, cap=1 << 20) == data
    assert remote.read_bytes(digest_of(big), cap=8 << 20) == big
    with remote.open_blob(file_digest) as f:
        assert f.read() == path.read_bytes()
    with pytest.raises(BlobNotFound):
        remote.read_bytes(digest_of(b"never uploaded " + os.urandom(8)), cap=100)
    with pytest.raises(BlobNotFound):
        remote.open_blob(digest_of(os.urandom(6 << 20))).read()


def test_the_action_cache_round_trip(buildgrid):
    remote = remote_for(buildgrid)
    action = digest_of(b"action " + os.urandom(8))
    assert remote.get_action_result(action) is None
    blob = remote.upload_bytes(b"result " + os.urandom(8))
    result = pb.ActionResult(exit_code=0, output_files=[pb.OutputFile(path="irctl/result.json",
                                                                      digest=to_proto(blob))])
    remote.update_action_result(action, result)
    got = remote.get_action_result(action)
    assert got.exit_code == 0 and [(f.path, from_proto(f.digest)) for f in got.output_files] == [
        ("irctl/result.json", blob)]


def test_an_unknown_instance_is_one_line(buildgrid):
    with pytest.raises(RemoteError) as e:
        remote_for(buildgrid, ",instance=nowhere").find_missing([digest_of(b"x")])
    assert str(e.value).startswith(f"REAPI server {buildgrid.url}: FindMissingBlobs: ")
    assert "\n" not in str(e.value)


def _bot(url: str, stop: threading.Event, seen: list) -> None:
    """A minimal worker: takes each lease, reads its Action and Command from the CAS, "runs" it (exit
    code and stdout from the command's arguments) and completes the lease with the result."""
    remote = Remote(parse_endpoint(url, "--server")[0], timeout=20)
    try:
        session = remote.create_bot_session(bots.BotSession(bot_id="fake-bot", status=bots.OK), timeout=4)
        while not stop.is_set():
            leases = [lease for lease in session.leases if lease.state in (bots.PENDING, bots.ACTIVE)]
            if leases:
                lease = leases[0]
                action = pb.Action()
                assert lease.payload.Unpack(action)
                command = pb.Command.FromString(remote.read_bytes(from_proto(action.command_digest), cap=1 << 20))
                lease.state = bots.ACTIVE
                session = remote.update_bot_session(session.name, session, timeout=4)
                time.sleep(0.5)  # "executing": long enough for the client to see the stage
                result = pb.ActionResult(exit_code=int(command.arguments[1]),
                                         stdout_raw=command.arguments[2].encode())
                result.execution_metadata.worker = "fake-bot"
                for mine in session.leases:
                    if mine.id == lease.id:
                        mine.state = bots.COMPLETED
                        mine.result.Pack(result)
                seen.append(list(command.arguments))
            session = remote.update_bot_session(session.name, session, timeout=4)
    except Exception as e:  # the server stopping under it ends the bot
        seen.append(e)


def _action(remote: Remote, exit_code: int, text: str) -> tuple:
    command_bytes, command = message_digest(pb.Command(arguments=["fake", str(exit_code), text]))
    action_bytes, action = message_digest(pb.Action(command_digest=to_proto(command),
                                                    input_root_digest=to_proto(EMPTY)))
    remote.upload_blobs({command: command_bytes, action: action_bytes})
    return action


def test_execute_through_a_bot_and_then_from_the_cache(fresh_buildgrid):
    stop, seen = threading.Event(), []
    threading.Thread(target=_bot, args=(fresh_buildgrid.url, stop, seen), daemon=True).start()
    remote = remote_for(fresh_buildgrid)
    try:
        action = _action(remote, 0, "hello\x1b")
        stages: list[str] = []
        response = remote.execute(action, skip_cache_lookup=False, on_stage=stages.append)
        assert response.result.exit_code == 0 and response.result.stdout_raw == b"hello\x1b"
        assert response.result.execution_metadata.worker == "fake-bot" and not response.cached_result
        assert "EXECUTING" in stages and stages[-1] == "COMPLETED"

        again = remote.execute(action, skip_cache_lookup=False)  # BuildGrid answers from its cache
        assert again.cached_result and again.result.stdout_raw == b"hello\x1b"

        failing_action = _action(remote, 7, "oops")
        failing = remote.execute(failing_action)  # a non-zero exit is a result, not an error
        assert failing.result.exit_code == 7
        assert seen == [["fake", "0", "hello\x1b"], ["fake", "7", "oops"]]
        # what the server recorded: the bot ran two actions; the cache answered the repeat (no worker)
        assert [(job["action_digest"], job["worker_name"], job["stage"]) for job in fresh_buildgrid.jobs()] == [
            (f"{action[0][7:]}/{action[1]}", "fake-bot", "4"), (f"{action[0][7:]}/{action[1]}", "", "4"),
            (f"{failing_action[0][7:]}/{failing_action[1]}", "fake-bot", "4")]
    finally:
        stop.set()
