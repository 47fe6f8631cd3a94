"""The file outbox: whole `.eml` files only, in a folder it creates."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from connectors.email.errors import EmailDeliveryError, EmailError
from connectors.email.file_outbox import FileOutbox
from connectors.email.messages import build_message
from connectors.email.templates import RenderedEmail

RENDERED = RenderedEmail("Welcome, Ada!", "Hello Ada,\n", "<p>Hello Ada,</p>\n")


def a_message() -> EmailMessage:
    return build_message(
        RENDERED,
        sender="Automation Orchestrator <noreply@localhost>",
        recipient="ada@example.com",
    )


def test_writes_one_parseable_eml_file_and_returns_its_message_id(tmp_path):
    message = a_message()

    message_id = FileOutbox(tmp_path).send(message)

    (written,) = tmp_path.iterdir()
    assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{16}\.eml", written.name)
    assert message_id == message["Message-ID"]
    read = message_from_bytes(written.read_bytes(), policy=policy.default)
    assert read["Message-ID"] == message_id
    assert read["To"] == "ada@example.com"
    assert read.get_body(("plain",)).get_content() == "Hello Ada,\r\n"


def test_files_sort_in_the_order_they_were_written(tmp_path):
    outbox = FileOutbox(tmp_path)
    ids = [outbox.send(a_message()) for _ in range(5)]

    files = sorted(tmp_path.iterdir())

    read = [message_from_bytes(f.read_bytes())["Message-ID"] for f in files]
    assert read == ids


def test_creates_the_folder_when_it_is_missing(tmp_path):
    folder = tmp_path / "data" / "outbox"

    FileOutbox(folder).send(a_message())

    assert [p.suffix for p in folder.iterdir()] == [".eml"]


def test_leaves_no_temporary_files_behind(tmp_path):
    outbox = FileOutbox(tmp_path)
    for _ in range(20):
        outbox.send(a_message())

    names = [p.name for p in tmp_path.iterdir()]

    assert len(names) == 20
    assert all(name.endswith(".eml") and not name.startswith(".") for name in names)


def test_a_folder_that_cannot_be_made_is_a_delivery_error(tmp_path):
    blocked = tmp_path / "outbox"
    blocked.write_text("a file where the folder should be")

    with pytest.raises(EmailDeliveryError) as caught:
        FileOutbox(blocked / "inner").send(a_message())

    assert isinstance(caught.value, OSError)
    assert isinstance(caught.value, EmailError)
    assert isinstance(caught.value.__cause__, OSError)
    assert [p.name for p in tmp_path.iterdir()] == ["outbox"]


def test_a_message_without_a_message_id_is_refused(tmp_path):
    message = a_message()
    del message["Message-ID"]

    with pytest.raises(ValueError, match="Message-ID"):
        FileOutbox(tmp_path).send(message)

    assert list(tmp_path.iterdir()) == []


def test_delivered_tells_whether_a_message_id_is_in_the_outbox(tmp_path):
    outbox = FileOutbox(tmp_path)
    message_id = outbox.send(a_message())

    assert outbox.delivered(message_id) is True
    assert outbox.delivered("<never-sent@localhost>") is False
