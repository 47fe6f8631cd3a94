"""Background processes lower their own CPU priority; a higher niceness is kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from leads.priority import (
    lower_priority,
    lower_session_group,
    session_group_niceness,
)

CHECK = (
    "import os, sys;"
    "from leads.priority import lower_priority;"
    "lower_priority(int(sys.argv[1]));"
    "print(os.getpriority(os.PRIO_PROCESS, 0))"
)


def niceness_after(start: int, wanted: int) -> int:
    """A fresh process started at `start` niceness, after lower_priority(wanted)."""
    done = subprocess.run(
        ["nice", "-n", str(start), sys.executable, "-c", CHECK, str(wanted)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout)


def sleeper(**popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], **popen
    )


@pytest.fixture(autouse=True)
def unprivileged_baseline():
    if os.getpriority(os.PRIO_PROCESS, 0) > 5:
        pytest.skip("the test run itself is niced above 5; the cases need room")


def test_a_process_raises_its_niceness_to_the_setting():
    assert niceness_after(0, 10) == 10


def test_a_niceness_already_higher_is_kept():
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness_after(15 - ours, 10) == 15


def test_zero_changes_nothing():
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness_after(0, 0) == ours


def test_another_process_is_lowered_by_its_pid():
    expected = max(9, os.getpriority(os.PRIO_PROCESS, 0))
    with sleeper() as p:
        try:
            assert lower_priority(9, p.pid) == expected
            assert os.getpriority(os.PRIO_PROCESS, p.pid) == expected
        finally:
            p.kill()


needs_autogroups = pytest.mark.skipif(
    session_group_niceness() is None,
    reason="this kernel has no autogroups (/proc/self/autogroup)",
)


@needs_autogroups
def test_a_session_leader_lowers_its_sessions_group():
    """Across sessions the kernel weighs groups, not processes: the group must drop."""
    with sleeper(start_new_session=True) as p:
        try:
            assert session_group_niceness(p.pid) == 0
            lower_priority(11, p.pid)
            assert session_group_niceness(p.pid) == 11
            assert os.getpriority(os.PRIO_PROCESS, p.pid) >= 11
        finally:
            p.kill()


@needs_autogroups
def test_a_process_sharing_a_session_leaves_its_group_alone():
    ours = session_group_niceness()
    with sleeper() as p:
        try:
            lower_priority(12, p.pid)
            assert os.getpriority(os.PRIO_PROCESS, p.pid) >= 12
            assert session_group_niceness(p.pid) == ours
            assert session_group_niceness() == ours
        finally:
            p.kill()


@needs_autogroups
def test_a_sessions_group_already_lower_is_kept():
    with sleeper(start_new_session=True) as p:
        try:
            lower_session_group(15, p.pid)
            lower_priority(10, p.pid)
            assert session_group_niceness(p.pid) == 15
        finally:
            p.kill()


FOLLOW = (
    "import os;"
    "from leads.priority import follow_own_niceness, session_group_niceness;"
    "follow_own_niceness();"
    "print(session_group_niceness())"
)


def group_after_following(**popen) -> int:
    """The session group's niceness a process started at niceness 9 leaves."""
    done = subprocess.run(
        ["nice", "-n", "9", sys.executable, "-c", FOLLOW],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        **popen,
    )
    return int(done.stdout)


@needs_autogroups
def test_a_niced_flow_run_in_a_session_of_its_own_lowers_its_group():
    """As Prefect's worker starts each flow run: niced, in a new session."""
    expected = max(9, os.getpriority(os.PRIO_PROCESS, 0))
    assert group_after_following(start_new_session=True) == expected


@needs_autogroups
def test_a_niced_process_in_the_callers_session_leaves_the_group_alone():
    assert group_after_following() == session_group_niceness()


THREE_IN_A_ROW = """
import subprocess, sys
from leads.priority import lower_priority, session_group_niceness
sleepers = [
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                     start_new_session=True)
    for _ in range(3)
]
try:
    for p in sleepers:
        lower_priority(13, p.pid)
    print(" ".join(str(session_group_niceness(p.pid)) for p in sleepers))
finally:
    for p in sleepers:
        p.kill()
"""


@needs_autogroups
def test_group_changes_in_quick_succession_all_land_without_privilege():
    """Unprivileged, the kernel refuses a second change within 100 ms (EAGAIN)."""
    command = [sys.executable, "-c", THREE_IN_A_ROW]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip(
                "running as root, and setpriv (util-linux) to drop it is missing"
            )
        # As an unprivileged user would run it: without CAP_SYS_ADMIN.
        command = [
            "setpriv",
            "--inh-caps=-sys_admin",
            "--bounding-set=-sys_admin",
            *command,
        ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["13", "13", "13"], done.stderr
