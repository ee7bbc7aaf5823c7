"""What uvicorn does not bound: time to send request headers, header size and open connections.

uvicorn closes a keep-alive connection idle between requests, but a connection that trickles its headers a
byte at a time (slowloris), or opens and sends nothing, is held for ever, and enough of them exhaust the
file descriptors (accept fails, with a traceback each). So each connection gets a deadline for its request
headers, armed when it opens and again after each answer; the body has its own deadline in `read_body`.
Above `max_connections` the connection that has waited longest for a complete request is dropped (an
attacker's, almost always: a real client sends a request in milliseconds) so that new clients are served;
only when every connection is busy with a complete request is the newcomer answered 503.

Every refusal is one log line (`log_refusal`), with no traceback.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict

from cdp_resources.collector.config import Limits
from cdp_resources.collector.protocol import log_refusal, refusal_body

try:  # what uvicorn itself picks when installed (uvicorn[standard], as dagster-webserver has it)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as HttpProtocol
except ImportError:  # pragma: no cover
    from uvicorn.protocols.http.h11_impl import H11Protocol as HttpProtocol

MAX_HEADER_BYTES = 64 * 1024
_PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def guarded_protocol(limits: Limits) -> type[HttpProtocol]:
    """A uvicorn HTTP protocol class enforcing `limits`; one per server, as it holds the server's registry."""
    unfinished: OrderedDict[GuardedProtocol, float] = OrderedDict()  # waiting for a complete request, oldest first

    class GuardedProtocol(HttpProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline = None
            self._armed_for = None
            self._header_bytes = 0
            self._heard = False  # any byte since armed: a request under way, not an idle connection
            if len(self.connections) > limits.max_connections and not self._make_room():
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._heard = True
            super().data_received(data)
            if self.transport.is_closing():
                return
            started = self.cycle is not self._armed_for  # a new request's headers are complete
            if self._deadline is not None:
                if started:
                    self._deadline.cancel()
                    self._deadline = None
                else:
                    self._header_bytes += len(data)
                    if self._header_bytes > MAX_HEADER_BYTES:
                        self._refuse(431, f"request headers are larger than {MAX_HEADER_BYTES} bytes")
                        return
            if started and not self.cycle.more_body:
                unfinished.pop(self, None)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # no pipelined request is waiting: the next one has `header_timeout` to arrive

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:  # uvicorn's answer to bytes that are not HTTP
            log_refusal(400, msg, self.client, None, None)
            self._disarm()
            super().send_400_response(msg)

        def _arm(self) -> None:
            self._disarm()
            self._armed_for, self._header_bytes, self._heard = self.cycle, 0, False
            self._deadline = self.loop.call_later(limits.header_timeout, self._headers_late)
            unfinished[self] = time.monotonic()

        def _disarm(self) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
                self._deadline = None
            unfinished.pop(self, None)

        def _headers_late(self) -> None:
            self._deadline = None
            self._drop(408, f"no complete request headers within {limits.header_timeout:g} s")

        def _make_room(self) -> bool:
            """Drop the connection waiting longest for a complete request; if none is, refuse this one."""
            victim = next((c for c in unfinished if c is not self), None)
            if victim is None:
                self._refuse(503, f"{len(self.connections) - 1} connections are open and busy (CDP_COLLECTOR_MAX_CONNECTIONS)")
                return False
            waited = time.monotonic() - unfinished[victim]
            victim._drop(
                503, f"{len(self.connections) - 1} connections are open (CDP_COLLECTOR_MAX_CONNECTIONS): "
                     f"dropped the one waiting longest ({waited:.1f} s) for a complete request"
            )
            return True

        def _drop(self, status: int, reason: str) -> None:
            """Refuse a request under way; an idle connection (opened or kept alive, then nothing) is closed
            without a word, as uvicorn's keep-alive timeout does: no request was refused."""
            if self._heard:
                self._refuse(status, reason)
            else:
                self._disarm()
                self.transport.close()

        def _refuse(self, status: int, reason: str) -> None:
            """Answer `status` before (or instead of) a request, log it, close."""
            self._disarm()
            log_refusal(status, reason, self.client, None, None)
            body = json.dumps(refusal_body(status, reason)).encode()
            head = (f"HTTP/1.1 {status} {_PHRASES[status]}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
            if not self.transport.is_closing():
                self.transport.write(head.encode() + body)
                self.transport.close()

    return GuardedProtocol


class WithoutRestatedRefusals(logging.Filter):
    """Drops uvicorn's own line about a request `GuardedProtocol` refuses and logs itself, with the address."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."
