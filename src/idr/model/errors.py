"""Handle response codes (RFC 3652 §2.2.2.1, Handle.Net 9 ``AbstractMessage``) and the one error type."""

from __future__ import annotations

from enum import IntEnum


class ResponseCode(IntEnum):
    RESERVED = 0
    SUCCESS = 1
    ERROR = 2
    SERVER_TOO_BUSY = 3
    PROTOCOL_ERROR = 4
    OPERATION_NOT_SUPPORTED = 5
    RECURSION_COUNT_TOO_HIGH = 6
    SERVER_READ_ONLY = 7
    HANDLE_NOT_FOUND = 100
    HANDLE_ALREADY_EXISTS = 101
    INVALID_HANDLE = 102
    VALUES_NOT_FOUND = 200
    VALUE_ALREADY_EXISTS = 201
    INVALID_VALUE = 202
    OUT_OF_DATE_SITE_INFO = 300
    SERVER_NOT_RESPONSIBLE = 301
    SERVICE_REFERRAL = 302
    PREFIX_REFERRAL = 303
    INVALID_ADMIN = 400
    INSUFFICIENT_PERMISSIONS = 401
    AUTHENTICATION_NEEDED = 402
    AUTHENTICATION_FAILED = 403
    INVALID_CREDENTIAL = 404
    AUTHEN_TIMEOUT = 405
    AUTHEN_ERROR = 406
    SESSION_TIMEOUT = 500
    SESSION_FAILED = 501
    INVALID_SESSION_KEY = 502
    NEED_RSAKEY_FOR_SESSIONEXCHANGE = 503
    INVALID_SESSIONSETUP_REQUEST = 504
    SESSION_MESSAGE_REJECTED = 505
    # Teleinfo id-pointer-sdk (``AbstractMessage`` RC_REQUEST_LIMIT_DAILY, RC_REGISTER_COUNT_LIMIT,
    # RC_PREFIX_LIMIT): quota refusals of the national platform's nodes, decoded by the SDK as
    # error responses (message text body). Its 601 and 602 are client-side only, never sent.
    REQUEST_LIMIT_DAILY = 603
    REGISTER_COUNT_LIMIT = 604
    PREFIX_LIMIT = 605


class HandleError(Exception):
    """A request that cannot be carried out; ``code`` is what goes back to the client."""

    def __init__(self, code: ResponseCode, message: str = "") -> None:
        super().__init__(message or code.name.lower().replace("_", " "))
        self.code = code
        self.message = str(self.args[0])

    def __repr__(self) -> str:
        return f"HandleError({self.code.name}, {self.message!r})"
