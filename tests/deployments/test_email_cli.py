"""`orchestrator mailbox`: a local SMTP server that keeps what it receives."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from connectors.email.messages import build_message
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import RenderedEmail

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))
SENDER = "Automation Orchestrator <noreply@localhost>"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"the mailbox never listened:\n{log.read_text()}")


@pytest.mark.slow
def test_keeps_each_message_as_a_file_until_terminated(tmp_path):
    port, folder = free_port(), tmp_path / "mailbox"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_DATA_DIR"] = str(tmp_path)
    log = tmp_path / "mailbox.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [ORCHESTRATOR, "mailbox", "--port", str(port), "--folder", str(folder)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, server, log)
        relay = SmtpOutbox.from_url(f"smtp://127.0.0.1:{port}")
        message = build_message(
            RenderedEmail("Hello", "Hi\n", "<p>Hi</p>"),
            sender=SENDER,
            recipient="ada@example.com",
        )
        relay.send(message)
        deadline = time.monotonic() + 10
        while not list(folder.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=15)

    (kept,) = folder.glob("*.eml")
    received = message_from_bytes(kept.read_bytes(), policy=policy.default)
    assert received["X-Mailbox-Rcpt-To"] == "ada@example.com"
    assert received["Subject"] == "Hello"
    assert received["Message-ID"] == message["Message-ID"]
    assert f"SMTP mailbox on smtp://127.0.0.1:{port}" in log.read_text()


def test_a_busy_port_is_one_line_naming_the_option(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_DATA_DIR"] = str(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [ORCHESTRATOR, "mailbox", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert done.returncode == 1
    assert done.stderr == (
        f"error: port {port} on 127.0.0.1 is in use; pass another --port\n"
    )
