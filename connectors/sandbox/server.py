"""Running the sandbox: in the foreground for `orchestrator sandbox`, or in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from connectors.sandbox.app import SandboxState, create_app


def serve(
    host: str = "127.0.0.1", port: int = 8100, state_file: Path | None = None
) -> None:
    """Serves the sandbox until interrupted, keeping its records in `state_file`."""
    # "on", not "auto": under "auto" a failing startup is taken for a missing
    # lifespan and the sandbox would serve without ever saving.
    uvicorn.run(
        create_app(state_file=state_file),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
    )


@contextmanager
def running_sandbox(
    state: SandboxState | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    state_file: Path | None = None,
) -> Iterator[tuple[str, SandboxState]]:
    """A sandbox serving in a background thread; yields its base URL and state.

    Port 0 takes a free one. The server stops when the block ends, saving to
    `state_file` if one was given; without one, nothing outlives the block.
    """
    state = state or SandboxState()
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(state, state_file),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
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
