# Copyright: n3x developers
# MIT License
"""The lab's update server: static files over HTTP with byte ranges, counting what it sends.

swupdate's delta handler fetches the chunks a device lacks with HTTP range requests, many
ranges per request (handlers/delta_handler.c, default max-ranges 150), and accepts a 206
answer with either Content-Range (one range) or multipart/byteranges (several). Python's
http.server answers neither, so this handler adds them (RFC 9110 section 14). It also
counts the body bytes it sends per file, which is how the lab measures what an update
transferred.

Any HTTP server with range support (nginx, Apache) serves a fleet the same way; this one
is for the lab and tests. Nothing here imports Ansible.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading

_RANGE_SPEC = re.compile(r"(\d*)-(\d*)")
# swupdate lower-cases the headers before it reads the boundary, then looks for it in the
# body as is: a lower-case boundary keeps both the same.
BOUNDARY = "n3x0range0boundary"
# More ranges than this in one request is refused (416) rather than served: a bound on work.
MAX_RANGES = 1000


class RangeError(ValueError):
    pass


def parse_ranges(header, size):
    """[(first, last)] byte positions (inclusive) that a Range header asks of a `size`-byte file.

    Raises RangeError for a header that is not a satisfiable 'bytes=' range set. Overlapping
    ranges are served as asked (swupdate never sends them).
    """
    unit, sep, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not sep:
        raise RangeError(f"not a byte range: {header!r}")
    ranges = []
    for spec in specs.split(","):
        match = _RANGE_SPEC.fullmatch(spec.strip())
        if not match or match.groups() == ("", ""):
            raise RangeError(f"bad range {spec.strip()!r}")
        first, last = match.groups()
        if first == "":  # the last N bytes
            length = int(last)
            if length == 0:
                continue
            first, last = max(0, size - length), size - 1
        else:
            first = int(first)
            last = size - 1 if last == "" else min(int(last), size - 1)
            if first > last or first >= size:
                continue
        ranges.append((first, last))
        if len(ranges) > MAX_RANGES:
            raise RangeError(f"more than {MAX_RANGES} ranges")
    if not ranges:
        raise RangeError(f"no satisfiable range in {header!r} for {size} bytes")
    return ranges


def multipart_head(first, last, size, content_type="application/octet-stream"):
    """The boundary and headers before one part of a multipart/byteranges body."""
    return (f"\r\n--{BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {first}-{last}/{size}\r\n\r\n").encode()


MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus Range; counts body bytes sent per path in server.sent."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        self.server.log.append(fmt % args)

    def _count(self, nbytes, request=False):
        # Counted before the bytes are written, so a client that has read them sees them counted.
        with self.server.lock:
            self.server.sent[self.path] = self.server.sent.get(self.path, 0) + nbytes
            if request:
                self.server.requests[self.path] = self.server.requests.get(self.path, 0) + 1

    def _copy(self, handle, first, last):
        handle.seek(first)
        left = last - first + 1
        while left > 0:
            chunk = handle.read(min(left, 1024 * 1024))
            if not chunk:
                break
            self._count(len(chunk))
            self.wfile.write(chunk)
            left -= len(chunk)

    def do_GET(self):
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not header or not os.path.isfile(path):
            self._count_plain()
            return
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            try:
                ranges = parse_ranges(header, size)
            except RangeError:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Accept-Ranges", "bytes")
            if len(ranges) == 1:
                first, last = ranges[0]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.send_header("Content-Length", str(last - first + 1))
                self.end_headers()
                self._count(0, request=True)
                self._copy(handle, first, last)
                return
            heads = [multipart_head(first, last, size) for first, last in ranges]
            length = sum(len(h) + last - first + 1 for h, (first, last) in zip(heads, ranges, strict=True)) + len(MULTIPART_TAIL)
            self.send_header("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self._count(0, request=True)
            for head, (first, last) in zip(heads, ranges, strict=True):
                self.wfile.write(head)
                self._copy(handle, first, last)
            self.wfile.write(MULTIPART_TAIL)

    def _count_plain(self):
        handle = self.send_head()
        if handle:
            try:
                self._count(0, request=True)
                size = os.fstat(handle.fileno()).st_size
                self._copy(handle, 0, size - 1)
            finally:
                handle.close()


class UpdateServer:
    """Serve `directory` on host:port (port 0: any free one) in a thread; a context manager.

    sent: {path: body bytes sent}, requests: {path: count}, log: request lines.
    """

    def __init__(self, directory, host="127.0.0.1", port=0):
        handler = functools.partial(RangeRequestHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.httpd.sent, self.httpd.requests, self.httpd.log = {}, {}, []
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self):
        return self.httpd.server_address[1]

    @property
    def sent(self):
        return dict(self.httpd.sent)

    @property
    def requests(self):
        return dict(self.httpd.requests)

    @property
    def log(self):
        return list(self.httpd.log)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
