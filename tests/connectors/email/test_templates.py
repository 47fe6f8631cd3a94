"""Rendering templates for a lead: the shipped welcome, escaping, and strictness."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.email.errors import EmailRenderError
from connectors.email.templates import TemplateRenderer
from leads.sequences import load_sequences

CONFIG = Path(__file__).parents[3] / "config"
WELCOME = load_sequences(CONFIG / "sequences.yaml")["welcome_sequence"].steps[0]


def a_lead(**given: object) -> dict[str, object]:
    fields: dict[str, object] = dict.fromkeys(
        ("email", "first_name", "last_name", "company", "job_title", "city")
    )
    fields["custom"] = {}
    return fields | given


def render_welcome(lead):
    return TemplateRenderer(CONFIG / "templates").render(
        WELCOME.template, WELCOME.subject, lead
    )


class TestTheWelcome:
    def test_greets_a_lead_by_first_name_and_company(self):
        rendered = render_welcome(a_lead(first_name="Ada", company="Analytical Ltd"))

        assert rendered.subject == "Welcome, Ada!"
        assert rendered.text.startswith("Hello Ada,\n")
        assert "on behalf of Analytical Ltd." in rendered.text
        assert "<p>Hello Ada,</p>" in rendered.html
        assert "<strong>Analytical Ltd</strong>" in rendered.html

    def test_reads_well_without_a_name_or_company(self):
        rendered = render_welcome(a_lead())

        assert rendered.subject == "Welcome!"
        assert rendered.text.startswith("Hello,\n")
        assert "Thank you for getting in touch.\n" in rendered.text
        assert "None" not in rendered.text + rendered.html
        assert "<p>Hello,</p>" in rendered.html

    def test_escapes_lead_values_in_html_only(self):
        rendered = render_welcome(
            a_lead(first_name="<b>Ada</b>", company="Smith & <Sons>")
        )

        assert "&lt;b&gt;Ada&lt;/b&gt;" in rendered.html
        assert "Smith &amp; &lt;Sons&gt;" in rendered.html
        assert "Hello <b>Ada</b>," in rendered.text
        assert rendered.subject == "Welcome, <b>Ada</b>!"

    def test_the_templates_pass_their_own_check(self):
        TemplateRenderer(CONFIG / "templates").check(WELCOME.template, WELCOME.subject)


class TestStrictness:
    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        (tmp_path / "plan.txt.j2").write_text("Your plan: {{ lead.custom.plan }}\n")
        (tmp_path / "plan.html.j2").write_text("<p>{{ lead.custom.plan }}</p>\n")
        (tmp_path / "typo.txt.j2").write_text("Hello {{ lead.frist_name }}\n")
        (tmp_path / "typo.html.j2").write_text("<p>Hello</p>\n")
        (tmp_path / "broken.txt.j2").write_text("Hello {% if %}\n")
        (tmp_path / "broken.html.j2").write_text("<p>Hello</p>\n")
        (tmp_path / "text_only.txt.j2").write_text("Hello\n")
        return tmp_path

    def test_renders_custom_fields_when_the_lead_has_them(self, folder):
        rendered = TemplateRenderer(folder).render(
            "plan", "Hi", a_lead(custom={"plan": "Pro"})
        )

        assert (rendered.text, rendered.html) == ("Your plan: Pro\n", "<p>Pro</p>\n")

    def test_a_field_the_lead_lacks_fails_instead_of_rendering_blank(self, folder):
        with pytest.raises(EmailRenderError, match="plan.txt.j2 does not render"):
            TemplateRenderer(folder).render("plan", "Hi", a_lead())

    def test_a_misspelt_field_fails(self, folder):
        with pytest.raises(EmailRenderError, match="frist_name"):
            TemplateRenderer(folder).render("typo", "Hi", a_lead())

    def test_a_template_that_does_not_compile_fails_its_check(self, folder):
        with pytest.raises(EmailRenderError, match="'broken.txt.j2'.*cannot be loaded"):
            TemplateRenderer(folder).check("broken", "Hi")

    def test_a_missing_html_template_fails_its_check(self, folder):
        with pytest.raises(EmailRenderError, match="'text_only.html.j2'"):
            TemplateRenderer(folder).check("text_only", "Hi")

    def test_a_subject_that_does_not_compile_fails_its_check(self, folder):
        with pytest.raises(EmailRenderError, match="subject .* does not compile"):
            TemplateRenderer(folder).check("plan", "Hi {{ lead.first_name ")

    def test_an_expression_failing_on_a_value_is_a_render_error(self, folder):
        with pytest.raises(EmailRenderError, match="TypeError"):
            TemplateRenderer(folder).render(
                "plan", "{{ lead.first_name + 1 }}", a_lead(custom={"plan": "Pro"})
            )


class TestUnsubscribeLink:
    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        (tmp_path / "news.txt.j2").write_text(
            "News{% if unsubscribe_url %}\nStop: {{ unsubscribe_url }}{% endif %}\n"
        )
        (tmp_path / "news.html.j2").write_text(
            '<p>News</p>{% if unsubscribe_url %}<a href="{{ unsubscribe_url }}">'
            "Stop</a>{% endif %}\n"
        )
        return tmp_path

    def test_templates_read_the_link_when_given(self, folder):
        rendered = TemplateRenderer(folder).render(
            "news", "Hi", a_lead(), unsubscribe_url="https://x.example/u/a?b=1&c=2"
        )

        assert rendered.text == "News\nStop: https://x.example/u/a?b=1&c=2\n"
        assert 'href="https://x.example/u/a?b=1&amp;c=2"' in rendered.html

    def test_the_link_is_none_not_undefined_when_absent(self, folder):
        rendered = TemplateRenderer(folder).render("news", "Hi", a_lead())

        assert (rendered.text, rendered.html) == ("News\n", "<p>News</p>\n")
