"""The lab's update server: byte ranges as swupdate's delta handler asks for them, and counting."""

import http.client

import pytest

from ansible_collections.n3x.cluster.plugins.module_utils import n3x_update_server as server


@pytest.mark.parametrize(
    ("header", "ranges"),
    [
        ("bytes=0-99", [(0, 99)]),
        ("bytes=10-", [(10, 999)]),
        ("bytes=-10", [(990, 999)]),
        ("bytes=0-0,5-9, 900-2000", [(0, 0), (5, 9), (900, 999)]),
        ("BYTES=1-2", [(1, 2)]),
        ("bytes=2000-3000,1-1", [(1, 1)]),
    ],
)
def test_parse_ranges(header, ranges):
    assert server.parse_ranges(header, 1000) == ranges


@pytest.mark.parametrize("header", ["bytes=", "bytes=5-1", "bytes=1000-", "items=0-1", "bytes=a-b", "bytes=-", "bytes=-0", "0-1"])
def test_parse_ranges_refuses(header):
    with pytest.raises(server.RangeError):
        server.parse_ranges(header, 1000)


def test_too_many_ranges_are_refused():
    with pytest.raises(server.RangeError, match="more than"):
        server.parse_ranges("bytes=" + ",".join(f"{n}-{n}" for n in range(server.MAX_RANGES + 1)), 10**6)


@pytest.fixture
def served(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "f.zck").write_bytes(data)
    with server.UpdateServer(tmp_path) as running:
        yield running, data


def get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    return response, response.read()


def test_single_range_is_206_with_content_range(served):
    running, data = served
    response, body = get(running.port, "/f.zck", {"Range": "bytes=100-199"})
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes 100-199/{len(data)}"
    assert body == data[100:200]
    assert running.sent == {"/f.zck": 100}


def test_several_ranges_are_multipart_byteranges(served):
    running, data = served
    response, body = get(running.port, "/f.zck", {"Range": "bytes=0-9,1000-1019"})
    assert response.status == 206
    assert response.getheader("Content-Type") == f"multipart/byteranges; boundary={server.BOUNDARY}"
    assert server.BOUNDARY.lower() == server.BOUNDARY
    parts = body.split(f"--{server.BOUNDARY}".encode())
    assert parts[-1] == b"--\r\n"
    assert b"Content-Range: bytes 0-9/10240\r\n\r\n" + data[0:10] + b"\r\n" == parts[1][parts[1].index(b"Content-Range") :]
    assert parts[2].endswith(data[1000:1020] + b"\r\n")
    assert int(response.getheader("Content-Length")) == len(body)
    assert running.sent == {"/f.zck": 30}


def test_whole_file_and_unsatisfiable_range(served):
    running, data = served
    response, body = get(running.port, "/f.zck")
    assert (response.status, body) == (200, data)
    response, _body = get(running.port, "/f.zck", {"Range": "bytes=99999-"})
    assert response.status == 416
    assert running.sent == {"/f.zck": len(data)}
    response, _body = get(running.port, "/missing", {"Range": "bytes=0-1"})
    assert response.status == 404
