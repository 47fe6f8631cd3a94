"""Time for e-mail sequences: a lead's zone, step delays and send windows, DST-safe."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from zoneinfo import TZPATH, ZoneInfo, available_timezones

import phonenumbers
from phonenumbers import timezone as phone_timezones
from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

# `localtime` is this machine's own zone as a file in the system zoneinfo folder,
# not an IANA name, so a lead or a setting naming it is not taken at its word.
_NOT_ZONE_NAMES = frozenset({"localtime"})

# The tz database keeps zones apart when their clocks differed at any time
# since 1970 (Europe/Busingen beside Europe/Berlin, a dozen Argentine
# provinces). For sending e-mail only the clocks from now on matter: three years
# cover the changes governments announce ahead and a full cycle of each rule.
_AGREEMENT_SPAN_DAYS = 3 * 366

# libphonenumber's answer when a number's zone is not known.
_UNKNOWN_PHONE_ZONE = "Etc/Unknown"


def lead_zone(
    timezone: str | None, country: str | None, phone: str | None, default: str
) -> ZoneInfo:
    """The time zone a lead's e-mails are timed in.

    In order: the lead's own IANA `timezone` when it names one (any case; an
    unknown name is passed over); the zone of its `country` when the whole
    country keeps one clock; for a country with several clocks, the zone of its
    `phone` when libphonenumber places the number in exactly one zone and the
    number belongs to that country (the phone alone when no country is given);
    otherwise `default`. A country's largest zone is never guessed.

    A country counts as keeping one clock when every zone the tz database lists
    for it agrees with the first from today for the next three years: Germany's
    Europe/Busingen has kept Berlin's time since 1981, so Germany is
    Europe/Berlin, while the United States, Canada, Australia, Brazil, Russia
    and Mexico need the phone.

    Args:
        timezone: the lead's IANA zone name, if it has one.
        country: the lead's ISO 3166-1 alpha-2 code, any case.
        phone: the lead's number in E.164.
        default: the zone for leads nothing else places, `ORCH_DEFAULT_TIMEZONE`.

    Returns:
        The zone, the same object each time for the same name. The zone table,
        the zones and each country's answer are cached: after the first call a
        lead costs well under a microsecond, or some tens with a phone to read.

    Raises:
        ValueError: `default` is not an IANA zone name (checked on every call,
            not only when a lead falls through to it).
        FileNotFoundError: neither the `tzdata` package nor the system holds
            the tz database's zone table.
    """
    fallback = _zone(default)
    if fallback is None:
        raise ValueError(
            f"ORCH_DEFAULT_TIMEZONE is {default!r}, which is not an IANA time zone "
            "name; set it to one such as 'UTC', 'Europe/Berlin' or "
            "'America/New_York'"
        )

    own = _zone(timezone) if timezone else None
    if own is not None:
        return own

    code = country.strip().upper() if country and country.strip() else None
    if code is not None:
        if code not in _zone_table():
            return fallback
        single = _country_zone(code)
        if single is not None:
            return single

    by_phone = _phone_zone(phone, code) if phone else None
    return by_phone or fallback


def _zone(name: str) -> ZoneInfo | None:
    """The zone a name stands for in any case, or None when it names none."""
    key = _zone_names().get(name.strip().lower())
    return None if key is None else _load_zone(key)


@cache
def _zone_names() -> dict[str, str]:
    # Checking names against the list keeps ZoneInfo away from what is not a
    # zone file: a folder (`America`) raises IsADirectoryError, not a KeyError.
    return {
        name.lower(): name
        for name in available_timezones()
        if name not in _NOT_ZONE_NAMES
    }


@cache
def _load_zone(key: str) -> ZoneInfo:
    return ZoneInfo(key)


@cache
def _zone_table() -> dict[str, tuple[str, ...]]:
    """Each country's zones in the tz database's order, most populous first."""
    for source in _zone_table_sources():
        try:
            text = source.read_text(encoding="utf-8")
        except OSError:
            continue
        return _read_zone_table(text)
    raise FileNotFoundError(
        "the tz database's zone table (zone.tab or zone1970.tab) is neither in "
        "the `tzdata` package nor in a system zoneinfo folder; install `tzdata`"
    )


def _zone_table_sources() -> list[Traversable]:
    # zone.tab names one zone per country row (Europe/Oslo for Norway), where
    # zone1970.tab folds countries into shared rows (Norway under Europe/Berlin);
    # zone1970.tab is read only where a packager dropped the older file.
    folders: list[Traversable] = []
    with contextlib.suppress(ModuleNotFoundError):
        folders.append(resources.files("tzdata").joinpath("zoneinfo"))
    folders.extend(Path(folder) for folder in TZPATH)
    return [
        folder.joinpath(name)
        for folder in folders
        for name in ("zone.tab", "zone1970.tab")
    ]


def _read_zone_table(text: str) -> dict[str, tuple[str, ...]]:
    """Countries and their zones from zone.tab or zone1970.tab text.

    Both have tab-separated rows of country codes (one in zone.tab, a comma list
    in zone1970.tab), coordinates, zone name and an optional comment.
    """
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        columns = line.split("\t")
        for code in columns[0].split(","):
            zones.setdefault(code.strip().upper(), []).append(columns[2].strip())
    return {code: tuple(names) for code, names in zones.items()}


@cache
def _country_zone(code: str) -> ZoneInfo | None:
    """The zone of a country that keeps one clock, or None when it keeps several."""
    zones = [zone for name in _zone_table()[code] if (zone := _zone(name))]
    if not zones:
        return None
    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = zones[0]
    if all(_same_clocks(first, other, since) for other in zones[1:]):
        return first
    return None


def _same_clocks(first: ZoneInfo, second: ZoneInfo, since: datetime) -> bool:
    """Whether two zones show the same time for `_AGREEMENT_SPAN_DAYS` from `since`.

    Offsets are compared once a day; on a day either one changes, the instants
    of the changes are compared too. Two changes within one day go unseen,
    which no zone has scheduled.
    """
    previous = since
    offset = _offset(first, previous)
    if offset != _offset(second, previous):
        return False

    for days in range(1, _AGREEMENT_SPAN_DAYS + 1):
        moment = since + timedelta(days=days)
        now_first, now_second = _offset(first, moment), _offset(second, moment)
        if now_first != now_second:
            return False
        if now_first != offset:
            changed_at = _first_change(first, previous, moment)
            if changed_at != _first_change(second, previous, moment):
                return False
        previous, offset = moment, now_first
    return True


def _phone_zone(phone: str, country: str | None) -> ZoneInfo | None:
    """The one zone libphonenumber places a number in, when it is in `country`."""
    try:
        number = phonenumbers.parse(phone, country)
    except phonenumbers.NumberParseException:
        return None
    if country is not None and phonenumbers.region_code_for_number(number) != country:
        return None

    names = [
        name
        for name in phone_timezones.time_zones_for_number(number)
        if name != _UNKNOWN_PHONE_ZONE
    ]
    return _zone(names[0]) if len(names) == 1 else None


# A delay longer than ten years is a typo, and refusing it keeps arithmetic far
# from the year 9999, where datetime overflows.
_LONGEST_DELAY_DAYS = 3650

_DELAY_PATTERN = re.compile(
    r"(?:(?P<weeks>[0-9]+)w)?(?:(?P<days>[0-9]+)d)?(?:(?P<hours>[0-9]+)h)?"
    r"(?:(?P<minutes>[0-9]+)m)?(?:(?P<seconds>[0-9]+)s)?"
)
_DELAY_FORM = (
    "a whole number followed by a unit, largest unit first, such as 0, 30s, 15m, "
    "2h, 3d, 1w or 1d12h (w weeks, d days, h hours, m minutes, s seconds)"
)


@dataclass(frozen=True)
class Delay:
    """How long after its anchor a sequence step is due.

    Attributes:
        days: calendar days (a week is seven), counted on the lead's wall clock,
            so a day can last 23 or 25 hours across a DST change.
        seconds: elapsed time, exact whatever the clocks do.
    """

    days: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        if self.days < 0 or self.seconds < 0:
            raise ValueError(
                f"a delay cannot be negative, got {self.days} days and "
                f"{self.seconds} seconds"
            )
        if self.days * 86400 + self.seconds > _LONGEST_DELAY_DAYS * 86400:
            raise ValueError(
                f"a delay of {self} is longer than the longest allowed, "
                f"{_LONGEST_DELAY_DAYS} days"
            )

    def __str__(self) -> str:
        weeks, days = divmod(self.days, 7)
        hours, rest = divmod(self.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        counts = zip((weeks, days, hours, minutes, seconds), "wdhms", strict=True)
        return "".join(f"{count}{unit}" for count, unit in counts if count) or "0"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        # A model field reads `1d12h` from a file and writes it back as text.
        from_text = core_schema.no_info_after_validator_function(
            parse_delay, core_schema.str_schema()
        )
        return core_schema.json_or_python_schema(
            json_schema=from_text,
            python_schema=core_schema.union_schema(
                [core_schema.is_instance_schema(cls), from_text]
            ),
            serialization=core_schema.to_string_ser_schema(),
        )


def parse_delay(text: str) -> Delay:
    """Reads a delay such as `0`, `30s`, `15m`, `2h`, `3d`, `1w` or `1d12h`.

    Units are lower case and largest first; spaces between them are allowed
    (`1d 12h`). A bare number is refused unless it is `0`, since it could be
    any unit.

    Raises:
        ValueError: the text is not a delay; the message gives the form.
    """
    compact = "".join(text.split())
    if compact == "0":
        return Delay()
    match = _DELAY_PATTERN.fullmatch(compact)
    if not compact or match is None:
        raise ValueError(f"delay {text!r} is not {_DELAY_FORM}")

    count = {unit: int(value or 0) for unit, value in match.groupdict().items()}
    return Delay(
        days=count["weeks"] * 7 + count["days"],
        seconds=count["hours"] * 3600 + count["minutes"] * 60 + count["seconds"],
    )


def add_delay(start: datetime, delay: Delay, zone: ZoneInfo) -> datetime:
    """The instant a delay after `start` ends, for a lead in `zone`.

    Calendar days come first and move the lead's wall clock: a one-day delay
    from 10:00 local ends at 10:00 local the next day, 23 or 25 real hours later
    across a DST change. Hours, minutes and seconds come second and are elapsed
    time. A wall-clock time the clocks skip (the spring-forward gap) becomes the
    instant of the change, the first that exists after it; one they repeat (the
    fall-back hour) is its first occurrence, as `fold=0` reads it.

    Args:
        start: an aware datetime, in any zone.
        delay: the delay.
        zone: the lead's zone.

    Returns:
        An aware datetime in UTC.

    Raises:
        ValueError: `start` is naive.
    """
    moment = _as_utc(start, "start")
    if delay.days:
        wall = moment.astimezone(zone).replace(tzinfo=None)
        moment = _instant(wall + timedelta(days=delay.days), zone)
    return moment + timedelta(seconds=delay.seconds)


_DAY_NAMES = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
# Days count as `date.weekday()` does: Monday 0 to Sunday 6.
EVERY_DAY = frozenset(range(7))
_DAY_GROUPS = {
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
    "daily": EVERY_DAY,
    "every day": EVERY_DAY,
    "everyday": EVERY_DAY,
}
_DAYS_FORM = (
    "weekdays, weekends, daily (or every day), a range such as mon-fri, or day "
    "names such as mon,wed,fri or monday"
)
_WINDOW_PATTERN = re.compile(
    r"([0-9]{1,2}):([0-9]{2})\s*[-–]\s*([0-9]{1,2}):([0-9]{2})"
)
_RANGE_DASH = re.compile(r"\s*[-–]\s*")

# A window's openings are looked for on the day before (it may cross midnight)
# and the two weeks after: a week suffices unless that week's opening falls
# wholly inside a DST gap, which only one day a year can do.
_SCAN_DAYS = range(-1, 15)


@dataclass(frozen=True)
class SendWindow:
    """Local hours and days in which a lead may be sent e-mail.

    The window opens at `start` on each of `days` (Monday is 0) and closes at
    `end`, which is exclusive. When `start` is after `end` it closes the next
    day (`22:00-06:00`), and the day it opens on is the one in `days`.

    Each opening and closing is the instant its wall-clock time names in the
    lead's zone: a time the clocks skip becomes the instant of the change, and
    a time they repeat is its first occurrence. A window that lies wholly in a
    DST gap does not open that day.
    """

    start: time
    end: time
    days: frozenset[int] = field(default=EVERY_DAY)

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError(
                "a send window's times are the lead's local wall-clock times, "
                "so they take no tzinfo"
            )
        if self.start == self.end:
            raise ValueError(
                f"send window {self.start:%H:%M}-{self.end:%H:%M} opens and closes "
                "at the same time, which could mean never or always; leave the "
                "window out to send at any time"
            )
        if not self.days:
            raise ValueError("a send window needs at least one day")
        if not self.days <= EVERY_DAY:
            raise ValueError(
                "send window days are 0 (Monday) to 6 (Sunday), got "
                f"{sorted(self.days)}"
            )

    def contains(self, moment: datetime, zone: ZoneInfo) -> bool:
        """Whether the window is open at `moment` (aware) for a lead in `zone`.

        Raises:
            ValueError: `moment` is naive.
        """
        instant = _as_utc(moment, "moment")
        today = instant.astimezone(zone).date()
        for day in (today - timedelta(days=1), today):
            if day.weekday() in self.days:
                opens, closes = self._opening(day, zone)
                if opens <= instant < closes:
                    return True
        return False

    def next_open(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """`moment` if the window is open then, else the window's next opening.

        Args:
            moment: an aware datetime, in any zone.
            zone: the lead's zone.

        Returns:
            An aware datetime in UTC, never before `moment`.

        Raises:
            ValueError: `moment` is naive.
        """
        instant = _as_utc(moment, "moment")
        today = instant.astimezone(zone).date()
        for offset in _SCAN_DAYS:
            day = today + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens, closes = self._opening(day, zone)
            if opens <= instant < closes:
                return instant
            if instant < opens < closes:
                return opens
        raise RuntimeError(
            f"{self} does not open within {len(_SCAN_DAYS)} days of "
            f"{instant.isoformat()} in {zone.key}"
        )

    def _opening(self, day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """When the window that opens on `day` opens and closes, in UTC."""
        closing_day = day + timedelta(days=1) if self.end < self.start else day
        return (
            _instant(datetime.combine(day, self.start), zone),
            _instant(datetime.combine(closing_day, self.end), zone),
        )


def parse_window(text: str, days: str | list[str] | None = None) -> SendWindow:
    """Reads a send window such as `09:00-17:00` (or with an en dash) and its days.

    Args:
        text: `HH:MM-HH:MM`, the end exclusive; a start after the end crosses
            midnight.
        days: `weekdays`, `weekends`, `daily` or `every day`, a range such as
            `mon-fri` (`fri-mon` wraps), names such as `mon,wed,fri`, or a list
            of any of these; three letters or the full name, any case. None
            means every day.

    Raises:
        ValueError: the text or the days cannot be read, or the window opens and
            closes at the same time; the message says what was expected.
    """
    match = _WINDOW_PATTERN.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"send window {text!r} is not of the form HH:MM-HH:MM, such as 09:00-17:00"
        )
    start = _clock(match[1], match[2], text)
    end = _clock(match[3], match[4], text)
    return SendWindow(start, end, EVERY_DAY if days is None else _parse_days(days))


def _clock(hours: str, minutes: str, text: str) -> time:
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(
            f"send window {text!r}: {hours}:{minutes} is not a time of day "
            "(00:00 to 23:59)"
        )
    return time(int(hours), int(minutes))


def _parse_days(days: str | Iterable[str]) -> frozenset[int]:
    items = [days] if isinstance(days, str) else list(days)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"send window days {days!r} are not names; use {_DAYS_FORM}")
    parts = [part for item in items for part in item.split(",")]
    if not any(part.strip() for part in parts):
        raise ValueError(f"send window days {days!r} name no day; use {_DAYS_FORM}")

    chosen: set[int] = set()
    for part in parts:
        name = " ".join(part.lower().split())
        if name in _DAY_GROUPS:
            chosen |= _DAY_GROUPS[name]
            continue
        bounds = _RANGE_DASH.split(name)
        if len(bounds) == 2:
            first, last = _day(bounds[0], days), _day(bounds[1], days)
            chosen.update((first + step) % 7 for step in range((last - first) % 7 + 1))
        elif len(bounds) == 1:
            chosen.add(_day(name, days))
        else:
            raise ValueError(f"send window days {days!r}: {part!r} is not {_DAYS_FORM}")

    return frozenset(chosen)


def _day(name: str, days: str | Iterable[str]) -> int:
    """Monday 0 to Sunday 6 from a day's name or its first three or more letters."""
    if len(name) >= 3:
        for number, full in enumerate(_DAY_NAMES):
            if full.startswith(name):
                return number
    raise ValueError(f"send window days {days!r}: {name!r} is not {_DAYS_FORM}")


def schedule_step(
    anchor: datetime, delay: Delay, window: SendWindow | None, zone: ZoneInfo
) -> datetime:
    """When a sequence step is due: its delay after `anchor`, moved into its window.

    Args:
        anchor: enrolment or the previous step's send, aware.
        delay: the step's delay.
        window: the step's send window, if any.
        zone: the lead's zone.

    Returns:
        An aware datetime in UTC.
    """
    due = add_delay(anchor, delay, zone)
    return due if window is None else window.next_open(due, zone)


def next_send_time(
    due: datetime, moment: datetime, window: SendWindow | None, zone: ZoneInfo
) -> datetime:
    """When a step due at `due` may go, seen at `moment`: in its window, never past.

    A step that fell due while nothing ran (an outage, a missed schedule) goes
    now if its window is open, else at the window's next opening.
    """
    earliest = max(due, moment)
    return window.next_open(earliest, zone) if window is not None else earliest


def _as_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{name} must be an aware datetime, got the naive {moment.isoformat()}; "
            "give it a tzinfo such as datetime.UTC"
        )
    return moment.astimezone(UTC)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time names in `zone`.

    A time the clocks repeat is its first occurrence; a time they skip is the
    instant of the change.
    """
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if _utcoffset(first) >= _utcoffset(second):
        return first.astimezone(UTC)
    # In a gap fold=0 reads the time with the offset before the change and
    # fold=1 with the one after (PEP 495), so the change lies between the two.
    return _first_change(zone, second.astimezone(UTC), first.astimezone(UTC))


def _first_change(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant after `before`, up to `after`, with a different offset."""
    offset = _offset(zone, before)
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) // 2
        if _offset(zone, middle) == offset:
            before = middle
        else:
            after = middle
    return after


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    return _utcoffset(instant.astimezone(zone))


def _utcoffset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"{moment!r} has no UTC offset")
    return offset
