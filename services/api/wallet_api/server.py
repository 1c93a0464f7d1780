"""The HTTP server under the apps: what a request gets that aiohttp's parser refused.

aiohttp answers a request it cannot parse (a header over 8190 bytes, a malformed request
line) before any handler or middleware runs, with a text body that quotes the start of
the offending line, and logs the exception with that text. For an oversized
``Authorization`` header that is the credential itself, echoed to the client and written
to the log. Here such a request gets a JSON error that names what is wrong in our own
words, and the log line names the kind of error only. Nothing a client sent is repeated.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine, HttpProcessingError, InvalidHeader, LineTooLong
from aiohttp.web_protocol import RequestHandler

from wallet_api.app import json_error

log = logging.getLogger(__name__)


def describe_parse_error(exc: BaseException | None) -> str:
    """A client-facing reason for a request the parser refused, never the parser's own text."""
    if isinstance(exc, LineTooLong):
        return (
            "a request line or header field is too long: each may be at most 8190 bytes "
            "(an Authorization header carries one token)"
        )
    if isinstance(exc, BadHttpMethod):
        return "the request method is not valid HTTP"
    if isinstance(exc, BadStatusLine):
        return "the request line is not valid HTTP/1.1"
    if isinstance(exc, InvalidHeader):
        return "a header field is malformed"
    return "the request is not valid HTTP/1.1"


class _RequestHandler(RequestHandler):
    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status == HTTPStatus.INTERNAL_SERVER_ERROR or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # Debug, as aiohttp logs a first bad method (scanners, TLS on a plain port); the kind of
        # error only: its message quotes what the client sent.
        log.debug("refused an unparsable request from %s: %s", request.remote, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent: no room for the error")
        response = json_error(status, describe_parse_error(exc))
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparsable requests without echoing them."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, our protocol factory
        return server
