"""The kiosk's client of the 証明書交付センター: the HTTP adapter around ``kiosk.protocol``.

One method per protocol step (open → authenticate → menu → request → finalize, and the
incident report); each request is signed with the kiosk's own ECDSA key. :meth:`fetch
_document` runs the kiosk-side binding check on what the center returns and, when it fails,
reports the incident before raising — so a caller cannot print a document that was not
bound to its own session, and the center learns of it either way.

Kiosk credentials live in a directory the operator enrols (``kiosk.json``, ``kiosk.key``
0600, ``municipality-keys.json``); see :class:`KioskCredentials`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import httpx

from cardio.errors import CardioError
from kiosk.documents.model import Document
from kiosk.protocol.binding import (
    BadDocumentSignature,
    BindingMismatch,
    ExpectedSession,
    check_binding,
)
from kiosk.protocol.codec import MAX_DOCUMENT, Message, ProtocolError, decode, encode
from kiosk.protocol.credentials import KioskCredentials
from kiosk.protocol.kiosk_auth import request_headers
from kiosk.protocol.messages import (
    Authenticate,
    Authenticated,
    DocumentRequest,
    ErrorReply,
    Finalize,
    Finalized,
    IncidentRecorded,
    IncidentReport,
    IssuedDocument,
    Menu,
    MenuQuery,
    OpenSession,
    SessionOpened,
)

__all__ = ["CenterClient", "CenterUnavailable", "IssuanceRefused", "KioskCredentials"]

M = TypeVar("M", bound=Message)
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class HttpReply(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...


class HttpPoster(Protocol):
    """What the client needs of an HTTP client: an ``httpx.AsyncClient`` (the kiosk's),
    or the load generator's lean one. Transport failures are ``httpx.HTTPError``."""

    async def post(self, url: str, *, content: bytes, headers: Mapping[str, str]
                   ) -> HttpReply: ...

    async def aclose(self) -> None: ...


class IssuanceRefused(CardioError):
    """The center refused a step; ``code`` is the protocol's stable reason code."""

    exit_code = 6

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.reason = status, code, message


class CenterUnavailable(CardioError):
    """The center could not be reached or answered garbage."""

    exit_code = 5


class CenterClient:
    """Async client; share one per kiosk (it holds an HTTP connection pool)."""

    def __init__(self, creds: KioskCredentials, *, http: HttpPoster | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.creds = creds
        self.http: HttpPoster = http or httpx.AsyncClient(base_url=creds.center_url,
                                                          timeout=TIMEOUT)
        self.wall = wall

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> CenterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, path: str, msg: Message, cls: type[M], *,
                    limit: int = 64 * 1024) -> M:
        body = encode(msg)
        headers = request_headers(self.creds.key, self.creds.kiosk_id, "POST", path, body,
                                  self.wall())
        headers["content-type"] = "application/json"
        rid = getattr(msg, "request_id", None)
        if rid:
            headers["x-request-id"] = rid
        try:
            resp = await self.http.post(path, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise CenterUnavailable(f"center unreachable: {type(e).__name__}") from None
        try:
            if resp.status_code != 200:
                err = decode(ErrorReply, resp.content)
                raise IssuanceRefused(resp.status_code, err.error, err.message)
            return decode(cls, resp.content, limit=limit)
        except ProtocolError as e:
            raise CenterUnavailable(f"the center's answer is not a {cls.__name__}: {e}"
                                    ) from None

    async def open(self, request_id: str) -> SessionOpened:
        return await self._post("/v1/sessions", OpenSession(
            request_id=request_id, kiosk_id=self.creds.kiosk_id), SessionOpened)

    async def authenticate(self, opened: SessionOpened, certificate_der: bytes,
                           signature: bytes) -> Authenticated:
        import base64

        return await self._post(f"/v1/sessions/{opened.session_id}/authenticate", Authenticate(
            request_id=opened.request_id, session_id=opened.session_id,
            certificate=base64.b64encode(certificate_der).decode(),
            signature=base64.b64encode(signature).decode()), Authenticated)

    async def menu(self, request_id: str, session_id: str) -> Menu:
        return await self._post(f"/v1/sessions/{session_id}/menu", MenuQuery(
            request_id=request_id, session_id=session_id), Menu)

    async def request_document(self, request_id: str, session_id: str, doc_type: str,
                               options: dict[str, str] | None = None) -> IssuedDocument:
        return await self._post(f"/v1/sessions/{session_id}/documents", DocumentRequest(
            request_id=request_id, session_id=session_id, doc_type=doc_type,
            options=options or {}), IssuedDocument, limit=MAX_DOCUMENT)

    async def fetch_document(self, expected: ExpectedSession,
                             options: dict[str, str] | None = None) -> tuple[Document, int]:
        """Request the document and run the binding check: the document and its fee, or
        (after reporting the incident) :class:`BindingMismatch` or
        :class:`BadDocumentSignature`."""
        issued = await self.request_document(expected.request_id, expected.session_id,
                                             expected.doc_type, options)
        return await self.checked(expected, issued), issued.fee

    def check(self, expected: ExpectedSession, issued: IssuedDocument) -> Document:
        """The pure check, without the report (see :meth:`checked`)."""
        return check_binding(expected, issued.signed, self.creds.municipality_keys)

    async def checked(self, expected: ExpectedSession, issued: IssuedDocument) -> Document:
        try:
            return self.check(expected, issued)
        except (BindingMismatch, BadDocumentSignature) as e:
            kind = "binding_mismatch" if isinstance(e, BindingMismatch) else "bad_signature"
            # Nothing prints either way; if the center cannot be told now, the controller
            # journals the incident and retries.
            with contextlib.suppress(IssuanceRefused, CenterUnavailable):
                await self.report_incident(expected.request_id, expected.session_id, kind,
                                           str(e)[:200])
            raise

    async def finalize(self, request_id: str, session_id: str, outcome: str) -> Finalized:
        return await self._post(f"/v1/sessions/{session_id}/finalize", Finalize(
            request_id=request_id, session_id=session_id, outcome=outcome), Finalized)

    async def report_incident(self, request_id: str, session_id: str, kind: str,
                              detail: str) -> IncidentRecorded:
        return await self._post("/v1/incidents", IncidentReport(
            request_id=request_id, session_id=session_id, kind=kind, detail=detail),
            IncidentRecorded)
