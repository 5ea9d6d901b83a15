"""The writer's CronJob: deadlines from the schedule, and the values the API server would refuse.

A hung publish must not block every later one (activeDeadlineSeconds on the Job,
startingDeadlineSeconds on the CronJob, defaults from the schedule's shortest interval);
schedules, time zones and resources that the API server (or the CronJob controller)
rejects are refused when the config is built, with a message naming the CLI flag.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from sharedrec.k8s import ConfigError, HostPathVolume, K8sConfig, Resources, WriterSpec, build_objects
from sharedrec.k8s._cron import parse_schedule
from sharedrec.k8s.cli import k8s


def _cronjob(**writer: Any) -> dict[str, Any]:
    config = K8sConfig(volume=HostPathVolume(path="/data/recs"), writer=WriterSpec(image="w:1", **writer))
    (obj,) = [obj for obj in build_objects(config) if obj["kind"] in {"CronJob", "Job"}]
    return obj


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [
        ("* * * * *", 60),
        ("*/15 * * * *", 900),
        ("15 * * * *", 3600),
        ("@hourly", 3600),
        ("0 */2 * * *", 7200),
        ("0 9,17 * * *", 8 * 3600),
        ("0 3 * * *", 86400),
        ("@daily", 86400),
        ("0 3 * * MON-FRI", 86400),
        ("30 2 * * 0", 7 * 86400),
        ("@weekly", 7 * 86400),
        ("0 0 1,15 * *", 14 * 86400),
        ("@monthly", 28 * 86400),
        ("@yearly", 365 * 86400),
        ("0 0 1 * 1", 86400),  # both day fields restricted: the 1st or any Monday
        ("5-10/5 1/12 * * *", 300),
    ],
)
def test_the_shortest_interval_of_a_schedule(schedule: str, interval: int) -> None:
    assert parse_schedule(schedule).shortest_interval() == interval


@pytest.mark.parametrize(
    ("schedule", "active", "starting"),
    [
        ("*/5 * * * *", 225, 75),
        ("15 * * * *", 2700, 900),
        ("0 3 * * *", 82800, 3600),
        ("* * * * *", 45, 15),
    ],
)
def test_cronjob_deadlines_default_from_the_schedule(schedule: str, active: int, starting: int) -> None:
    cron = _cronjob(schedule=schedule)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] == starting
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == active
    # A run that starts as late as allowed and hangs is stopped before the next one is due.
    assert active + starting <= parse_schedule(schedule).shortest_interval()


def test_deadlines_can_be_given_and_a_one_off_job_has_none_by_default() -> None:
    cron = _cronjob(schedule="@hourly", active_deadline_seconds=5400, starting_deadline_seconds=120)
    assert cron["spec"]["startingDeadlineSeconds"] == 120
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 5400
    job = _cronjob()
    assert job["kind"] == "Job" and "activeDeadlineSeconds" not in job["spec"]
    assert _cronjob(active_deadline_seconds=600)["spec"]["activeDeadlineSeconds"] == 600


def test_the_writer_is_never_best_effort() -> None:
    def resources(**given: str) -> dict[str, Any]:
        container = _cronjob(resources=Resources(**given))["spec"]["template"]["spec"]["containers"][0]
        out: dict[str, Any] = container["resources"]
        return out

    assert resources() == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    assert resources(memory_request="8Gi") == {
        "requests": {"cpu": "1", "memory": "8Gi"},
        "limits": {"memory": "8Gi"},
    }
    assert resources(cpu_limit="500m", memory_limit="1Gi") == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }


# -- values the API server refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("60 * * * *", "'60' is outside the minute field's range 0-59"),
        ("0 24 * * *", "outside the hour field's range 0-23"),
        ("0 0 0 * *", "outside the day of month field's range 1-31"),
        ("0 0 1 13 *", "outside the month field's range 1-12"),
        ("0 0 * * 7", "Sunday is 0, not 7"),
        ("0 0 * * MON-SUN", "goes backwards"),
        ("*/0 * * * *", "step in '*/0' must be a positive number"),
        ("0 0 * JANUARY *", "'JANUARY' is not a number or a name (JAN-DEC) in the month field"),
        ("0 0 31 2 *", "never runs"),
        ("@every 1h", "@every is not Kubernetes syntax"),
        ("@fortnightly", "is not one of @yearly"),
        ("0 * * *", "give five fields"),
        ("TZ=UTC 0 * * * *", "put the zone in time_zone"),
    ],
)
def test_schedules_the_api_server_refuses(schedule: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="schedule") as caught:
        WriterSpec(image="w:1", schedule=schedule)
    assert expected in str(caught.value)


@pytest.mark.parametrize("schedule", ["0 0 * jan,Feb mon-fri", "? * * * ?", "0/30 * * * *", "@annually"])
def test_schedules_the_controller_accepts(schedule: str) -> None:
    assert WriterSpec(image="w:1", schedule=schedule).schedule == schedule


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/Pariss", "did you mean 'Europe/Paris'?"),
        ("Mars/Olympus_Mons", "is not an IANA time zone name"),
        ("Local", "is not an IANA time zone name"),
    ],
)
def test_time_zones_are_looked_up_in_the_iana_database(zone: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="time_zone") as caught:
        WriterSpec(image="w:1", schedule="@daily", time_zone=zone)
    assert expected in str(caught.value)
    assert WriterSpec(image="w:1", schedule="@daily", time_zone="America/Argentina/Buenos_Aires")


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"cpu_request": "2", "cpu_limit": "1500m"}, "cpu_request"),
        ({"memory_request": "2Gi", "memory_limit": "2000Mi"}, "memory_request"),
        ({"memory_request": "1100M", "memory_limit": "1Gi"}, "memory_request"),
    ],
)
def test_a_request_above_its_limit_is_refused(given: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}: .* is above") as caught:
        Resources(**given)
    assert "lower the request or raise the limit" in str(caught.value)
    assert Resources(cpu_request="1500m", cpu_limit="1.5", memory_request="1Gi", memory_limit="1024Mi")


def test_a_starting_deadline_needs_a_schedule_and_ten_seconds() -> None:
    with pytest.raises(ConfigError, match="starting_deadline_seconds: applies to a schedule"):
        WriterSpec(image="w:1", starting_deadline_seconds=60)
    with pytest.raises(ConfigError, match="at least 10 seconds"):
        WriterSpec(image="w:1", schedule="@hourly", starting_deadline_seconds=5)
    with pytest.raises(ConfigError, match="positive number of seconds"):
        WriterSpec(image="w:1", active_deadline_seconds=0)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--schedule=0 0 * * 7"], "--schedule: schedule '0 0 * * 7'"),
        (["--schedule=@daily", "--time-zone=Europe/Pariss"], "--time-zone: time_zone 'Europe/Pariss'"),
        (["--writer-cpu-request=2", "--writer-cpu-limit=1"], "--writer-cpu-request: (2) is above cpu_limit"),
        (["--schedule=@daily", "--starting-deadline-seconds=5"], "--starting-deadline-seconds: must be at"),
        (["--active-deadline-seconds=0"], "--active-deadline-seconds: must be a positive"),
    ],
)
def test_the_cli_names_the_flag(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(k8s, ["hostpath", "--path=/data/recs", "--writer-image=w:1", *args])
    assert isinstance(result.exception, ConfigError), result.output
    assert expected in str(result.exception)


def test_the_cli_sets_the_deadlines() -> None:
    result = CliRunner().invoke(
        k8s,
        [
            "hostpath",
            "--path=/data/recs",
            "--writer-image=w:1",
            "--schedule=@hourly",
            "--active-deadline-seconds=1800",
            "--starting-deadline-seconds=300",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "startingDeadlineSeconds: 300" in result.output
    assert "activeDeadlineSeconds: 1800" in result.output
    reader = CliRunner().invoke(
        k8s, ["hostpath", "--path=/data/recs", "--image=r:1", "--cpu-request=1", "--cpu-limit=500m"]
    )
    assert isinstance(reader.exception, ConfigError)
    assert "--cpu-request: (1) is above cpu_limit (500m)" in str(reader.exception)
