"""Server addresses: one spelling for every flag, anything else refused with one line naming the flag."""

from __future__ import annotations

import pytest

from backend.reapi.address import Endpoint, EndpointError, parse_endpoint


@pytest.mark.parametrize("text, endpoint, options", [
    ("grpc://127.0.0.1:50051", Endpoint("grpc://127.0.0.1:50051", "127.0.0.1:50051"), {}),
    ("grpcs://farm.example:443,instance=main", Endpoint("grpcs://farm.example:443", "farm.example:443", "main",
                                                        tls=True), {}),
    ("grpc://[::1]:8980,instance=a/b,upload=false", Endpoint("grpc://[::1]:8980", "[::1]:8980", "a/b"),
     {"upload": "false"}),
    ("grpc://HOST.example:1/", Endpoint("grpc://host.example:1", "host.example:1"), {}),
])
def test_an_address_and_its_options(text, endpoint, options):
    assert parse_endpoint(text, "--remote-cache", allowed=("upload",)) == (endpoint, options)


@pytest.mark.parametrize("text, why", [
    ("http://h:1", "expected grpc://HOST:PORT or grpcs://HOST:PORT"),
    ("h:1", "expected grpc://HOST:PORT or grpcs://HOST:PORT"),
    ("grpc://h", "the port is missing"),
    ("grpc://h:0", "the port is missing"),
    ("grpc://h:99999", "not an address"),
    ("grpc://user:pw@h:1", "credentials in the address are not supported"),
    ("grpc://h:1/instance", "nothing after the port"),
    ("grpc://h:1?x=1", "nothing after the port"),
    ("grpc://:1", "the host is missing"),
    ("grpc://h:1,uplaod=false", "unknown option 'uplaod' (did you mean upload?)"),
    ("grpc://h:1,colour=red", "unknown option 'colour' (known: instance, upload)"),
    ("grpc://h:1,instance", "expected key=value after a comma"),
    ("grpc://h:1,instance=a,instance=b", "instance= given twice"),
    ("grpc://h:1,instance=a//b", "empty, '.' or '..' path segment"),
    ("grpc://h:1,instance=../x", "empty, '.' or '..' path segment"),
    ("grpc://h:1,instance=main/blobs", "may not contain the segment 'blobs'"),
    ("grpc://h:1,instance=a\x1b[31m", "printable characters only"),
])
def test_what_is_refused(text, why):
    with pytest.raises(EndpointError) as e:
        parse_endpoint(text, "--remote-cache", allowed=("upload",))
    message = str(e.value)
    assert message.startswith(f"--remote-cache {text!r}: ") and why in message
    assert "\n" not in message and "\x1b" not in message
    assert isinstance(e.value, ValueError)


def test_a_flag_without_options_allows_only_the_instance():
    with pytest.raises(EndpointError, match=r"^--server 'grpc://h:1,upload=false': unknown option 'upload'"):
        parse_endpoint("grpc://h:1,upload=false", "--server")
