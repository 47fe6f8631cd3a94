"""What a benchmark ran on and from: the machine, the code's commit, the data folder."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "ORCH_BENCH_DATA"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"

# The server's stack first (the ones a reader compares runs by), then the load
# generator's client and the PostgreSQL driver.
PACKAGES = ("fastapi", "uvicorn", "sqlalchemy", "starlette", "httpx", "psycopg")


def _first_value(path: Path, key: str) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what `platform` knows."""
    return (
        _first_value(Path("/proc/cpuinfo"), "model name")
        or platform.processor()
        or "unknown"
    )


def cpu_counts() -> str:
    """`os.cpu_count()`, and how many of those this process may run on if fewer."""
    total = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    if total is not None and usable is not None and usable < total:
        return f"{total} logical CPUs ({usable} usable by this process)"
    return f"{total or 'unknown'} logical CPUs"


def total_memory() -> str:
    """Total memory from /proc/meminfo, in GiB."""
    value = _first_value(Path("/proc/meminfo"), "MemTotal")
    if value is None or not value.endswith(" kB"):
        return "unknown"
    return f"{int(value.removesuffix(' kB')) / (1024 * 1024):.1f} GiB"


def operating_system() -> str:
    """The distribution's name and the kernel release."""
    try:
        distribution = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        distribution = None
    kernel = f"{platform.system()} {platform.release()}"
    return f"{distribution}, kernel {kernel}" if distribution else kernel


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, or `unknown` where there are none."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> str:
    """`name version` for each installed package, `name (absent)` otherwise."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (absent)")
    return ", ".join(found)


def describe() -> list[tuple[str, str]]:
    """Label and value of every fact about the machine the report names."""
    return [
        ("CPU", f"{cpu_model()}, {cpu_counts()} (`os.cpu_count()`)"),
        ("Memory", total_memory()),
        ("OS", operating_system()),
        (
            "Python",
            f"{platform.python_implementation()} {platform.python_version()}",
        ),
        ("Packages", package_versions()),
    ]


def data_dir() -> Path:
    """Where the real data sets are: `ORCH_BENCH_DATA`, else `../shared/data`."""
    configured = os.environ.get(DATA_ENV)
    return Path(configured) if configured else DEFAULT_DATA


def shown_path(path: Path) -> str:
    """`path` as a report shows it: relative to the repository, never this machine's."""
    try:
        return os.path.relpath(Path(path).resolve(), REPO_ROOT)
    except ValueError:
        return Path(path).name


def code_version() -> str:
    """The commit measured, and whether the tree had uncommitted changes.

    What benchmarks write themselves (`bench/results/`, the README's table)
    is not counted: in a `make bench` run, every benchmark after the first
    would otherwise find the tree changed.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(REPO_ROOT),
                "status",
                "--porcelain",
                "--",
                ".",
                ":(exclude)bench/results",
                ":(exclude)README.md",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git unavailable)"
    if head.returncode != 0:
        return "unknown (not a git checkout, or no commit yet)"
    if dirty.returncode != 0:
        return head.stdout.strip() + " (whether it had uncommitted changes: unknown)"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout else "")


def shown_python() -> str:
    """The interpreter as a reader would type it: relative to here when inside."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return str(executable)


def heading(title: str, module: str, argv: list[str]) -> list[str]:
    """A report's first lines: its title, when, the exact command and the commit."""
    command = shlex.join([shown_python(), "-m", module, *argv])
    return [
        f"# {title}",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Code: {code_version()}",
    ]


def save(path: Path, text: str) -> None:
    """Prints a finished report, writes it to `path` and says where on stderr."""
    print(text, end="")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"report written to {os.path.relpath(path)}", file=sys.stderr, flush=True)


def publish(path: Path, lines: list[str]) -> None:
    """Ends a report with the commit and the machine, prints it and writes it."""
    lines = [
        *lines,
        "",
        f"Code: {code_version()}",
        "",
        "## Machine",
        *[f"- {label}: {value}" for label, value in describe()],
        f"- Load average at the end: {load_average()}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
