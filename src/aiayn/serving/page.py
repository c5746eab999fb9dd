"""The page: one self-contained HTML file (inline CSS and JS, nothing from a CDN) and the
Content-Security-Policy that lets only its own inline script and style run."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from ..errors import AiaynError

PAGE_RESOURCE = "serve_page.html"


def load_page() -> tuple[bytes, str]:
    """The page's bytes and its Content-Security-Policy (hashes of its inline script and style)."""
    try:
        html = resources.files("aiayn").joinpath(PAGE_RESOURCE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AiaynError(
            f"aiayn/{PAGE_RESOURCE} is missing from the installed package (it is package data; "
            "reinstall aiayn)"
        ) from None

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in blocks
        )

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.encode("utf-8"), csp
