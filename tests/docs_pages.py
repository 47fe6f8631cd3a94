"""Reading a docs page as a browser would: what it fetches, what it runs inline."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser


class Page(HTMLParser):
    """The parts of an HTML page a Content-Security-Policy governs."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inline_scripts: list[str] = []
        self.script_sources: list[str] = []
        self.links: list[str] = []
        # Every `src` and `href`, of any element: what a browser would fetch.
        self.fetched: list[str] = []
        self._in_inline_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for attribute in ("src", "href"):
            if named.get(attribute):
                self.fetched.append(named[attribute] or "")
        if tag == "script":
            if named.get("src"):
                self.script_sources.append(named["src"] or "")
            else:
                self._in_inline_script = True
                self.inline_scripts.append("")
        elif tag == "link" and named.get("href"):
            self.links.append(named["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts[-1] += data


def sha256_source(script: str) -> str:
    """The CSP source allowing this inline script by its hash."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return f"'sha256-{digest}'"


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy's directives with their values."""
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed
