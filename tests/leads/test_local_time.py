"""Local time for sequences: a lead's zone, delays and send windows across DST."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError

from leads.local_time import (
    EVERY_DAY,
    Delay,
    SendWindow,
    _read_zone_table,
    add_delay,
    lead_zone,
    parse_delay,
    parse_window,
    schedule_step,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KATHMANDU = ZoneInfo("Asia/Kathmandu")

# The 2026 changes these tests lean on (tz database):
#   America/New_York     2026-03-08 07:00Z  02:00 EST -> 03:00 EDT (-5 -> -4)
#                        2026-11-01 06:00Z  02:00 EDT -> 01:00 EST (-4 -> -5)
#   Europe/Berlin        2026-03-29 01:00Z  02:00 CET -> 03:00 CEST (+1 -> +2)
#                        2026-10-25 01:00Z  03:00 CEST -> 02:00 CET (+2 -> +1)
#   Australia/Lord_Howe  2026-04-04 15:00Z  02:00 -> 01:30 (+11 -> +10:30)
#                        2026-10-03 15:30Z  02:00 -> 02:30 (+10:30 -> +11)
#   Asia/Kathmandu       +05:45 all year


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


class TestLeadZone:
    def test_the_leads_own_zone_wins_over_its_country_and_phone(self):
        zone = lead_zone("America/Chicago", "DE", "+4915112345678", "UTC")

        assert zone.key == "America/Chicago"

    def test_the_leads_own_zone_is_read_in_any_case_and_untrimmed(self):
        assert lead_zone(" europe/berlin ", None, None, "UTC").key == "Europe/Berlin"

    @pytest.mark.parametrize(
        "own", ["Mars/Olympus", "America", "../../outside", "localtime", "", "  "]
    )
    def test_an_own_zone_that_names_no_zone_falls_through_to_the_country(self, own):
        assert lead_zone(own, "JP", None, "UTC").key == "Asia/Tokyo"

    @pytest.mark.parametrize(
        ("country", "expected"),
        [
            ("JP", "Asia/Tokyo"),
            ("jp", "Asia/Tokyo"),
            (" NO ", "Europe/Oslo"),
            ("FR", "Europe/Paris"),
        ],
    )
    def test_a_country_with_one_zone_gives_that_zone(self, country, expected):
        assert lead_zone(None, country, None, "UTC").key == expected

    @pytest.mark.parametrize(
        ("country", "expected"),
        [
            # Europe/Busingen, the Büsingen exclave, has kept Berlin's time since
            # 1981; the tz database lists it apart only for 1980.
            ("DE", "Europe/Berlin"),
            # A dozen provinces, all at -03 without DST since 2009.
            ("AR", "America/Argentina/Buenos_Aires"),
        ],
    )
    def test_a_country_whose_zones_keep_one_clock_gives_its_first_zone(
        self, country, expected
    ):
        assert lead_zone(None, country, None, "UTC").key == expected

    @pytest.mark.parametrize(
        ("country", "phone", "expected"),
        [
            ("US", "+12125551234", "America/New_York"),
            ("us", "+12125551234", "America/New_York"),
            ("CA", "+14165551234", "America/Toronto"),
            ("AU", "+61291234567", "Australia/Sydney"),
            ("BR", "+5511987654321", "America/Sao_Paulo"),
            ("MX", "+525512345678", "America/Mexico_City"),
        ],
    )
    def test_a_country_with_several_clocks_takes_the_zone_of_the_phone(
        self, country, phone, expected
    ):
        assert lead_zone(None, country, phone, "UTC").key == expected

    def test_a_country_with_several_clocks_and_no_phone_gets_the_default(self):
        assert lead_zone(None, "US", None, "Europe/London").key == "Europe/London"

    @pytest.mark.parametrize(
        ("country", "phone"),
        [
            # Mobile numbers carry no place: libphonenumber lists all of Russia.
            ("RU", "+79161234567"),
            # Area code 8 covers both Adelaide and Perth.
            ("AU", "+61891234567"),
        ],
    )
    def test_a_phone_that_spans_several_zones_gets_the_default(self, country, phone):
        assert lead_zone(None, country, phone, "Europe/London").key == "Europe/London"

    def test_a_phone_from_another_country_is_not_trusted(self):
        # +1 416 is Toronto: a US lead with it is not placed in Canada's zone.
        zone = lead_zone(None, "US", "+14165551234", "Europe/London")

        assert zone.key == "Europe/London"

    @pytest.mark.parametrize("phone", ["not a phone", "+15550000000", "12"])
    def test_a_phone_libphonenumber_cannot_place_gets_the_default(self, phone):
        assert lead_zone(None, "US", phone, "Europe/London").key == "Europe/London"

    def test_without_a_country_the_phone_alone_places_the_lead(self):
        assert lead_zone(None, None, "+4915112345678", "UTC").key == "Europe/Berlin"

    @pytest.mark.parametrize("country", ["ZZ", "Germany", "XK1"])
    def test_an_unknown_country_gets_the_default_whatever_the_phone(self, country):
        zone = lead_zone(None, country, "+12125551234", "Europe/London")

        assert zone.key == "Europe/London"

    def test_a_lead_with_nothing_known_gets_the_default(self):
        assert lead_zone(None, None, None, "Asia/Kathmandu") is KATHMANDU

    @pytest.mark.parametrize("default", ["Mars/Olympus", "", "localtime"])
    def test_a_default_that_is_no_zone_is_refused_naming_the_setting(self, default):
        with pytest.raises(ValueError, match="ORCH_DEFAULT_TIMEZONE"):
            lead_zone(None, None, None, default)

    def test_a_bad_default_is_refused_even_for_a_lead_with_its_own_zone(self):
        with pytest.raises(ValueError, match="ORCH_DEFAULT_TIMEZONE is 'Nowhere'"):
            lead_zone("Europe/Berlin", None, None, "Nowhere")

    def test_the_same_zone_object_comes_back_for_the_same_place(self):
        assert lead_zone(None, "DE", None, "UTC") is lead_zone(None, "de", None, "UTC")
        assert lead_zone("Europe/Berlin", None, None, "UTC") is BERLIN

    def test_a_zone1970_row_counts_for_every_country_it_lists(self):
        text = (
            "# comment\n"
            "CH,DE,LI\t+4723+00832\tEurope/Zurich\tBüsingen\n"
            "DE,DK,NO,SE,SJ\t+5230+01322\tEurope/Berlin\tmost of Germany\n"
        )

        table = _read_zone_table(text)

        assert table["DE"] == ("Europe/Zurich", "Europe/Berlin")
        assert table["NO"] == ("Europe/Berlin",)
        assert table["LI"] == ("Europe/Zurich",)


class TestParseDelay:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("0", Delay()),
            ("0s", Delay()),
            ("30s", Delay(seconds=30)),
            ("15m", Delay(seconds=900)),
            ("2h", Delay(seconds=7200)),
            ("3d", Delay(days=3)),
            ("1w", Delay(days=7)),
            ("1d12h", Delay(days=1, seconds=43200)),
            ("1w2d3h4m5s", Delay(days=9, seconds=3 * 3600 + 4 * 60 + 5)),
            (" 1d 12h ", Delay(days=1, seconds=43200)),
            ("90m", Delay(seconds=5400)),
        ],
    )
    def test_reads_each_unit_and_combinations_largest_first(self, text, expected):
        assert parse_delay(text) == expected

    @pytest.mark.parametrize(
        "text",
        ["", "   ", "1", "30", "1x", "12h1d", "1M", "1H", "-1d", "1.5h", "d", "1d1d"],
    )
    def test_anything_else_is_refused_with_the_expected_form(self, text):
        with pytest.raises(ValueError, match=r"such as 0, 30s, 15m, 2h, 3d, 1w"):
            parse_delay(text)

    def test_digits_of_other_scripts_are_not_read_as_numbers(self):
        with pytest.raises(ValueError, match="is not a whole number"):
            parse_delay("\u0663d")

    @pytest.mark.parametrize("text", ["3651d", "522w", "99999999999999999999999d"])
    def test_a_delay_over_ten_years_is_refused(self, text):
        with pytest.raises(ValueError, match="longest allowed, 3650 days"):
            parse_delay(text)

    def test_a_negative_delay_cannot_be_built(self):
        with pytest.raises(ValueError, match="cannot be negative"):
            Delay(seconds=-1)

    @pytest.mark.parametrize(
        ("text", "written"),
        [("0", "0"), ("90m", "1h30m"), ("8d36h", "1w1d36h"), ("1w2d3h4m5s", None)],
    )
    def test_a_delay_is_written_back_as_text_that_reads_the_same(self, text, written):
        delay = parse_delay(text)

        assert str(delay) == (written or text)
        assert parse_delay(str(delay)) == delay

    def test_a_model_field_reads_and_writes_a_delay_as_text(self):
        class Step(BaseModel):
            delay: Delay

        step = Step.model_validate({"delay": "1d12h"})

        assert step.delay == Delay(days=1, seconds=43200)
        assert Step(delay=Delay(days=2)).delay == Delay(days=2)
        assert step.model_dump(mode="json") == {"delay": "1d12h"}
        assert step.model_dump_json() == '{"delay":"1d12h"}'
        assert Step.model_validate_json('{"delay": "2h"}').delay == Delay(seconds=7200)
        assert Step.model_json_schema()["properties"]["delay"]["type"] == "string"
        with pytest.raises(ValidationError, match="such as 0, 30s"):
            Step.model_validate({"delay": "soon"})


class TestAddDelay:
    def test_a_day_across_spring_forward_in_new_york_lasts_23_hours(self):
        # 2026-03-07 10:00 EST is 15:00Z; the next day's 10:00 is EDT, 14:00Z.
        start = utc(2026, 3, 7, 15)

        assert add_delay(start, parse_delay("1d"), NEW_YORK) == utc(2026, 3, 8, 14)

    def test_a_day_across_fall_back_in_new_york_lasts_25_hours(self):
        # 2026-10-31 10:00 EDT is 14:00Z; the next day's 10:00 is EST, 15:00Z.
        start = utc(2026, 10, 31, 14)

        assert add_delay(start, parse_delay("1d"), NEW_YORK) == utc(2026, 11, 1, 15)

    def test_a_day_across_spring_forward_in_berlin_lasts_23_hours(self):
        # 2026-03-28 10:00 CET is 09:00Z; 2026-03-29 10:00 CEST is 08:00Z.
        start = utc(2026, 3, 28, 9)

        assert add_delay(start, parse_delay("1d"), BERLIN) == utc(2026, 3, 29, 8)

    def test_a_week_across_fall_back_in_berlin_keeps_the_local_time(self):
        # 2026-10-24 10:00 CEST is 08:00Z; 2026-10-31 10:00 CET is 09:00Z.
        start = utc(2026, 10, 24, 8)

        assert add_delay(start, parse_delay("1w"), BERLIN) == utc(2026, 10, 31, 9)

    def test_24_hours_across_spring_forward_are_elapsed_time_not_a_day(self):
        # From 2026-03-07 10:00 EST (15:00Z): 24 h later is 15:00Z, 11:00 EDT,
        # an hour past where one day lands.
        start = utc(2026, 3, 7, 15)

        by_hours = add_delay(start, parse_delay("24h"), NEW_YORK)
        by_day = add_delay(start, parse_delay("1d"), NEW_YORK)

        assert by_hours == utc(2026, 3, 8, 15)
        assert by_hours - by_day == timedelta(hours=1)

    def test_24_hours_across_fall_back_in_berlin_end_an_hour_before_the_day(self):
        # From 2026-10-24 10:00 CEST (08:00Z): 24 h is 08:00Z, 09:00 CET; a day
        # is 10:00 CET, 09:00Z.
        start = utc(2026, 10, 24, 8)

        assert add_delay(start, parse_delay("24h"), BERLIN) == utc(2026, 10, 25, 8)
        assert add_delay(start, parse_delay("1d"), BERLIN) == utc(2026, 10, 25, 9)

    def test_calendar_days_are_added_before_clock_hours(self):
        # From 2026-03-07 20:00 EST (01:00Z on the 8th): a day gives 2026-03-08
        # 20:00 EDT (00:00Z on the 9th), six hours more 06:00Z. Hours first
        # would give 03:00 EDT on the 8th, then 03:00 EDT on the 9th, 07:00Z.
        start = utc(2026, 3, 8, 1)

        assert add_delay(start, parse_delay("1d6h"), NEW_YORK) == utc(2026, 3, 9, 6)

    def test_a_day_landing_in_the_spring_forward_gap_moves_to_the_change(self):
        # 2026-03-07 02:30 EST is 07:30Z; 02:30 on the 8th does not exist, so
        # the step is due at the change, 03:00 EDT = 07:00Z (23.5 h later).
        start = utc(2026, 3, 7, 7, 30)

        due = add_delay(start, parse_delay("1d"), NEW_YORK)

        assert due == utc(2026, 3, 8, 7)
        assert due.astimezone(NEW_YORK).time() == time(3)

    def test_a_day_landing_in_the_repeated_hour_takes_its_first_occurrence(self):
        # 2026-10-31 01:30 EDT is 05:30Z; 01:30 on 2026-11-01 happens at 05:30Z
        # (EDT) and again at 06:30Z (EST): the first is taken.
        start = utc(2026, 10, 31, 5, 30)

        assert add_delay(start, parse_delay("1d"), NEW_YORK) == utc(2026, 11, 1, 5, 30)

    def test_a_start_in_the_second_occurrence_keeps_its_wall_time(self):
        # 06:30Z on 2026-11-01 is the second 01:30 (EST); a day later 01:30 EST
        # happens once, at 06:30Z.
        start = utc(2026, 11, 1, 6, 30)

        assert add_delay(start, parse_delay("1d"), NEW_YORK) == utc(2026, 11, 2, 6, 30)

    def test_hours_from_inside_the_repeated_hour_count_real_time(self):
        # 05:30Z is the first 01:30; one hour later is 06:30Z, the second 01:30.
        start = utc(2026, 11, 1, 5, 30)

        due = add_delay(start, parse_delay("1h"), NEW_YORK)

        assert due == utc(2026, 11, 1, 6, 30)
        assert due.astimezone(NEW_YORK).fold == 1

    def test_the_start_may_be_given_in_any_zone(self):
        # 2026-03-07 16:00 CET is 15:00Z, 10:00 EST in New York.
        start = datetime(2026, 3, 7, 16, tzinfo=BERLIN)

        assert add_delay(start, parse_delay("1d"), NEW_YORK) == utc(2026, 3, 8, 14)

    def test_a_day_into_lord_howes_half_hour_gap_moves_to_the_change(self):
        # 2026-10-03 02:15 at +10:30 is 2026-10-02 15:45Z; 02:15 on 2026-10-04 is
        # in the gap 02:00-02:30, so the change, 15:30Z (02:30 at +11), is taken.
        start = utc(2026, 10, 2, 15, 45)

        due = add_delay(start, parse_delay("1d"), LORD_HOWE)

        assert due == utc(2026, 10, 3, 15, 30)
        assert due.astimezone(LORD_HOWE).time() == time(2, 30)

    def test_a_day_in_kathmandu_keeps_the_quarter_hour_offset(self):
        # 09:00 at +05:45 is 03:15Z.
        start = utc(2026, 1, 5, 3, 15)

        assert add_delay(start, parse_delay("2d"), KATHMANDU) == utc(2026, 1, 7, 3, 15)

    def test_a_zero_delay_gives_the_start_in_utc(self):
        start = datetime(2026, 3, 7, 16, tzinfo=BERLIN)

        due = add_delay(start, Delay(), NEW_YORK)

        assert due == start
        assert due.tzinfo is UTC

    def test_a_naive_start_is_refused(self):
        with pytest.raises(ValueError, match="start must be an aware datetime"):
            add_delay(datetime(2026, 3, 7, 10), Delay(days=1), NEW_YORK)


class TestParseWindow:
    @pytest.mark.parametrize(
        "text",
        ["09:00-17:00", "09:00\u201317:00", " 9:00 - 17:00 ", "09:00 \u2013 17:00"],
    )
    def test_a_hyphen_or_an_en_dash_separates_start_and_end(self, text):
        assert parse_window(text, None) == SendWindow(time(9), time(17), EVERY_DAY)

    @pytest.mark.parametrize(
        ("days", "expected"),
        [
            (None, {0, 1, 2, 3, 4, 5, 6}),
            ("weekdays", {0, 1, 2, 3, 4}),
            ("Weekends", {5, 6}),
            ("every day", {0, 1, 2, 3, 4, 5, 6}),
            ("Every  Day", {0, 1, 2, 3, 4, 5, 6}),
            ("daily", {0, 1, 2, 3, 4, 5, 6}),
            ("mon-fri", {0, 1, 2, 3, 4}),
            ("MON - FRI", {0, 1, 2, 3, 4}),
            ("fri-mon", {4, 5, 6, 0}),
            ("mon,wed,fri", {0, 2, 4}),
            ("mon, wed ,fri", {0, 2, 4}),
            ("mon-tue,sat", {0, 1, 5}),
            (["mon", "tue"], {0, 1}),
            (["Monday", "THURSDAY", "thurs"], {0, 3}),
            (["mon-wed", "sun"], {0, 1, 2, 6}),
        ],
    )
    def test_days_are_read_in_every_documented_form(self, days, expected):
        assert parse_window("09:00-17:00", days).days == frozenset(expected)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("9-17", "is not of the form HH:MM-HH:MM"),
            ("09:00", "is not of the form HH:MM-HH:MM"),
            ("09:00/17:00", "is not of the form HH:MM-HH:MM"),
            ("09:00-17:00:00", "is not of the form HH:MM-HH:MM"),
            ("24:00-06:00", "24:00 is not a time of day"),
            ("09:00-17:60", "17:60 is not a time of day"),
        ],
    )
    def test_a_window_that_cannot_be_read_is_refused_saying_the_form(
        self, text, message
    ):
        with pytest.raises(ValueError, match=message):
            parse_window(text, None)

    @pytest.mark.parametrize(
        "days",
        ["funday", "mo", "mon-", "mon-fri-sun", ["mon", "xyz"], "mon,,fri"],
    )
    def test_days_that_cannot_be_read_are_refused_saying_the_forms(self, days):
        with pytest.raises(ValueError, match="is not weekdays, weekends, daily"):
            parse_window("09:00-17:00", days)

    @pytest.mark.parametrize("days", ["", []])
    def test_no_days_at_all_are_refused(self, days):
        with pytest.raises(ValueError, match="name no day"):
            parse_window("09:00-17:00", days)

    def test_days_that_are_not_text_are_refused(self):
        with pytest.raises(ValueError, match="are not names"):
            parse_window("09:00-17:00", [0, 1])  # type: ignore[list-item]

    def test_a_window_that_opens_and_closes_at_once_is_refused_saying_why(self):
        with pytest.raises(ValueError, match="could mean never or always"):
            parse_window("09:00-09:00", None)

    def test_a_start_after_the_end_is_a_window_across_midnight(self):
        window = parse_window("22:00-06:00", "mon-fri")

        assert (window.start, window.end) == (time(22), time(6))

    @pytest.mark.parametrize(
        ("days", "message"),
        [(frozenset(), "at least one day"), (frozenset({7}), r"0 \(Monday\) to 6")],
    )
    def test_a_window_built_directly_needs_real_days(self, days, message):
        with pytest.raises(ValueError, match=message):
            SendWindow(time(9), time(17), days)

    def test_a_window_built_directly_takes_no_tzinfo(self):
        with pytest.raises(ValueError, match="take no tzinfo"):
            SendWindow(time(9, tzinfo=UTC), time(17))


WORKING_HOURS = parse_window("09:00-17:00", "weekdays")


class TestSendWindow:
    def test_a_moment_inside_the_window_is_kept(self):
        # Wednesday 2026-03-11 12:00 EDT is 16:00Z.
        moment = utc(2026, 3, 11, 16)

        assert WORKING_HOURS.contains(moment, NEW_YORK)
        assert WORKING_HOURS.next_open(moment, NEW_YORK) == moment

    def test_the_opening_minute_is_inside_and_the_closing_minute_is_not(self):
        # Wednesday 2026-03-11 09:00 EDT is 13:00Z, 17:00 EDT is 21:00Z.
        assert WORKING_HOURS.contains(utc(2026, 3, 11, 13), NEW_YORK)
        assert not WORKING_HOURS.contains(utc(2026, 3, 11, 21), NEW_YORK)
        assert WORKING_HOURS.contains(utc(2026, 3, 11, 20, 59, 59), NEW_YORK)

    def test_a_moment_before_the_window_waits_for_it_to_open(self):
        # Wednesday 2026-03-11 07:00 EDT (11:00Z) waits until 09:00 EDT, 13:00Z.
        moment = utc(2026, 3, 11, 11)

        assert not WORKING_HOURS.contains(moment, NEW_YORK)
        assert WORKING_HOURS.next_open(moment, NEW_YORK) == utc(2026, 3, 11, 13)

    def test_a_moment_after_the_window_waits_for_the_next_day(self):
        # Wednesday 17:30 EDT (21:30Z) waits until Thursday 09:00 EDT, 13:00Z.
        moment = utc(2026, 3, 11, 21, 30)

        assert WORKING_HOURS.next_open(moment, NEW_YORK) == utc(2026, 3, 12, 13)

    def test_friday_evening_waits_for_monday_morning(self):
        # Friday 2026-01-09 17:30 CET (16:30Z) waits until Monday 2026-01-12
        # 09:00 CET, 08:00Z.
        moment = utc(2026, 1, 9, 16, 30)

        assert WORKING_HOURS.next_open(moment, BERLIN) == utc(2026, 1, 12, 8)

    def test_a_weekend_wait_across_spring_forward_opens_at_local_nine(self):
        # Friday 2026-03-06 17:30 EST (22:30Z); Monday 2026-03-09 09:00 is EDT,
        # 13:00Z, though the Friday opening was 14:00Z.
        moment = utc(2026, 3, 6, 22, 30)

        assert WORKING_HOURS.next_open(moment, NEW_YORK) == utc(2026, 3, 9, 13)

    def test_a_moment_given_in_another_zone_gives_utc(self):
        # 2026-03-11 08:00 CET is 07:00Z, 03:00 EDT in New York.
        moment = datetime(2026, 3, 11, 8, tzinfo=BERLIN)

        opening = WORKING_HOURS.next_open(moment, NEW_YORK)

        assert opening == utc(2026, 3, 11, 13)
        assert opening.tzinfo is UTC

    def test_a_naive_moment_is_refused(self):
        with pytest.raises(ValueError, match="moment must be an aware datetime"):
            WORKING_HOURS.next_open(datetime(2026, 3, 11, 12), NEW_YORK)
        with pytest.raises(ValueError, match="moment must be an aware datetime"):
            WORKING_HOURS.contains(datetime(2026, 3, 11, 12), NEW_YORK)


NIGHTS = parse_window("22:00-06:00", "mon-fri")


class TestWindowAcrossMidnight:
    def test_the_night_after_an_opening_day_is_inside(self):
        # Friday 2026-01-09 23:00 CET (22:00Z), Saturday 03:00 CET (02:00Z).
        assert NIGHTS.contains(utc(2026, 1, 9, 22), BERLIN)
        assert NIGHTS.contains(utc(2026, 1, 10, 2), BERLIN)

    def test_it_closes_at_the_end_on_the_following_day(self):
        # Saturday 2026-01-10 06:00 CET (05:00Z) is closed; Saturday opens no
        # window, so the next is Monday 22:00 CET, 21:00Z.
        moment = utc(2026, 1, 10, 5)

        assert not NIGHTS.contains(moment, BERLIN)
        assert NIGHTS.next_open(moment, BERLIN) == utc(2026, 1, 12, 21)

    def test_the_night_after_a_day_that_opens_no_window_is_outside(self):
        # Monday 2026-01-12 03:00 CET (02:00Z) follows Sunday, which opens none.
        moment = utc(2026, 1, 12, 2)

        assert not NIGHTS.contains(moment, BERLIN)
        assert NIGHTS.next_open(moment, BERLIN) == utc(2026, 1, 12, 21)

    def test_a_window_ending_at_midnight_closes_at_the_next_days_start(self):
        evenings = parse_window("18:00-00:00", "daily")

        # 2026-01-09 23:59 CET is 22:59Z, inside; 00:00 CET (23:00Z) is not.
        assert evenings.contains(utc(2026, 1, 9, 22, 59), BERLIN)
        assert not evenings.contains(utc(2026, 1, 9, 23), BERLIN)


class TestWindowAcrossDst:
    def test_an_opening_in_the_spring_forward_gap_moves_to_the_change(self):
        # 02:30 on 2026-03-08 does not exist in New York: the window opens at
        # the change, 03:00 EDT = 07:00Z.
        window = parse_window("02:30-17:00", "daily")
        moment = utc(2026, 3, 8, 6)  # 01:00 EST

        opening = window.next_open(moment, NEW_YORK)

        assert opening == utc(2026, 3, 8, 7)
        assert window.contains(opening, NEW_YORK)
        assert not window.contains(opening - timedelta(seconds=1), NEW_YORK)

    def test_a_window_lying_wholly_in_the_gap_does_not_open_that_day(self):
        # 02:00-02:30 on 2026-03-08 is skipped; the next is 2026-03-09 02:00 EDT,
        # 06:00Z.
        window = parse_window("02:00-02:30", "daily")
        moment = utc(2026, 3, 8, 6)  # 01:00 EST

        assert window.next_open(moment, NEW_YORK) == utc(2026, 3, 9, 6)

    def test_a_once_a_week_window_lost_in_the_gap_waits_another_week(self):
        # Sundays only: 2026-03-01's 02:00 EST (07:00Z) has passed, 2026-03-08's
        # is skipped, so 2026-03-15 02:00 EDT, 06:00Z.
        window = parse_window("02:00-02:30", "sun")
        moment = utc(2026, 3, 1, 8)

        assert window.next_open(moment, NEW_YORK) == utc(2026, 3, 15, 6)

    def test_an_opening_in_the_repeated_hour_is_its_first_occurrence(self):
        # 01:30 on 2026-11-01 is 05:30Z (EDT) and again 06:30Z (EST).
        window = parse_window("01:30-05:00", "daily")
        moment = utc(2026, 11, 1, 4)  # 00:00 EDT

        assert window.next_open(moment, NEW_YORK) == utc(2026, 11, 1, 5, 30)
        # 06:15Z, the second 01:15, is after the opening and so inside.
        assert window.contains(utc(2026, 11, 1, 6, 15), NEW_YORK)

    def test_a_closing_in_the_repeated_hour_is_its_first_occurrence(self):
        # Saturday 2026-10-31 22:00 EDT (02:00Z) opens; the first 01:30 (05:30Z)
        # closes. 06:15Z is the second 01:15, so it waits for 2026-11-01 22:00
        # EST, 03:00Z on the 2nd.
        window = parse_window("22:00-01:30", "daily")

        assert window.contains(utc(2026, 11, 1, 5, 15), NEW_YORK)
        assert not window.contains(utc(2026, 11, 1, 6, 15), NEW_YORK)
        assert window.next_open(utc(2026, 11, 1, 6, 15), NEW_YORK) == utc(
            2026, 11, 2, 3
        )

    def test_a_berlin_working_day_after_fall_back_opens_an_hour_later_in_utc(self):
        # Monday 2026-10-26 09:00 CET is 08:00Z; the Friday before opened 07:00Z.
        moment = utc(2026, 10, 23, 16)  # Friday 18:00 CEST

        assert WORKING_HOURS.next_open(moment, BERLIN) == utc(2026, 10, 26, 8)

    def test_an_opening_in_lord_howes_half_hour_gap_moves_to_the_change(self):
        # 2026-10-04 02:00-02:30 is skipped at Lord Howe (+10:30 -> +11); 02:15
        # becomes the change, 02:30 at +11 = 2026-10-03 15:30Z.
        window = parse_window("02:15-09:00", "daily")
        moment = utc(2026, 10, 3, 15)  # 01:30 at +10:30

        assert window.next_open(moment, LORD_HOWE) == utc(2026, 10, 3, 15, 30)

    def test_an_opening_in_lord_howes_repeated_half_hour_is_the_first(self):
        # 2026-04-05 01:30-02:00 happens twice at Lord Howe (+11 -> +10:30);
        # 01:45 first at +11 = 2026-04-04 14:45Z, again at +10:30 = 15:15Z.
        window = parse_window("01:45-06:00", "daily")
        moment = utc(2026, 4, 4, 14)  # 01:00 at +11

        assert window.next_open(moment, LORD_HOWE) == utc(2026, 4, 4, 14, 45)

    def test_kathmandu_opens_at_a_quarter_past_three_utc(self):
        # Monday 2026-01-05 01:45 at +05:45 (Sunday 20:00Z) waits for 09:00,
        # 03:15Z.
        moment = utc(2026, 1, 4, 20)

        assert WORKING_HOURS.next_open(moment, KATHMANDU) == utc(2026, 1, 5, 3, 15)

    def test_a_day_samoa_skipped_opens_no_window(self):
        # Pacific/Apia went from 2011-12-29 24:00 at -10 straight to 2011-12-31
        # 00:00 at +14 (10:00Z). Friday the 30th never happened, so the next
        # window opens Saturday 09:00 at +14, 2011-12-30 19:00Z.
        apia = ZoneInfo("Pacific/Apia")
        window = parse_window("09:00-17:00", "daily")
        moment = utc(2011, 12, 30, 4)  # Thursday 18:00 at -10

        assert window.next_open(moment, apia) == utc(2011, 12, 30, 19)


class TestScheduleStep:
    def test_without_a_window_the_step_is_due_when_its_delay_ends(self):
        start = utc(2026, 3, 7, 15)

        due = schedule_step(start, parse_delay("1d"), None, NEW_YORK)

        assert due == utc(2026, 3, 8, 14)

    def test_a_delay_ending_after_hours_waits_for_the_window(self):
        # Enrolled Friday 2026-03-06 15:00 EST (20:00Z); two hours later is
        # 17:00, closed, so Monday 2026-03-09 09:00 EDT, 13:00Z.
        start = utc(2026, 3, 6, 20)

        due = schedule_step(start, parse_delay("2h"), WORKING_HOURS, NEW_YORK)

        assert due == utc(2026, 3, 9, 13)

    def test_a_delay_ending_inside_the_window_is_kept(self):
        # Monday 2026-03-09 10:00 EDT (14:00Z) plus a day is Tuesday 10:00 EDT.
        start = utc(2026, 3, 9, 14)

        due = schedule_step(start, parse_delay("1d"), WORKING_HOURS, NEW_YORK)

        assert due == utc(2026, 3, 10, 14)


SWEEP_ZONES: dict[str, tuple[list[datetime], tuple[int, ...]]] = {
    # zone: its 2026 changes, and the local hours they skip or repeat
    "America/New_York": ([utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)], (1, 2)),
    "Europe/Berlin": ([utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)], (2,)),
    "Europe/Dublin": ([utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)], (1,)),
    "Australia/Lord_Howe": ([utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)], (1, 2)),
    "Australia/Sydney": ([utc(2026, 4, 4, 16), utc(2026, 10, 3, 16)], (2,)),
    "Pacific/Chatham": ([utc(2026, 4, 4, 14), utc(2026, 9, 26, 14)], (2, 3)),
    # Chile changes at midnight, so its gap and repeated hour straddle a date.
    "America/Santiago": ([utc(2026, 4, 5, 3), utc(2026, 9, 6, 4)], (23, 0)),
    "Asia/Kathmandu": ([], ()),
    "Asia/Tehran": ([], ()),
    "UTC": ([], ()),
}


def random_time(rng: random.Random, edge_hours: tuple[int, ...]) -> time:
    # Often in the hours a change skips or repeats, so that windows open and
    # close in gaps and repeated hours.
    if edge_hours and rng.random() < 0.6:
        return time(rng.choice(edge_hours), rng.choice((0, 15, 30, 45)))
    return time(rng.randrange(24), rng.randrange(0, 60, 5))


def random_window(rng: random.Random, edge_hours: tuple[int, ...]) -> SendWindow:
    start = random_time(rng, edge_hours)
    end = random_time(rng, edge_hours)
    while end == start:
        end = random_time(rng, edge_hours)
    days = frozenset(day for day in range(7) if rng.random() < 0.7)
    return SendWindow(start, end, days or frozenset({rng.randrange(7)}))


def random_case(rng: random.Random) -> tuple[datetime, ZoneInfo, SendWindow]:
    key = rng.choice(sorted(SWEEP_ZONES))
    changes, edge_hours = SWEEP_ZONES[key]
    if changes and rng.random() < 0.6:
        near = rng.choice(changes)
        # Mostly the day before a change, where the next opening is the one the
        # change moves, and a little after it.
        moment = near + timedelta(seconds=rng.randrange(-36 * 3600, 12 * 3600))
    else:
        moment = utc(2026, 1, 1) + timedelta(seconds=rng.randrange(365 * 86400))
    return moment, ZoneInfo(key), random_window(rng, edge_hours)


def open_by_wall_clock(window: SendWindow, moment: datetime, zone: ZoneInfo) -> bool:
    """The window read naively from the local clock, right away from DST changes."""
    local = moment.astimezone(zone)
    now, today = local.time(), local.weekday()
    if window.start < window.end:
        return today in window.days and window.start <= now < window.end
    yesterday = (today - 1) % 7
    return (today in window.days and now >= window.start) or (
        yesterday in window.days and now < window.end
    )


def assert_opens_at_the_start_time(
    window: SendWindow, opening: datetime, zone: ZoneInfo
) -> None:
    """An opening shows the start time on the local clock (its first occurrence),
    or is the instant the clocks jumped over it."""
    local = opening.astimezone(zone)
    context = (opening, zone.key, window)
    if local.time() == window.start:
        assert local.fold == 0, context
        return

    before = (opening - timedelta(microseconds=1)).astimezone(zone)
    assert before.utcoffset() != local.utcoffset(), context
    skipped = [
        datetime.combine(local.date() - timedelta(days=days), window.start)
        for days in (0, 1)
    ]
    wall_before, wall_after = before.replace(tzinfo=None), local.replace(tzinfo=None)
    assert any(wall_before < start < wall_after for start in skipped), context


class TestWindowSweep:
    """Random windows, zones and instants (fixed seed), DST changes favoured."""

    CASES = 600
    # Minute-by-minute checks of the wait are the costly part; this many cases
    # get one.
    SCANNED = 100

    def test_the_next_opening_is_never_early_and_is_inside_the_window(self):
        rng = random.Random(20260308)
        for _ in range(self.CASES):
            moment, zone, window = random_case(rng)

            opening = window.next_open(moment, zone)

            context = (moment, zone.key, window)
            assert opening.tzinfo is UTC, context
            assert moment <= opening <= moment + timedelta(days=8), context
            assert window.contains(opening, zone), context
            if window.contains(moment, zone):
                assert opening == moment, context
            else:
                assert_opens_at_the_start_time(window, opening, zone)

    def test_no_opening_is_skipped_minute_by_minute(self):
        rng = random.Random(20261101)
        for _ in range(self.SCANNED):
            moment, zone, window = random_case(rng)

            opening = window.next_open(moment, zone)

            step = moment + timedelta(minutes=1)
            while step < opening:
                assert not window.contains(step, zone), (moment, zone.key, window)
                step += timedelta(minutes=1)

    def test_away_from_dst_changes_the_window_is_the_local_clocks(self):
        rng = random.Random(42)
        checked = 0
        for _ in range(self.CASES):
            moment, zone, window = random_case(rng)
            offsets = {
                (moment + timedelta(days=days)).astimezone(zone).utcoffset()
                for days in (-2, -1, 0, 1, 2)
            }
            if len(offsets) > 1:
                continue

            checked += 1
            assert window.contains(moment, zone) == open_by_wall_clock(
                window, moment, zone
            ), (moment, zone.key, window)
        assert checked > self.CASES // 3
