"""Rendering a step's subject, text and HTML for one lead from Jinja2 templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    select_autoescape,
)

from connectors.email.errors import EmailRenderError

# What a template expression can raise on a lead's values besides Jinja's own
# errors, e.g. `{{ lead.score + 1 }}` for a lead without a score.
_EXPRESSION_ERRORS = (
    TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True)
class RenderedEmail:
    """The parts of one e-mail as its templates produced them."""

    subject: str
    text: str
    html: str


class TemplateRenderer:
    """Renders `<template>.txt.j2` and `<template>.html.j2` from one folder.

    Every name a template uses must exist (StrictUndefined): a misspelt field
    fails loudly instead of leaving a blank in a sent e-mail. HTML templates
    escape the lead's values; text templates and subjects do not.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._environment = Environment(
            loader=FileSystemLoader(self.folder),
            undefined=StrictUndefined,
            autoescape=select_autoescape(
                enabled_extensions=("html.j2",),
                default_for_string=False,
                default=False,
            ),
            keep_trailing_newline=True,
        )
        self._subjects: dict[str, Template] = {}

    def check(self, template: str, subject: str) -> None:
        """Loads and compiles a step's templates and subject without rendering them.

        Raises:
            EmailRenderError: a template file is missing or does not compile.
        """
        for name in (f"{template}.txt.j2", f"{template}.html.j2"):
            self._load(name)
        self._subject(subject)

    def render(
        self,
        template: str,
        subject: str,
        lead: Mapping[str, Any],
        *,
        unsubscribe_url: str | None = None,
    ) -> RenderedEmail:
        """The step's subject, text and HTML for one lead.

        Args:
            template: the stem of the step's two template files.
            subject: the step's subject, a template itself.
            lead: the lead's own fields by name, each present (None when empty).
            unsubscribe_url: the lead's one-click unsubscribe link for marketing
                e-mail; templates read it as `unsubscribe_url`, None when absent.

        Raises:
            EmailRenderError: a template is missing, does not compile, or fails
                for this lead's values; the message names the template.
        """
        context = {"lead": dict(lead), "unsubscribe_url": unsubscribe_url}
        return RenderedEmail(
            subject=self._render(self._subject(subject), "subject", context),
            text=self._render(self._load(f"{template}.txt.j2"), template, context),
            html=self._render(self._load(f"{template}.html.j2"), template, context),
        )

    def _load(self, name: str) -> Template:
        try:
            return self._environment.get_template(name)
        except TemplateError as exc:
            raise EmailRenderError(
                f"template {name!r} in {self.folder} cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _subject(self, subject: str) -> Template:
        compiled = self._subjects.get(subject)
        if compiled is None:
            try:
                compiled = self._environment.from_string(subject)
            except TemplateError as exc:
                raise EmailRenderError(
                    f"subject {subject!r} does not compile: {exc}"
                ) from exc
            self._subjects[subject] = compiled
        return compiled

    @staticmethod
    def _render(template: Template, label: str, context: dict[str, Any]) -> str:
        try:
            return template.render(context)
        except _EXPRESSION_ERRORS as exc:
            raise EmailRenderError(
                f"{template.name or label} does not render for this lead: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
