"""Running the sandbox: in the foreground for `orchestrator sandbox`, or in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from connectors.sandbox.app import SandboxState, create_app


def serve(host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serves the sandbox until interrupted."""
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


@contextmanager
def running_sandbox(
    state: SandboxState | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[tuple[str, SandboxState]]:
    """A sandbox serving in a background thread; yields its base URL and state.

    Port 0 takes a free one. The server stops when the block ends.
    """
    state = state or SandboxState()
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(state), host=host, port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="crm-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the CRM sandbox did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}", state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
