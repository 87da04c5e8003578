"""playbooks/awx.yml against a fake of the AWX REST API v2 on loopback (tests/support/fakeawx.py).

The fake keeps the objects and validates them the way AWX does; it is not AWX. What these tests
show: the requests the playbook makes, the objects that end up there, that a second run and
check mode change nothing, and that AWX's refusals and bad logins reach the operator. What they
cannot show: a real AWX syncing the project, running the job templates or firing schedules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.dns import running_dns
from support.fakeawx import ENCRYPTED, rrule_errors, running_awx, survey_errors

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)
SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "c2VjcmV0LWJhc3Rpb24ta2V5\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
SECRETS = {
    "schedule_awx_bastion_ssh_key": SSH_KEY,
    "schedule_awx_bastion_ssh_key_passphrase": "key-passphrase-7f3a",
    "schedule_awx_device_password": "device-password-91bc",
    "schedule_awx_vault_password": "vault-password-c2d4",
}
WEBHOOK = {
    "notification_type": "webhook",
    "notification_configuration": {"url": "https://chat.campus.example/hooks/noc", "headers": {}},
}
PAPER_RULES = [
    {"name": "cond1", "min_duration": 20, "min_sessions": 40, "min_risk": 95},
    {"name": "cond2", "min_duration": 200, "min_sessions": 1, "min_risk": 95},
    {"name": "cond3", "min_duration": 0, "min_sessions": 300, "min_risk": 0},
]

pytestmark = pytest.mark.skipif(
    not (BIN / "ansible-playbook").exists(), reason="needs .venv/bin/ansible-playbook (make setup)"
)


class Run:
    def __init__(self, process: subprocess.CompletedProcess[str]) -> None:
        self.rc = process.returncode
        self.output = process.stdout + process.stderr
        match = RECAP.search(process.stdout)
        assert match, self.output
        self.ok, self.changed, self.unreachable, self.failed = map(int, match.groups())


def play(awx: Any, work: Path, *args: str, **overrides: Any) -> Run:
    variables = {
        "schedule_awx_host": awx.url,
        "schedule_awx_username": awx.username,
        "schedule_awx_password": awx.password,
        "schedule_awx_token": "",
        "schedule_awx_scm_url": "https://git.campus.example/netops/smtpguard.git",
        "schedule_awx_device_username": "smtpguard",
        "schedule_awx_notification": WEBHOOK,
        **SECRETS,
        **overrides,
    }
    extra = work / f"awx-vars-{len(list(work.iterdir()))}.json"
    extra.write_text(json.dumps(variables))
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        "ansible_python_interpreter={{ ansible_playbook_python }}",
        "-e",
        f"@{extra}",
        "playbooks/awx.yml",
        *args,
    ]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    process = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    return Run(process)


class Session:
    """One fake AWX taken from empty through check, apply, apply again and check again."""

    def __init__(self, awx: Any, work: Path) -> None:
        self.awx = awx
        self.check_empty = play(awx, work, "--check")
        self.writes_after_check = awx.writes
        self.first = play(awx, work, "-v")
        self.writes_after_first = awx.writes
        self.second = play(awx, work)
        self.check_again = play(awx, work, "--check")

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [item for item in self.awx.objects(kind) if item["name"] == name]
        assert len(found) == 1, (kind, name, self.awx.objects(kind))
        return found[0]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with running_awx(ROOT) as awx:
        yield Session(awx, tmp_path_factory.mktemp("awx"))


@pytest.fixture
def awx() -> Iterator[Any]:
    with running_awx(ROOT) as server:
        yield server


def test_check_mode_on_an_empty_awx_reports_every_object_and_writes_nothing(
    session: Session,
) -> None:
    run = session.check_empty

    assert (run.rc, run.failed) == (0, 0), run.output
    assert session.writes_after_check == []
    for label in (
        "organization campusnet",
        "project smtpguard",
        "inventory smtpguard",
        "credential smtpguard bastion",
        "credential smtpguard vault",
        "job template smtpguard cycle",
        "job template smtpguard emergency",
    ):
        assert f"would create {label}" in run.output
    assert run.changed == 14  # org, type, 3 credentials, project, inventory, source, notice, 5 JTs


def test_first_run_creates_the_objects_and_a_second_run_changes_nothing(session: Session) -> None:
    assert (session.first.rc, session.first.failed) == (0, 0), session.first.output
    assert session.first.changed == len(session.writes_after_first) > 0
    assert (session.second.rc, session.second.changed, session.second.failed) == (0, 0, 0), (
        session.second.output
    )
    assert (session.check_again.rc, session.check_again.changed) == (0, 0), (
        session.check_again.output
    )
    assert session.awx.writes == session.writes_after_first
    assert not [write for write in session.awx.writes if write[0] != "POST"]


def test_project_inventory_and_source_point_at_the_repository(session: Session) -> None:
    organization = session.named("organizations", "campusnet")["id"]
    project = session.named("projects", "smtpguard")
    inventory = session.named("inventories", "smtpguard")
    source = session.named("inventory_sources", "smtpguard site")

    assert (project["organization"], project["scm_type"], project["scm_branch"]) == (
        organization,
        "git",
        "main",
    )
    assert project["scm_url"] == "https://git.campus.example/netops/smtpguard.git"
    assert inventory["organization"] == organization
    assert (source["inventory"], source["source"], source["source_project"]) == (
        inventory["id"],
        "scm",
        project["id"],
    )
    assert source["source_path"] == "inventory/site/hosts.yml" and source["update_on_launch"]


def test_credentials_hold_the_secrets_and_awx_shows_none_of_them(session: Session) -> None:
    bastion = session.named("credentials", "smtpguard bastion")
    devices = session.named("credentials", "smtpguard devices")
    vault = session.named("credentials", "smtpguard vault")
    device_type = session.named("credential_types", "smtpguard device login")

    assert bastion["inputs"] == {
        "username": "smtpguard",
        "ssh_key_data": ENCRYPTED,
        "ssh_key_unlock": ENCRYPTED,
    }
    assert session.awx.raw("credentials", "smtpguard bastion")["inputs"]["ssh_key_data"] == SSH_KEY
    assert (
        session.awx.raw("credentials", "smtpguard devices")["inputs"]["password"]
        == (SECRETS["schedule_awx_device_password"])
    )
    assert (
        session.awx.raw("credentials", "smtpguard vault")["inputs"]["vault_password"]
        == (SECRETS["schedule_awx_vault_password"])
    )
    assert devices["credential_type"] == device_type["id"]
    assert device_type["injectors"]["extra_vars"] == {
        "push_blocklist_device_username": "{{ username }}",
        "push_blocklist_device_password": "{{ password }}",
    }
    assert vault["inputs"] == {"vault_password": ENCRYPTED}


def test_no_secret_appears_in_any_output(session: Session) -> None:
    runs = (session.check_empty, session.first, session.second, session.check_again)
    for secret in [*SECRETS.values(), "c2VjcmV0LWJhc3Rpb24ta2V5", session.awx.password]:
        assert not [run for run in runs if secret in run.output], secret


@pytest.mark.parametrize(
    ("name", "playbook", "job_type", "diff_mode", "survey_variables"),
    [
        ("smtpguard cycle", "playbooks/mitigate.yml", "run", False, None),
        ("smtpguard cycle check", "playbooks/mitigate.yml", "check", True, None),
        (
            "smtpguard emergency",
            "playbooks/emergency.yml",
            "run",
            True,
            ["emergency_rules", "analyze_force", "analyze_window"],
        ),
        (
            "smtpguard rollback",
            "playbooks/rollback.yml",
            "run",
            True,
            ["rollback_snapshot", "rollback_targets"],
        ),
        (
            "smtpguard unblock",
            "playbooks/unblock.yml",
            "run",
            True,
            ["unblock_address", "unblock_reason", "unblock_expires"],
        ),
    ],
)
def test_job_templates_with_credentials_surveys_and_failure_notice(
    session: Session,
    name: str,
    playbook: str,
    job_type: str,
    diff_mode: bool,
    survey_variables: list[str] | None,
) -> None:
    template = session.named("job_templates", name)
    credentials = {
        session.named("credentials", f"smtpguard {what}")["id"]
        for what in ("bastion", "devices", "vault")
    }
    notice = session.named("notification_templates", "smtpguard failure")
    survey = session.awx.survey(template["id"])

    assert (template["playbook"], template["job_type"], template["diff_mode"]) == (
        playbook,
        job_type,
        diff_mode,
    )
    assert template["inventory"] == session.named("inventories", "smtpguard")["id"]
    assert template["project"] == session.named("projects", "smtpguard")["id"]
    assert not template["allow_simultaneous"]
    assert set(session.awx.linked(template["id"], "credentials")) == credentials
    assert session.awx.linked(template["id"], "notification_templates_error") == [notice["id"]]
    assert template["survey_enabled"] is (survey_variables is not None)
    assert [question["variable"] for question in survey.get("spec", [])] == (survey_variables or [])
    assert survey_errors(survey) == (
        []
        if survey_variables
        else [
            "'name' missing from survey spec.",
            "'description' missing from survey spec.",
            "'spec' missing from survey spec.",
            "'spec' must be a non-empty list of questions.",
        ]
    )


def test_only_the_cycle_is_scheduled_every_30_minutes(session: Session) -> None:
    cycle = session.named("job_templates", "smtpguard cycle")
    schedules = session.awx.objects("schedules")

    assert [
        (item["unified_job_template"], item["rrule"], item["enabled"]) for item in schedules
    ] == [(cycle["id"], "DTSTART;TZID=UTC:20260101T000000 RRULE:FREQ=MINUTELY;INTERVAL=30", True)]
    assert (
        session.named("notification_templates", "smtpguard failure")["notification_configuration"]
        == WEBHOOK["notification_configuration"]
    )


def test_a_changed_definition_or_a_drifted_object_is_put_back(awx: Any, tmp_path: Path) -> None:
    play(awx, tmp_path, schedule_awx_interval_minutes=30)
    emergency = next(
        item for item in awx.objects("job_templates") if item["name"].endswith("emergency")
    )
    awx.store.tables["job_templates"][emergency["id"]]["diff_mode"] = False
    awx.store.surveys.pop(emergency["id"])
    before = awx.writes

    checked = play(awx, tmp_path, "--check", schedule_awx_interval_minutes=15)
    assert awx.writes == before
    applied = play(awx, tmp_path, schedule_awx_interval_minutes=15)

    assert "would update diff_mode of job template smtpguard emergency" in checked.output
    assert "would set the survey of smtpguard emergency" in checked.output
    assert "would update description, rrule of schedule of smtpguard cycle" in checked.output
    assert checked.changed == applied.changed == 3, applied.output
    assert awx.writes[len(before) :] == [
        ("PATCH", "schedules/smtpguard cycle schedule:description,enabled,name,rrule"),
        (
            "PATCH",
            "job_templates/smtpguard emergency:allow_simultaneous,ask_job_type_on_launch,"
            "description,diff_mode,extra_vars,inventory,job_type,name,playbook,project,"
            "survey_enabled",
        ),
        ("POST", f"survey_spec/{emergency['id']}"),
    ]
    assert awx.objects("schedules")[0]["rrule"].endswith("RRULE:FREQ=MINUTELY;INTERVAL=15")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"schedule_awx_password": "wrong"},
            "(check schedule_awx_username/schedule_awx_password or schedule_awx_token)",
        ),
        (
            {
                "schedule_awx_templates": [
                    {
                        "name": "smtpguard typo",
                        "playbook": "playbooks/mitigat.yml",
                        "job_type": "run",
                    }
                ]
            },
            "Playbook not found for project.",
        ),
        ({"schedule_awx_start": "2026-01-01 00:00"}, "Valid DTSTART required in rrule."),
        (
            {
                "schedule_awx_templates": [
                    {
                        "name": "smtpguard odd",
                        "playbook": "playbooks/mitigate.yml",
                        "job_type": "run",
                        "survey": [
                            {
                                "variable": "x",
                                "type": "date",
                                "question_name": "X",
                                "required": True,
                            }
                        ],
                    }
                ]
            },
            "is not one of",
        ),
        ({"schedule_awx_scm_url": ""}, "schedule_awx_scm_url"),
        ({"schedule_awx_interval_minutes": 0}, "schedule_awx_interval_minutes is 0; give"),
        ({"schedule_awx_timezone": "Mars/Olympus"}, "schedule_awx_timezone is Mars/Olympus;"),
    ],
    ids=["bad-login", "unknown-playbook", "bad-rrule", "bad-survey", "no-scm-url",
         "zero-interval", "unknown-zone"],
)
def test_a_refusal_fails_the_run_with_awx_s_message(
    awx: Any, tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    run = play(awx, tmp_path, **overrides)

    assert run.failed == 1, run.output
    assert message in run.output
    assert not [secret for secret in SECRETS.values() if secret in run.output]


@pytest.mark.parametrize(
    ("rrule", "takes"),
    [
        ("DTSTART;TZID=Asia/Tokyo:20260101T000000 RRULE:FREQ=MINUTELY;INTERVAL=30", True),
        ("DTSTART:20260101T000000Z RRULE:FREQ=HOURLY;INTERVAL=1;COUNT=5", True),
        ("RRULE:FREQ=MINUTELY;INTERVAL=30", False),
        ("DTSTART:20260101T000000Z RRULE:FREQ=MINUTELY", False),
        ("DTSTART:20260101T000000Z RRULE:FREQ=SECONDLY;INTERVAL=30", False),
        ("DTSTART:20260101T000000Z DTSTART:20260102T000000Z RRULE:FREQ=DAILY;INTERVAL=1", False),
        ("DTSTART:20260101T000000Z RRULE:FREQ=DAILY;INTERVAL=1;COUNT=1000", False),
    ],
)
def test_the_fake_checks_rrules_like_awx(rrule: str, takes: bool) -> None:
    assert (rrule_errors(rrule) == []) is takes


def test_emergency_survey_answers_become_the_rules_of_a_real_run(
    session: Session, tmp_path: Path
) -> None:
    """Launch what AWX would launch for the emergency template as check with its survey's
    defaults, but with one operator rule: ansible-playbook on the demo inventory."""
    template = session.named("job_templates", "smtpguard emergency")
    survey = session.awx.survey(template["id"])
    answers = {question["variable"]: question.get("default") for question in survey["spec"]}
    assert yaml.safe_load(answers["emergency_rules"]) == PAPER_RULES
    answers["emergency_rules"] = "- {name: survey, min_duration: 0, min_sessions: 1, min_risk: 0}"
    extra_vars = {**json.loads(template["extra_vars"]), **answers}
    (tmp_path / "launch.json").write_text(json.dumps(extra_vars))

    with running_dns((ROOT / "demo" / "dns.zone").read_text()) as dns:
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "SMTPGUARD_DEMO_DNS_PORT": str(dns.port)}
        launched = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                template["playbook"],
                "--check",
                "--diff",
                "-e",
                json.dumps({"smtpguard_work_dir": str(tmp_path / "work")}),
                "-e",
                f"@{tmp_path / 'launch.json'}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    output = launched.stdout + launched.stderr
    assert launched.returncode == 0, output
    assert re.search(r"block \S+\s+survey: \d+ sessions? of 0 s or more", output), output
    assert not re.search(r"block \S+\s+cond\d: ", output)
