"""The container files, checked without a container engine (none runs in CI).

The Dockerfile, .dockerignore and compose.yaml are read as text and YAML and
held against the code: every command resolves to a real `orchestrator` or
`prefect` command with real options, every file named exists and reaches the
image where the code looks for it, every `ORCH_*` variable is a setting and
every `PREFECT_*` one a setting of Prefect or prefect-redis, with values those
settings accept. The validators return the problems they find; the negative
tests run them on broken copies to show that they find them.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import make_url
from typer.core import TyperGroup
from typer.exceptions import TyperException

ROOT = Path(__file__).parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
EXAMPLE_ENV = ROOT / "deployments" / "containers" / "example.env"

SERVICES = {
    "postgres",
    "redis",
    "prefect-server",
    "prefect-services",
    "migrate",
    "deploy",
    "worker",
    "api",
}
# Files the code finds next to its packages (config_dir, PROJECT_ROOT, the
# migrations beside leads/store): they must sit in the image as in the checkout.
RUNTIME_FILES = ("prefect.yaml", "alembic.ini", "pyproject.toml", "README.md")
RUNTIME_FOLDERS = ("config", "leads/store/migrations")
# Ports the official images listen on (their documentation's defaults).
IMAGE_PORTS = {"postgres": 5432, "redis": 6379}
LOOPBACK = {"127.0.0.1", "localhost"}
DEPENDENCY_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}
# Stands in for every required ${VAR:?...}: letters and digits, as the
# example file asks for, so URLs built from it parse.
PLACEHOLDER = "placeholder0secret"


# --- The Dockerfile --------------------------------------------------------


@dataclass
class Image:
    """What the Dockerfile builds, as far as a reading of it tells."""

    base: str = ""
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] | None = None
    runs: list[str] = field(default_factory=list)
    # Path in the image -> path in the build context.
    files: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            yield keyword.upper(), arguments.strip()


def command_words(arguments: str) -> list[str]:
    """The words of an exec-form (JSON) or shell-form command."""
    if arguments.startswith("["):
        return [str(word) for word in json.loads(arguments)]
    return shlex.split(arguments)


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (excludes, pattern) pairs, later ones winning.

    Docker's syntax as this project uses it: `*` and `?` stay within one path
    segment, `**` spans any number, a leading `!` re-includes; a pattern that
    matches a folder covers everything in it.
    """
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex, index = "", 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif pattern[index] == "?":
                regex, index = regex + "[^/]", index + 1
            else:
                regex, index = regex + re.escape(pattern[index]), index + 1
        rules.append((excludes, re.compile(regex)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    ignored = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = excludes
    return ignored


def build_context(root: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> set[str]:
    """Every file of `root` that reaches the build, as a relative POSIX path."""
    can_prune = all(excludes for excludes, _ in rules)
    found: set[str] = set()
    for folder, subfolders, files in os.walk(root):
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        if can_prune:
            subfolders[:] = [s for s in subfolders if not is_ignored(prefix + s, rules)]
        found |= {prefix + f for f in files if not is_ignored(prefix + f, rules)}
    return found


def read_image(dockerfile: str, dockerignore: str, root: Path = ROOT) -> Image:
    """Follows the Dockerfile's instructions over the build context."""
    image = Image()
    rules = ignore_rules(dockerignore)
    context = build_context(root, rules)
    for keyword, arguments in instructions(dockerfile):
        if keyword == "FROM":
            image.base = arguments.split()[0]
        elif keyword == "ENV":
            image.env |= dict(word.split("=", 1) for word in shlex.split(arguments))
        elif keyword == "WORKDIR":
            image.workdir = posixpath.join(image.workdir, arguments)
        elif keyword == "USER":
            image.user = arguments
        elif keyword == "ENTRYPOINT":
            image.entrypoint, image.cmd = command_words(arguments), []
        elif keyword == "CMD":
            image.cmd = command_words(arguments)
        elif keyword == "RUN":
            image.runs.append(arguments)
        elif keyword == "HEALTHCHECK":
            options, _, test = arguments.partition("CMD ")
            image.healthcheck = command_words(test) if test else None
        elif keyword in ("COPY", "ADD"):
            _copy(image, arguments, root, context, rules)
    return image


def _copy(
    image: Image,
    arguments: str,
    root: Path,
    context: set[str],
    rules: list[tuple[bool, re.Pattern[str]]],
) -> None:
    words = command_words(arguments)
    if any(word.startswith("--from") for word in words):
        return  # another stage's files, not the build context's
    *sources, destination = [word for word in words if not word.startswith("--")]
    target = posixpath.normpath(posixpath.join(image.workdir, destination))
    for source in sources:
        source = posixpath.normpath(source)
        inside = [path for path in context if path.startswith(source + "/")]
        if source == ".":
            inside = sorted(context)
        if source in context:
            into_folder = destination.endswith("/") or len(sources) > 1
            name = posixpath.basename(source)
            image.files[posixpath.join(target, name) if into_folder else target] = (
                source
            )
        elif inside:
            # A folder's contents are copied, not the folder itself.
            cut = 0 if source == "." else len(source) + 1
            for path in inside:
                image.files[posixpath.join(target, path[cut:])] = path
        elif (root / source).exists() and is_ignored(source, rules):
            image.problems.append(f"COPY {source}: excluded by .dockerignore")
        else:
            image.problems.append(f"COPY {source}: no such file in the repository")


def image_problems(image: Image, root: Path = ROOT) -> list[str]:
    """What is wrong with the image the Dockerfile builds."""
    problems = list(image.problems)
    if not re.fullmatch(r"python:3\.11[\w.-]*-slim", image.base):
        problems.append(f"FROM: expected python:3.11-slim, got {image.base!r}")
    if image.user is None or image.user.split(":")[0] in ("", "root", "0"):
        problems.append(f"USER: the image must not run as root, got {image.user!r}")
    problems += variable_problems(image.env, "Dockerfile ENV")
    # Prefect's server writes its UI's files at start, by default into
    # site-packages, which a non-root user cannot write.
    ui_files = image.env.get("PREFECT_SERVER_UI_STATIC_DIRECTORY", "")
    # The user's home (`useradd --home-dir`), its data volume, or scratch.
    home = re.search(r"--home-dir\s+(\S+)", DOCKERFILE.read_text())
    writable = ("/data/", "/tmp/") + ((home.group(1) + "/",) if home else ())
    if not ui_files.startswith(writable):
        problems.append(
            "ENV: PREFECT_SERVER_UI_STATIC_DIRECTORY must be writable by the "
            f"user, got {ui_files!r}"
        )

    installs = [run for run in image.runs if "pip install" in run]
    if not installs:
        problems.append("RUN: no `pip install` of the project")
    for run in installs:
        if "[" in run:
            problems.append(f"RUN: pip installs extras (no dev/test extras): {run!r}")

    # The code looks for these next to its packages: same layout under WORKDIR.
    wanted = {name for name in RUNTIME_FILES if (root / name).is_file()}
    for folder in RUNTIME_FOLDERS:
        wanted |= {
            p.relative_to(root).as_posix()
            for p in (root / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
    wanted |= {f"{package}/__init__.py" for package in project_packages(root)}
    wanted |= {entry.partition(":")[0] for entry in flow_entrypoints(root)}
    for path in sorted(wanted):
        if image.files.get(posixpath.join(image.workdir, path)) != path:
            problems.append(f"{path}: not in the image at {image.workdir}/{path}")

    if image.healthcheck is None:
        problems.append("HEALTHCHECK: none")
    else:
        port = int(image.env.get("ORCH_API_PORT", "8000"))
        problems += probe_problems(
            image.healthcheck, "Dockerfile HEALTHCHECK", api_probe, port
        )
    problems += command_problems(image.entrypoint + image.cmd, "Dockerfile ENTRYPOINT")
    return problems


def project_packages(root: Path) -> list[str]:
    """The top-level packages pyproject.toml installs."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*") for pattern in include})


def flow_entrypoints(root: Path) -> list[str]:
    definitions = yaml.safe_load((root / "prefect.yaml").read_text())
    return sorted({entry["entrypoint"] for entry in definitions["deployments"]})


# --- Commands ----------------------------------------------------------------


def command_problems(argv: list[str], where: str) -> list[str]:
    """Problems with a command line run in the image: `orchestrator` or `prefect`."""
    if not argv:
        return [f"{where}: no command"]
    program, *arguments = argv
    if program == "orchestrator":
        return [f"{where}: {p}" for p in orchestrator_problems(arguments)]
    if program == "prefect":
        return [f"{where}: {p}" for p in prefect_problems(tuple(arguments))]
    return [f"{where}: {program!r} is neither `orchestrator` nor `prefect`"]


@cache
def orchestrator_cli() -> Any:
    from deployments.cli import app

    return typer.main.get_command(app)


def orchestrator_problems(arguments: list[str]) -> list[str]:
    """Parses `orchestrator ARGUMENTS` as the CLI would, without running it."""
    command = orchestrator_cli()
    path = ["orchestrator"]
    remaining = list(arguments)
    # Typer carries its own copy of click: its classes, not click's.
    while isinstance(command, TyperGroup):
        if not remaining or remaining[0].startswith("-"):
            return [f"`{' '.join(path)}` needs a command"]
        name = remaining.pop(0)
        found = command.get_command(typer.Context(command), name)
        if found is None:
            return [f"`{' '.join(path)}` has no command {name!r}"]
        command, path = found, [*path, name]
    try:
        command.make_context(" ".join(path), remaining)
    except TyperException as exc:
        format_message = getattr(exc, "format_message", None)
        message = format_message() if format_message else str(exc)
        return [f"`{' '.join(path)}`: {message}"]
    return []


@cache
def prefect_help(path: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """`prefect PATH --help`, run by the virtualenv's Prefect in a home of its own."""
    prefect = str(Path(sys.executable).with_name("prefect"))
    with tempfile.TemporaryDirectory() as home:
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": home,
            "PREFECT_HOME": home,
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "COLUMNS": "200",  # long option names are not wrapped
        }
        return subprocess.run(
            [prefect, *path, "--help"],
            capture_output=True,
            text=True,
            env=environment,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )


def prefect_problems(arguments: tuple[str, ...]) -> list[str]:
    """The command exists (its --help succeeds) and lists every option given."""
    # Option values (`--port 4200`) follow an option; the path comes first.
    first_option = next(
        (i for i, word in enumerate(arguments) if word.startswith("-")), len(arguments)
    )
    path = arguments[:first_option]
    shown = prefect_help(path)
    if shown.returncode != 0:
        return [f"`prefect {' '.join(path)}` is not a command: {shown.stderr[-300:]}"]
    problems = []
    for word in arguments[first_option:]:
        option = word.split("=", 1)[0]
        if option.startswith("-") and not re.search(
            rf"(?<![\w-]){re.escape(option)}(?![\w-])", shown.stdout
        ):
            problems.append(f"`prefect {' '.join(path)}` has no option {option}")
    return problems


# --- Health checks -----------------------------------------------------------


@cache
def api_routes() -> list[Any]:
    from api.app import create_app
    from leads.settings import Settings

    with clean_environment({}):
        return create_app(Settings()).router.routes


def api_probe(path: str) -> bool:
    """Whether the API answers GET on `path` (a route, not a 404)."""
    from starlette.routing import Match

    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    return any(route.matches(scope)[0] is Match.FULL for route in api_routes())


def prefect_probe(path: str) -> bool:
    """Whether `path` is the health route of Prefect's API under its base path."""
    from prefect.server.api.server import create_api_app
    from prefect.settings import get_current_settings

    base = get_current_settings().server.api.base_path or "/api"
    health = inspect.signature(create_api_app).parameters["health_check_path"].default
    return path == base.rstrip("/") + health


def worker_probe(path: str) -> bool:
    """Whether Prefect's worker health server (`--with-healthcheck`) answers `path`."""
    from prefect.workers.server import _build_healthcheck_server
    from starlette.routing import Match

    app = _build_healthcheck_server(lambda: True).config.app
    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)


def probe_problems(
    test: list[str], where: str, answers: Callable[[str], bool], port: int
) -> list[str]:
    """A `python -c` probe: it compiles, and opens a real route on `port`.

    A URL built with `%s` for the port (read from the environment) is taken
    as asking `port`.
    """
    words = test[1:] if test[:1] in (["CMD"], ["CMD-SHELL"]) else test
    if words[:2] != ["python", "-c"] or len(words) != 3:
        return [f"{where}: expected `python -c CODE`, got {words!r}"]
    try:
        tree = ast.parse(words[2])
    except SyntaxError as exc:
        return [f"{where}: the probe does not compile: {exc}"]
    urls = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("http")
    ]
    if len(urls) != 1:
        return [f"{where}: expected one URL in the probe, found {urls!r}"]
    parts = urlsplit(urls[0].replace(":%s", f":{port}"))
    problems = []
    if parts.hostname not in LOOPBACK:
        problems.append(f"{where}: the probe asks {parts.hostname}, not the container")
    if parts.port != port:
        problems.append(f"{where}: the probe asks port {parts.port}, not {port}")
    if not answers(parts.path):
        problems.append(f"{where}: nothing answers GET {parts.path}")
    return problems


# --- Variables ---------------------------------------------------------------


@cache
def orchestrator_settings() -> frozenset[str]:
    from leads.settings import Settings

    return frozenset(f"ORCH_{name.upper()}" for name in Settings.model_fields)


@cache
def prefect_settings_classes() -> tuple[type[BaseModel], ...]:
    """Prefect's root settings and prefect-redis's own settings classes."""
    import prefect_redis
    from prefect.settings import Settings
    from prefect.settings.base import PrefectBaseSettings

    found: list[type[BaseModel]] = [Settings]
    for module in pkgutil.iter_modules(prefect_redis.__path__):
        loaded = importlib.import_module(f"prefect_redis.{module.name}")
        found += [
            value
            for value in vars(loaded).values()
            if isinstance(value, type)
            and issubclass(value, PrefectBaseSettings)
            and value.__module__ == loaded.__name__
        ]
    return tuple(found)


@cache
def prefect_settings() -> frozenset[str]:
    """Every environment variable Prefect 3.9 or prefect-redis reads a setting from."""
    # Prefect's own list of valid names, the one `prefect config set` checks.
    from prefect.settings.legacy import _get_valid_setting_names

    names: set[str] = set()
    for settings_class in prefect_settings_classes():
        names |= _get_valid_setting_names(settings_class)
    return frozenset(names)


def variable_problems(environment: dict[str, Any], where: str) -> list[str]:
    """Unknown ORCH_* and PREFECT_* names, and module settings naming no module."""
    problems = []
    for name, value in environment.items():
        if name.startswith("ORCH_") and name not in orchestrator_settings():
            problems.append(f"{where}: {name} is not a setting in leads/settings.py")
        if name.startswith("PREFECT_") and name not in prefect_settings():
            problems.append(
                f"{where}: {name} is not a Prefect or prefect-redis setting"
            )
        # Pluggable parts are named by module (prefect_redis.messaging).
        if (
            name.startswith("PREFECT_")
            and isinstance(value, str)
            and re.fullmatch(r"[a-z_]+(?:\.[a-z_]+)+", value)
            and importlib.util.find_spec(value) is None
        ):
            problems.append(f"{where}: {name} names {value}, which is not installed")
    return problems


@contextlib.contextmanager
def clean_environment(environment: dict[str, str]) -> Iterator[None]:
    """Only `environment` (and PATH, HOME) in os.environ while inside."""
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    with mock.patch.dict(os.environ, base | environment, clear=True):
        yield


def settings_problems(environment: dict[str, str], where: str) -> list[str]:
    """The values a container's settings would refuse, as our and Prefect's do."""
    from leads.settings import Settings

    problems = []
    with clean_environment(environment):
        try:
            Settings()
        except ValidationError as exc:
            problems.append(f"{where}: ORCH_* values refused: {exc}")
        for settings_class in prefect_settings_classes():
            try:
                settings_class()
            except ValidationError as exc:
                problems.append(f"{where}: PREFECT_* values refused: {exc}")
    return problems


# --- compose.yaml ------------------------------------------------------------

_SUBSTITUTION = re.compile(
    r"\$(?:\{(?P<name>[A-Za-z_]\w*)(?P<operator>:?[-?+])?(?P<argument>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


def interpolate(text: str) -> tuple[str, list[str]]:
    """compose.yaml with every ${...} replaced as compose would, and the problems.

    A required variable (`${X:?why}`) gets a placeholder, a defaulted one its
    default. One with neither would silently be empty when unset: a problem.
    """
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match["name"] or match["bare"]
        operator = match["operator"] or ""
        if name.startswith("ORCH_") and name not in orchestrator_settings():
            problems.append(f"${{{name}}}: not a setting in leads/settings.py")
        if "?" in operator:
            return PLACEHOLDER
        if "-" in operator:
            return match["argument"]
        problems.append(f"{match[0]}: neither required (:?) nor defaulted (:-)")
        return ""

    escaped = text.replace("$$", "\0")
    return _SUBSTITUTION.sub(substitute, escaped).replace("\0", "$"), problems


def service_command(service: dict[str, Any], image: Image) -> list[str]:
    """What the container runs: compose's entrypoint and command over the image's."""
    if "entrypoint" in service:
        # A new entrypoint drops the image's CMD.
        return [*service["entrypoint"], *service.get("command", [])]
    return [*image.entrypoint, *service.get("command", image.cmd)]


def compose_problems(text: str, image: Image, root: Path = ROOT) -> list[str]:
    """Everything wrong with compose.yaml that can be told without running it."""
    config_text, problems = interpolate(text)
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError as exc:
        return [f"compose.yaml is not YAML: {exc}"]
    services: dict[str, dict[str, Any]] = config.get("services") or {}
    if set(services) != SERVICES:
        problems.append(
            f"services: expected {sorted(SERVICES)}, got {sorted(services)}"
        )
    volumes = set(config.get("volumes") or {})
    published = {
        int(port.split(":")[1])
        for service in services.values()
        for port in service.get("ports", [])
    }
    listening = dict(IMAGE_PORTS)

    for name, service in services.items():
        if "build" in service:
            command = service_command(service, image)
            if command[:2] == ["prefect", "server"] and "--port" in command:
                listening[name] = int(command[command.index("--port") + 1])
            elif command[:2] == ["orchestrator", "api"]:
                listening[name] = int(image.env.get("ORCH_API_PORT", "8000"))
            elif command[:2] == ["orchestrator", "worker"]:
                health = (service.get("environment") or {}).get(
                    "ORCH_WORKER_HEALTH_PORT"
                )
                if str(health).isdigit():
                    listening[name] = int(health)
                elif health is not None:
                    problems.append(
                        f"services.{name}: ORCH_WORKER_HEALTH_PORT {health!r} "
                        "is not a port number"
                    )

    for name, service in services.items():
        where = f"services.{name}"
        environment = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        problems += variable_problems(environment, where)
        problems += _dependency_problems(name, service, services)
        problems += _file_problems(name, service, volumes, root)
        problems += _url_problems(where, environment, listening, published)
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{where}.ports: {port} is not on loopback only")

        if "build" in service:
            problems += _built_service_problems(
                name, service, image, environment, listening.get(name)
            )
        else:
            reference = str(service.get("image", ""))
            tag = reference.rpartition(":")[2] if ":" in reference else ""
            if tag in ("", "latest"):
                problems.append(f"{where}.image: pin a version, got {reference!r}")

    problems += _database_problems(services, root)
    return problems


def _built_service_problems(
    name: str,
    service: dict[str, Any],
    image: Image,
    environment: dict[str, str],
    port: int | None,
) -> list[str]:
    where = f"services.{name}"
    problems = []
    command = service_command(service, image)
    problems += command_problems(command, f"{where}.command")

    probe = service.get("healthcheck")
    answers: Callable[[str], bool] | None = None
    if command[:2] == ["orchestrator", "api"]:
        answers = api_probe
    elif command[:3] == ["prefect", "server", "start"]:
        answers = prefect_probe
    elif command[:2] == ["orchestrator", "worker"]:
        answers = worker_probe
    if probe is None and answers is not api_probe:
        # The image's own check asks the API, which only `orchestrator api` serves.
        problems.append(f"{where}.healthcheck: set one or disable the image's")
    elif probe is not None and not probe.get("disable"):
        if answers is None or port is None:
            problems.append(f"{where}.healthcheck: nothing here a probe could ask")
        else:
            problems += probe_problems(
                probe["test"], f"{where}.healthcheck", answers, port
            )

    # The container's environment: the image's, then compose's on top.
    full = image.env | environment
    problems += settings_problems(full, where)
    if command[:1] == ["orchestrator"]:
        if full.get("ORCH_ENV") != "production":
            problems.append(f"{where}: ORCH_ENV must be production")
        if "ORCH_DATABASE_URL" not in full:
            problems.append(f"{where}: ORCH_DATABASE_URL unset (a SQLite file)")
    return problems


def _dependency_problems(
    name: str, service: dict[str, Any], services: dict[str, dict[str, Any]]
) -> list[str]:
    where = f"services.{name}.depends_on"
    problems = []
    dependencies = service.get("depends_on") or {}
    if isinstance(dependencies, list):
        dependencies = {
            other: {"condition": "service_started"} for other in dependencies
        }
    for other, spec in dependencies.items():
        condition = spec.get("condition", "service_started")
        if other not in services:
            problems.append(f"{where}: {other!r} is not a service")
            continue
        if condition not in DEPENDENCY_CONDITIONS:
            problems.append(f"{where}.{other}: unknown condition {condition!r}")
        target = services[other]
        probe = target.get("healthcheck") or {}
        has_probe = (probe.get("test") or "build" in target) and not probe.get(
            "disable"
        )
        if condition == "service_healthy" and not has_probe:
            problems.append(f"{where}.{other}: waits for health it never reports")
        if condition == "service_completed_successfully" and target.get(
            "restart", "no"
        ) not in ("no", False):
            problems.append(f"{where}.{other}: waits for an end that never comes")
    return problems


def _file_problems(
    name: str, service: dict[str, Any], volumes: set[str], root: Path
) -> list[str]:
    where = f"services.{name}"
    problems = []
    if "build" in service:
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build["dockerfile"]
        if not (root / context / dockerfile).is_file():
            problems.append(f"{where}.build: no {dockerfile} in {context}")
    for volume in service.get("volumes", []):
        source = str(volume).split(":")[0]
        if source.startswith((".", "/")):
            if not (root / source).exists():
                problems.append(f"{where}.volumes: {source} does not exist")
        elif source not in volumes:
            problems.append(f"{where}.volumes: {source!r} is not a declared volume")
    for entry in service.get("env_file", []):
        path = entry if isinstance(entry, str) else entry["path"]
        required = isinstance(entry, str) or entry.get("required", True)
        if required and not (root / path).is_file():
            problems.append(f"{where}.env_file: {path} is required and missing")
    return problems


def _url_problems(
    where: str,
    environment: dict[str, str],
    listening: dict[str, int],
    published: set[int],
) -> list[str]:
    problems = []
    for name, value in environment.items():
        if "://" not in value:
            continue
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
        if host in LOOPBACK:
            # Only a browser on the host reaches loopback addresses of ours.
            if port not in published:
                problems.append(f"{where}: {name} asks for port {port}, not published")
        elif host not in listening:
            problems.append(f"{where}: {name} names {host!r}, which is no service")
        elif port != listening[host]:
            problems.append(
                f"{where}: {name} asks {host} on {port}; it listens on "
                f"{listening[host]}"
            )
        if parts.scheme.startswith("postgresql"):
            driver = make_url(value).get_driver_name()
            if importlib.util.find_spec(driver) is None:
                problems.append(f"{where}: {name} needs driver {driver}, not installed")
    return problems


def _database_problems(services: dict[str, dict[str, Any]], root: Path) -> list[str]:
    """The init script gets what it needs and makes what the URLs name."""
    postgres = services.get("postgres") or {}
    given = {k: str(v) for k, v in (postgres.get("environment") or {}).items()}
    problems = []
    scripts = [
        root / str(volume).split(":")[0]
        for volume in postgres.get("volumes", [])
        if "/docker-entrypoint-initdb.d/" in str(volume)
    ]
    if not scripts:
        problems.append("services.postgres: no init script creates the databases")
    for script in scripts:
        if not script.is_file():
            continue  # reported with the volumes
        for needed in re.findall(r"\$\{(\w+):\?", script.read_text()):
            if needed not in given:
                problems.append(f"services.postgres: {script.name} needs {needed}")

    created = set(given.get("APP_DATABASES", "").split())
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if not str(value).startswith("postgresql"):
                continue
            url = make_url(str(value))
            if url.database not in created:
                problems.append(f"services.{name}: {key} names database {url.database}")
            elif url.username != url.database:
                problems.append(
                    f"services.{name}: {key} logs in as {url.username}, but the "
                    f"init script makes {url.database} the owner of {url.database}"
                )
    return problems


# --- The real files ----------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> Image:
    return read_image(DOCKERFILE.read_text(), DOCKERIGNORE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text())[0])


def test_the_dockerfile_builds_what_the_code_needs(image):
    assert image_problems(image) == []


def test_compose_yaml_holds_together(image):
    assert compose_problems(COMPOSE_FILE.read_text(), image) == []


def test_compose_yaml_runs_the_expected_services(compose):
    assert set(compose["services"]) == SERVICES


def test_the_build_context_leaves_out_secrets_and_local_state():
    rules = ignore_rules(DOCKERIGNORE.read_text())

    for path in ("data/secret.key", ".env", "deployments/containers/example.env"):
        assert is_ignored(path, rules), path
    for path in (".venv/bin/python", ".git/HEAD", "leads/__pycache__/x.pyc"):
        assert is_ignored(path, rules), path
    assert not is_ignored("config/sequences.yaml", rules)


def test_the_secrets_are_required_not_defaulted():
    text = COMPOSE_FILE.read_text()

    for name in ("ORCH_SECRET_KEY", "POSTGRES_PASSWORD"):
        uses = re.findall(rf"\$\{{{name}([^}}]*)\}}", text)
        assert uses, name
        assert all(use.startswith(":?") for use in uses), (name, uses)


def test_the_prefect_server_runs_without_services_and_one_process_runs_them(
    compose, image
):
    commands = {
        name: service_command(service, image)
        for name, service in compose["services"].items()
        if "build" in service
    }

    assert "--no-services" in commands["prefect-server"]
    assert commands["prefect-services"] == ["prefect", "server", "services", "start"]
    # Two would run every schedule and trigger twice.
    assert compose["services"]["prefect-services"].get("scale", 1) == 1


def test_the_prefect_server_uses_redis_as_orchestrator_up_would(compose):
    from deployments.prefect_env import (
        redis_messaging_environment,
        server_database_url,
    )

    for name in ("prefect-server", "prefect-services"):
        environment = compose["services"][name]["environment"]
        expected = redis_messaging_environment(
            environment["PREFECT_REDIS_MESSAGING_URL"]
        )
        database = environment["PREFECT_SERVER_DATABASE_CONNECTION_URL"]

        assert {key: environment.get(key) for key in expected} == expected
        assert server_database_url(database, ROOT) == database


def test_the_example_environment_names_only_real_variables():
    from connectors.crm.hubspot import HubSpotCredentials
    from connectors.crm.salesforce import SalesforceCredentials
    from leads.webhooks.sources import load_sources

    credentials = {
        "ORCH_HUBSPOT_": set(HubSpotCredentials.model_fields),
        "ORCH_SALESFORCE_": set(SalesforceCredentials.model_fields),
    }
    webhook_secrets = {
        source.secret_env for source in load_sources(ROOT / "config").values()
    }
    named = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", EXAMPLE_ENV.read_text(), re.M)

    unknown = [
        name
        for name in named
        if name.startswith("ORCH_")
        and name not in orchestrator_settings()
        and name not in webhook_secrets
        and not any(
            name.startswith(prefix) and name[len(prefix) :].lower() in fields
            for prefix, fields in credentials.items()
        )
    ]
    assert unknown == []
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required <= set(named)


def test_the_example_values_are_ones_the_settings_accept():
    from leads.settings import Settings

    examples = re.findall(r"^# (ORCH_\w+)=(.+)$", EXAMPLE_ENV.read_text(), re.M)

    assert examples
    for name, value in examples:
        if name not in orchestrator_settings():
            continue  # credentials and webhook secrets, checked by name above
        with clean_environment({name: value.strip("'\"")}):
            Settings()


@pytest.mark.postgres
def test_the_postgres_init_script_makes_both_databases(postgres_server):
    import psycopg

    if shutil.which("psql") is None:
        pytest.skip("psql, which the postgres image runs the script with, is absent")
    admin = make_url(postgres_server)
    suffix = os.urandom(4).hex()
    names = [f"zz_leads_{suffix}", f"zz_prefect_{suffix}"]
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "POSTGRES_USER": admin.username or "postgres",
        "POSTGRES_DB": admin.database or "postgres",
        "POSTGRES_PASSWORD": 'it\'s "quoted"',
        "APP_DATABASES": " ".join(names),
    }
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    script = ROOT / "deployments" / "containers" / "postgres-init.sh"
    try:
        ran = subprocess.run(
            ["sh", str(script)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        with psycopg.connect(dsn) as connection:
            owners = dict(
                connection.execute(
                    "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                    "WHERE datname = ANY(%s)",
                    [names],
                ).fetchall()
            )
        assert owners == {name: name for name in names}
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            for name in names:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                connection.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_the_readme_containers_section_names_real_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Containers", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```[a-z]*\n(.*?)```", section, re.S)
    code += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", section, flags=re.S))
    commands = [
        shlex.split(line[match.start(2) :], comments=True)
        for block in code
        for line in block.splitlines()
        if (match := re.search(r"(^|\s)((?:orchestrator|prefect) \w)", line))
    ]

    assert {command[0] for command in commands} == {"orchestrator", "prefect"}
    for command in commands:
        assert command_problems(command, "README") == [], command
    assert "The image is not built in CI: no container engine runs there" in section


# --- The validators catch what they are for ---------------------------------


def mutated(text: str, old: str, new: str) -> str:
    assert old in text, f"the mutation no longer applies: {old!r}"
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('command: ["worker"]', 'command: ["wroker"]', "no command 'wroker'"),
        ('command: ["db", "upgrade"]', 'command: ["db", "upgrad"]', "'upgrad'"),
        ("ORCH_ENV: production", "ORCH_ENVIRONMENT: production", "ORCH_ENVIRONMENT"),
        ("ORCH_ENV: production", "ORCH_ENV: prod", "ORCH_* values refused"),
        (
            "PREFECT_SERVER_DOCKET_URL:",
            "PREFECT_SERVER_DOCKETS_URL:",
            "PREFECT_SERVER_DOCKETS_URL is not a Prefect",
        ),
        (
            'PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE: "1"',
            'PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE: "one"',
            "PREFECT_* values refused",
        ),
        ("prefect_redis.ordering", "prefect_redis.orderings", "not installed"),
        ('"--no-services"', '"--no-service"', "has no option --no-service"),
        ('["server", "services", "start"]', '["server", "service", "start"]', "not a"),
        ("condition: service_completed_successfully", "condition: done", "'done'"),
        ("      migrate:\n", "      migration:\n", "'migration' is not a service"),
        ("postgres-init.sh:", "postgres_init.sh:", "does not exist"),
        ("http://prefect-server:4200/api", "http://prefect:4200/api", "no service"),
        ("@postgres:5432/orchestrator", "@postgres:5433/orchestrator", "5433"),
        ("5432/orchestrator", "5432/leads", "names database leads"),
        ("127.0.0.1:8000/health", "127.0.0.1:8000/healthz", "GET /healthz"),
        ('"127.0.0.1:4200:4200"', '"4200:4200"', "not on loopback"),
        ("127.0.0.1:8080/health", "127.0.0.1:8080/healthz", "GET /healthz"),
        (
            'ORCH_WORKER_HEALTH_PORT: "8080"',
            'ORCH_WORKER_HEALTH_PORT: "8081"',
            "asks port 8080, not 8081",
        ),
        ('      ORCH_WORKER_HEALTH_PORT: "8080"\n', "", "nothing here a probe"),
        (
            "${ORCH_SECRET_KEY:?set ORCH_SECRET_KEY in .env}",
            "${ORCH_SECRET_KEY}",
            "neither",
        ),
        ('    command: ["deploy"]\n', '    command: ["deploy", "--all"]\n', "--all"),
    ],
)
def test_compose_validation_catches(image, old, new, expected):
    problems = compose_problems(mutated(COMPOSE_FILE.read_text(), old, new), image)

    assert any(expected in problem for problem in problems), problems


def test_compose_validation_catches_a_service_probed_by_the_image_check(image):
    text = COMPOSE_FILE.read_text()
    migrate = text.index("  migrate:")
    broken = text[:migrate] + mutated(
        text[migrate:], "    healthcheck:\n      disable: true\n", ""
    )

    problems = compose_problems(broken, image)

    assert "services.migrate.healthcheck: set one or disable the image's" in problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("COPY config ./config", "COPY configs ./config", "COPY configs: no such file"),
        ("COPY config ./config", "COPY config ./", "config/sequences.yaml: not in"),
        ("COPY flows ./flows\n", "", "flows/__init__.py: not in the image"),
        ("prefect.yaml ./", "./", "prefect.yaml: not in the image"),
        ("USER 10001:10001", "USER root", "must not run as root"),
        ("pip install --editable .", "pip install --editable '.[test]'", "extras"),
        ("ORCH_CRM=none", "ORCH_CRMS=none", "ORCH_CRMS is not a setting"),
        ("FROM python:3.11-slim", "FROM python:3.12", "expected python:3.11-slim"),
        ('CMD ["api"]', 'CMD ["apii"]', "no command 'apii'"),
        ("/health' %", "/status' %", "nothing answers GET /status"),
        ("=/var/lib/orchestrator/prefect-ui", "=/opt/ui", "STATIC_DIRECTORY must be"),
    ],
)
def test_dockerfile_validation_catches(old, new, expected):
    text = mutated(DOCKERFILE.read_text(), old, new)

    problems = image_problems(read_image(text, DOCKERIGNORE.read_text()))

    assert any(expected in problem for problem in problems), problems


def test_dockerfile_validation_catches_a_source_the_dockerignore_drops():
    ignore = DOCKERIGNORE.read_text() + "alembic.ini\n"

    problems = image_problems(read_image(DOCKERFILE.read_text(), ignore))

    assert "COPY alembic.ini: excluded by .dockerignore" in problems
    assert any(
        problem.startswith("alembic.ini: not in the image") for problem in problems
    )


def test_orchestrator_commands_are_parsed_with_their_options():
    assert orchestrator_problems(["worker", "--limit", "2"]) == []
    assert orchestrator_problems(["worker", "--limit", "0"]) != []
    assert orchestrator_problems(["api", "--prot", "8000"]) != []
    assert orchestrator_problems(["db"]) == ["`orchestrator db` needs a command"]
