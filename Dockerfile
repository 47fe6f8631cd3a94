# The one image of every process in compose.yaml: the API, the Prefect server
# and its background services, the worker, and the one-shot migrate and deploy
# jobs. Its default command serves the API; `docker run IMAGE db upgrade` runs
# any other `orchestrator` command.
#
# The image is not built in CI: no container engine runs there.
# tests/test_containers.py checks this file, .dockerignore and compose.yaml
# statically (sources, commands, settings, what ends up in /app).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_SERVER_UI_STATIC_DIRECTORY=/var/lib/orchestrator/prefect-ui \
    ORCH_DATA_DIR=/data \
    ORCH_API_HOST=0.0.0.0 \
    ORCH_API_PORT=8000 \
    ORCH_CRM=none

# A fixed uid, so a volume's files keep one owner across rebuilds. The
# processes write to /data (imports, outbox, models, the Prefect client's home)
# and their home only: the Prefect server copies its UI's files out of
# site-packages, which stays root's, into PREFECT_SERVER_UI_STATIC_DIRECTORY.
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --uid 10001 --gid orchestrator --create-home \
        --home-dir /var/lib/orchestrator orchestrator \
    && mkdir /data \
    && chown orchestrator:orchestrator /data

# The checkout's layout, kept as it is: the code finds config/ and prefect.yaml
# next to its packages, and every flow run a worker starts changes to this
# directory (prefect.yaml's pull step records where `orchestrator deploy` ran).
# So the project is installed in place (`--editable`), without the test extra.
WORKDIR /app
COPY pyproject.toml README.md alembic.ini prefect.yaml ./
COPY config ./config
COPY api ./api
COPY connectors ./connectors
COPY deployments ./deployments
COPY flows ./flows
COPY leads ./leads
COPY tasks ./tasks
RUN pip install --editable . \
    && python -m compileall -q /app

USER 10001:10001
EXPOSE 8000 4200

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ORCH_API_PORT', '8000'), timeout=4)"

ENTRYPOINT ["orchestrator"]
CMD ["api"]
