"""What a request may ask for, and the checks that run before any model code does.

Everything here is pure: a request's headers, body and JSON in, a checked value or a
:class:`RequestError` (an HTTP status and a message for the user) out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for.

    Attributes:
        max_body_bytes: request body size (larger: 413).
        max_chars: characters of input text (more: 400).
        max_tokens: source tokens after tokenisation (more: 400); bounds the work and the reply
            size.
        max_output_tokens: tokens the model may write.
        max_texts: texts in one request to the batch endpoint (more: 400).
    """

    max_body_bytes: int = 16 * 1024
    max_chars: int = 500
    max_tokens: int = 128
    max_output_tokens: int = 160
    max_texts: int = 64


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the user."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def body_length(headers: Mapping[str, str], limits: ServeLimits) -> int:
    """The declared body length, once the headers say the body is JSON of an acceptable size.

    Raises:
        RequestError: chunked or unsized (411), a bad length (400), too large (413), not JSON (415).
    """
    if headers.get("transfer-encoding"):
        raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
    length_header = headers.get("content-length")
    if length_header is None:
        raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
    try:
        length = int(length_header)
    except ValueError:
        length = -1
    if length < 0:
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length header")
    if length > limits.max_body_bytes:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the request body is {length} bytes; the limit is {limits.max_body_bytes}",
        )
    # JSON only: a form post from another web site is a "simple" request that needs no CORS
    # preflight, a JSON one is not.
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RequestError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON with Content-Type: application/json"
        )
    return length


def parse_json_object(body: bytes, length: int) -> dict[str, Any]:
    """The body (``length`` bytes were declared) as a JSON object.

    Raises:
        RequestError: cut short, not UTF-8, not JSON, or not an object (400).
    """
    if len(body) < length:
        raise RequestError(HTTPStatus.BAD_REQUEST, "the request body was cut short")
    try:
        request = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "the request body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid JSON: {e.msg}") from None
    except ValueError as e:  # e.g. an integer of thousands of digits (Python's own limit)
        raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid JSON: {e}") from None
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "invalid JSON: nested too deeply") from None
    if not isinstance(request, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, 'expected a JSON object {"text": "..."}')
    return request


def check_text(text: Any, limits: ServeLimits, name: str = "the text") -> str:
    """One input text, checked: a non-blank string of valid Unicode within ``max_chars``.

    Raises:
        RequestError: it is not (400); the message starts with ``name``.
    """
    if not isinstance(text, str):
        raise RequestError(HTTPStatus.BAD_REQUEST, 'expected {"text": "..."} with a string')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON's "\ud800" escapes decode to a lone surrogate
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"{name} holds a lone surrogate (U+{ord(text[e.start]):04X}) at character "
            f"{e.start}: not valid Unicode",
        ) from None
    if len(text) > limits.max_chars:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"{name} has {len(text)} characters; the limit is {limits.max_chars}",
        )
    if not text.strip():
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} is empty")
    return text


def check_texts(request: dict[str, Any], limits: ServeLimits, max_texts: int) -> list[str]:
    """The inputs of a batch request: ``{"text": str}`` or ``{"texts": [str, ...]}``.

    Raises:
        RequestError: neither or both given, not a list of 1..``max_texts`` strings, or one of the
            texts fails :func:`check_text` (400, naming it).
    """
    if ("text" in request) == ("texts" in request):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, 'expected {"text": "..."} or {"texts": ["...", ...]}'
        )
    if "text" in request:
        return [check_text(request["text"], limits)]
    texts = request["texts"]
    if not isinstance(texts, list) or not texts:
        raise RequestError(HTTPStatus.BAD_REQUEST, '"texts" must be a non-empty list of strings')
    if len(texts) > max_texts:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f'"texts" has {len(texts)} texts; the limit is {max_texts}'
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"texts[{i}] is not a string")
        check_text(text, limits, f"texts[{i}]")
    return texts


#: Texts one request may ban (each is a comparison per decoding step).
MAX_BANNED = 64


def _is_count(value: Any) -> bool:
    # bool is an int in Python: JSON's true must not pass as 1.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_penalty(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and 0 < value < math.inf  # JSON's NaN and Infinity parse as floats


def _is_texts(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_BANNED
        and all(isinstance(t, str) for t in value)
    )


#: The decoding controls a request may set: name -> (check of the JSON value, what it must be).
_CONTROL_FIELDS: dict[str, tuple[Any, str]] = {
    "repetition_penalty": (_is_penalty, "a number > 0"),
    "no_repeat_ngram": (_is_count, "an integer >= 0"),
    "min_len": (_is_count, "an integer >= 0"),
    "ban": (_is_texts, f"a list of at most {MAX_BANNED} strings"),
}


def request_controls(request: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """The decoding controls a request sets, checked.

    Raises:
        RequestError: one of them is of the wrong type or out of range (400).
    """
    controls = {}
    for name, (ok, what) in _CONTROL_FIELDS.items():
        if name not in request:
            continue
        value = request[name]
        if not ok(value):
            raise RequestError(HTTPStatus.BAD_REQUEST, f'"{name}" must be {what}')
        controls[name] = value
    if any(len(t) > max_chars for t in controls.get("ban", ())):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f'"ban": each text may have at most {max_chars} characters'
        )
    return controls


def controls_key(controls: dict[str, Any]) -> str:
    """A hashable, canonical form of checked controls (keys sorted): requests share a decoding
    batch only when these are equal, so no request is decoded with another's settings."""
    return json.dumps(controls, sort_keys=True, separators=(",", ":"))
