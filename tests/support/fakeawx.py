"""A small stateful imitation of the AWX / Automation Controller REST API v2, for tests.

It is a fake: it keeps objects in memory and checks what the smtpguard AWX playbook relies
on the way AWX does (required fields, references to objects that exist, unique names, the
job template's playbook among the project's, one credential per kind on a job template, the
survey spec's shape, the schedule's rrule, secret credential inputs returned as
``$encrypted$``), answering with AWX's status codes and field-error bodies. It runs no jobs,
syncs no project from SCM (the project's playbooks are the files under ``playbooks/`` of the
directory given at start) and knows only the endpoints and fields listed in KINDS.

    with running_awx(project_root) as awx:
        ... awx.url, awx.username, awx.password ...
        awx.objects("job_templates"), awx.writes   # what ended up there, what changed it
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

ENCRYPTED = "$encrypted$"
REQUIRED = "This field is required."


@dataclass(frozen=True)
class Kind:
    required: tuple[str, ...]
    unique: tuple[str, ...]  # name plus the fields it is unique within
    references: dict[str, str] = field(default_factory=dict)  # field -> kind it points to
    defaults: dict[str, Any] = field(default_factory=dict)


KINDS: dict[str, Kind] = {
    "organizations": Kind(("name",), ("name",), defaults={"description": ""}),
    "credential_types": Kind(
        ("name", "kind"), ("name",), defaults={"description": "", "inputs": {}, "injectors": {}}
    ),
    "credentials": Kind(
        ("name", "credential_type"),
        ("name", "credential_type", "organization"),
        {"credential_type": "credential_types", "organization": "organizations"},
        {"description": "", "inputs": {}, "organization": None},
    ),
    "projects": Kind(
        ("name", "organization"),
        ("name", "organization"),
        {"organization": "organizations", "credential": "credentials"},
        {
            "description": "",
            "scm_type": "",
            "scm_url": "",
            "scm_branch": "",
            "credential": None,
            "scm_update_on_launch": False,
        },
    ),
    "inventories": Kind(
        ("name", "organization"),
        ("name", "organization"),
        {"organization": "organizations"},
        {"description": "", "variables": ""},
    ),
    "inventory_sources": Kind(
        ("name", "inventory", "source"),
        ("name", "inventory"),
        {"inventory": "inventories", "source_project": "projects"},
        {
            "description": "",
            "source_path": "",
            "source_project": None,
            "overwrite": False,
            "update_on_launch": False,
        },
    ),
    "job_templates": Kind(
        ("name", "project", "playbook"),
        ("name", "organization"),
        {"project": "projects", "inventory": "inventories"},
        {
            "description": "",
            "job_type": "run",
            "inventory": None,
            "extra_vars": "",
            "diff_mode": False,
            "survey_enabled": False,
            "verbosity": 0,
            "allow_simultaneous": False,
            "ask_inventory_on_launch": False,
        },
    ),
    "schedules": Kind(
        ("name", "rrule", "unified_job_template"),
        ("name", "unified_job_template"),
        {"unified_job_template": "job_templates"},
        {"description": "", "enabled": True, "extra_data": {}},
    ),
    "notification_templates": Kind(
        ("name", "organization", "notification_type", "notification_configuration"),
        ("name", "organization"),
        {"organization": "organizations"},
        {"description": ""},
    ),
}
CHOICES = {
    ("credential_types", "kind"): {"ssh", "vault", "net", "cloud", "scm", "insights"},
    ("projects", "scm_type"): {"", "git", "svn", "insights", "archive"},
    ("inventory_sources", "source"): {"scm", "file", "ec2", "gce", "azure_rm", "vmware"},
    ("job_templates", "job_type"): {"run", "check"},
    ("notification_templates", "notification_type"): {"email", "slack", "webhook", "mattermost"},
}
# The credential types every AWX ships (managed); their secret inputs.
MANAGED_TYPES = {
    "Machine": (
        "ssh",
        ["username", "password", "ssh_key_data", "ssh_key_unlock"],
        ["password", "ssh_key_data", "ssh_key_unlock"],
    ),
    "Vault": ("vault", ["vault_password", "vault_id"], ["vault_password"]),
    "Source Control": (
        "scm",
        ["username", "password", "ssh_key_data"],
        ["password", "ssh_key_data"],
    ),
}
NOTIFICATION_KEYS = {
    "email": {
        "host",
        "port",
        "sender",
        "recipients",
        "username",
        "password",
        "use_tls",
        "use_ssl",
        "timeout",
    },
    "webhook": {
        "url",
        "headers",
        "http_method",
        "username",
        "password",
        "disable_ssl_verification",
    },
    "slack": {"token", "channels"},
    "mattermost": {"mattermost_url", "mattermost_username", "mattermost_channel"},
}
NOTIFICATION_REQUIRED = {
    "email": {"host", "port", "sender", "recipients"},
    "webhook": {"url", "headers"},
    "slack": {"token", "channels"},
    "mattermost": {"mattermost_url"},
}
NOTIFICATION_SECRETS = {"password", "token"}
QUESTION_TYPES = {
    "text",
    "textarea",
    "password",
    "integer",
    "float",
    "multiplechoice",
    "multiselect",
}
DTSTART = re.compile(r"DTSTART(?:;TZID=[A-Za-z0-9_+\-/]+)?:\d{8}T\d{6}Z?")
RRULE_PARTS = {
    "FREQ",
    "INTERVAL",
    "COUNT",
    "UNTIL",
    "BYDAY",
    "BYMONTHDAY",
    "BYMONTH",
    "BYHOUR",
    "BYMINUTE",
    "BYSETPOS",
    "BYWEEKNO",
    "BYYEARDAY",
    "WKST",
    "BYSECOND",
}
FREQUENCIES = {"MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"}


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def query_text(value: Any) -> str:
    """A field as a list filter (?managed=true&organization=2) compares it."""
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def rrule_errors(value: Any) -> list[str]:
    """What AWX would say about a schedule's rrule string; empty when it takes it."""
    if not isinstance(value, str) or not value.strip():
        return [REQUIRED]
    tokens = value.split()
    starts = [token for token in tokens if token.startswith("DTSTART")]
    rules = [token for token in tokens if token.startswith("RRULE:")]
    if len(starts) != 1:
        return [
            "Valid DTSTART required in rrule. Value should start with: DTSTART:YYYYMMDDTHHMMSSZ"
            if not starts
            else "Multiple DTSTART is not supported."
        ]
    if not DTSTART.fullmatch(starts[0]):
        return [
            "Valid DTSTART required in rrule. Value should start with: DTSTART:YYYYMMDDTHHMMSSZ"
        ]
    if not rules:
        return ["RRULE required in rrule."]
    if len(tokens) != len(starts) + len(rules):
        return ["rrule parsing failed validation: unknown part in " + value]
    errors = []
    for rule in rules:
        parts = dict(part.partition("=")[::2] for part in rule[len("RRULE:") :].split(";"))
        unknown = set(parts) - RRULE_PARTS
        if unknown:
            errors.append(f"rrule parsing failed validation: unknown {sorted(unknown)}")
        if parts.get("FREQ") == "SECONDLY":
            errors.append("SECONDLY is not supported.")
        elif parts.get("FREQ") not in FREQUENCIES:
            errors.append("FREQ required in rrule.")
        if not re.fullmatch(r"[1-9][0-9]*", parts.get("INTERVAL", "")):
            errors.append("INTERVAL required in rrule.")
        if "COUNT" in parts and "UNTIL" in parts:
            errors.append("RRULE may not contain both COUNT and UNTIL")
        if "COUNT" in parts and (not parts["COUNT"].isdigit() or int(parts["COUNT"]) > 999):
            errors.append("COUNT > 999 is unsupported.")
    return errors


def survey_errors(spec: Any) -> list[str]:
    """What AWX would say about a survey spec; empty when it takes it."""
    if not isinstance(spec, dict):
        return ["Survey spec must be a JSON object."]
    errors = [
        f"'{key}' missing from survey spec."
        for key in ("name", "description", "spec")
        if key not in spec
    ]
    questions = spec.get("spec")
    if not isinstance(questions, list) or not questions:
        return errors + ["'spec' must be a non-empty list of questions."]
    variables: set[str] = set()
    for index, question in enumerate(questions):
        where = f"Survey question {index}"
        if not isinstance(question, dict):
            errors.append(f"{where} is not a json object.")
            continue
        for key in ("type", "question_name", "variable", "required"):
            if key not in question:
                errors.append(f"'{key}' missing from survey question {index}.")
        kind = question.get("type")
        if kind not in QUESTION_TYPES:
            errors.append(
                f"'{kind}' in survey question {index} is not one of {sorted(QUESTION_TYPES)}."
            )
        variable = question.get("variable")
        if variable in variables:
            errors.append(f"'variable' '{variable}' duplicated in survey question {index}.")
        variables.add(variable)
        if not isinstance(question.get("required"), bool):
            errors.append(f"'required' in survey question {index} expected to be a boolean.")
        default = question.get("default")
        if kind in {"multiplechoice", "multiselect"}:
            choices = question.get("choices")
            if isinstance(choices, str):
                choices = choices.split("\n")
            if not choices:
                errors.append(f"Survey question {index} of type {kind} must have choices.")
            elif default not in (None, "") and kind == "multiplechoice" and default not in choices:
                errors.append(
                    f"Default choice must be answered from the choices listed in {where}."
                )
        if kind == "integer" and default not in (None, "") and not isinstance(default, int):
            errors.append(
                f"Default value {default!r} in survey question {index} expected to be int."
            )
    return errors


class Store:
    """The objects, their links and a record of every request that changed something."""

    def __init__(self, project_root: Path) -> None:
        self.project_root = project_root
        self.lock = threading.Lock()
        self.tables: dict[str, dict[int, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.links: dict[tuple[str, int, str], list[int]] = {}
        self.surveys: dict[int, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.next_id = 1
        self.insert("organizations", {"name": "Default"})
        for name, (kind, fields, secrets) in MANAGED_TYPES.items():
            inputs = {
                "fields": [
                    {
                        "id": key,
                        "label": key,
                        "type": "string",
                        **({"secret": True} if key in secrets else {}),
                    }
                    for key in fields
                ]
            }
            self.insert(
                "credential_types", {"name": name, "kind": kind, "managed": True, "inputs": inputs}
            )

    def insert(self, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        record = {**KINDS[kind].defaults, **values, "id": self.next_id, "type": kind[:-1]}
        self.tables[kind][self.next_id] = record
        self.next_id += 1
        return record

    def get(self, kind: str, ident: int) -> dict[str, Any]:
        if ident not in self.tables[kind]:
            raise ApiError(404, {"detail": "Not found."})
        return self.tables[kind][ident]

    def playbooks(self, project: dict[str, Any]) -> list[str]:
        folder = self.project_root / "playbooks"
        return sorted(f"playbooks/{path.name}" for path in folder.glob("*.yml"))

    def secret_inputs(self, record: dict[str, Any]) -> set[str]:
        if record["type"] == "credential":
            kind = self.tables["credential_types"][record["credential_type"]]
            return {item["id"] for item in kind["inputs"].get("fields", []) if item.get("secret")}
        return set()

    def shown(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record as the API returns it: secrets replaced by $encrypted$."""
        shown = json.loads(json.dumps(record))
        secrets = self.secret_inputs(record)
        for key in secrets & set(shown.get("inputs", {})):
            if shown["inputs"][key] not in ("", None):
                shown["inputs"][key] = ENCRYPTED
        if record["type"] == "notification_template":
            config = shown["notification_configuration"]
            for key in NOTIFICATION_SECRETS & set(config):
                config[key] = ENCRYPTED if config[key] else ""
        return shown

    def validate(self, kind: str, values: dict[str, Any], ident: int | None) -> None:
        spec = KINDS[kind]
        errors: dict[str, list[str]] = {}
        for key in spec.required:
            if values.get(key) in (None, ""):
                errors.setdefault(key, []).append(REQUIRED)
        for key, target in spec.references.items():
            if values.get(key) not in (None, "") and values[key] not in self.tables[target]:
                errors.setdefault(key, []).append(
                    f'Invalid pk "{values[key]}" - object does not exist.'
                )
        for (table, key), allowed in CHOICES.items():
            if table == kind and key in values and values[key] not in allowed:
                errors.setdefault(key, []).append(f'"{values[key]}" is not a valid choice.')
        if not errors:
            errors.update(getattr(self, f"_check_{kind}", lambda _v: {})(values))
        if not errors:
            others = [other for other in self.tables[kind].values() if other["id"] != ident]
            if any(
                all(other.get(key) == values.get(key) for key in spec.unique) for other in others
            ):
                fields = " and ".join(spec.unique)
                errors["__all__"] = [f"{kind[:-1]} with this {fields} already exists."]
        if errors:
            raise ApiError(400, errors)

    def _check_credential_types(self, values: dict[str, Any]) -> dict[str, list[str]]:
        if values.get("kind") not in {"net", "cloud"}:
            return {"kind": ["Must be 'cloud' or 'net', not " + str(values.get("kind"))]}
        fields = values.get("inputs", {}).get("fields", [])
        bad = [
            item
            for item in fields
            if not {"id", "label"} <= set(item)
            or item.get("type", "string") not in {"string", "boolean"}
        ]
        return {"inputs": [f"Invalid input field {bad[0]}"]} if bad else {}

    def _check_credentials(self, values: dict[str, Any]) -> dict[str, list[str]]:
        kind = self.tables["credential_types"][values["credential_type"]]
        known = {item["id"] for item in kind["inputs"].get("fields", [])}
        inputs = values.get("inputs", {})
        errors = [
            f"Additional properties are not allowed ('{key}' was unexpected)"
            for key in sorted(set(inputs) - known)
        ]
        for key in kind["inputs"].get("required", []):
            if inputs.get(key) in (None, ""):
                errors.append(f"{key}: {REQUIRED}")
        if kind["kind"] == "vault" and not inputs.get("vault_password"):
            errors.append(f"vault_password: {REQUIRED}")
        return {"inputs": errors} if errors else {}

    def _check_projects(self, values: dict[str, Any]) -> dict[str, list[str]]:
        if values.get("scm_type") and not values.get("scm_url"):
            return {"scm_url": ["SCM type requires a URL."]}
        return {}

    def _check_inventories(self, values: dict[str, Any]) -> dict[str, list[str]]:
        try:
            parsed = yaml.safe_load(values.get("variables") or "{}")
        except yaml.YAMLError:
            parsed = None
        return {} if isinstance(parsed, dict) else {"variables": ["Must be valid JSON or YAML."]}

    def _check_inventory_sources(self, values: dict[str, Any]) -> dict[str, list[str]]:
        if values.get("source") == "scm" and not values.get("source_project"):
            return {"source_project": ["Project required for scm type sources."]}
        return {}

    def _check_job_templates(self, values: dict[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if not values.get("inventory") and not values.get("ask_inventory_on_launch"):
            errors["inventory"] = [
                "Job Template must provide 'inventory' or allow prompting for it."
            ]
        project = self.tables["projects"][values["project"]]
        if values["playbook"] not in self.playbooks(project):
            errors["playbook"] = ["Playbook not found for project."]
        try:
            extra = yaml.safe_load(values.get("extra_vars") or "{}")
        except yaml.YAMLError:
            extra = None
        if not isinstance(extra, dict):
            errors["extra_vars"] = ["Must be valid JSON or YAML."]
        return errors

    def _check_schedules(self, values: dict[str, Any]) -> dict[str, list[str]]:
        errors = rrule_errors(values.get("rrule"))
        if not isinstance(values.get("extra_data", {}), dict):
            errors.append("extra_data must be a dictionary")
        return {"rrule": errors} if errors else {}

    def _check_notification_templates(self, values: dict[str, Any]) -> dict[str, list[str]]:
        kind = values["notification_type"]
        config = values["notification_configuration"]
        if not isinstance(config, dict):
            return {"notification_configuration": ["Must be an object."]}
        missing = sorted(NOTIFICATION_REQUIRED[kind] - set(config))
        unknown = sorted(set(config) - NOTIFICATION_KEYS[kind])
        errors = (
            [f"Missing required fields for Notification Configuration: {missing}."]
            if missing
            else []
        )
        errors += [f"Unknown fields for Notification Configuration: {unknown}."] if unknown else []
        return {"notification_configuration": errors} if errors else {}

    def derive(self, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        """Fields AWX fills in itself."""
        if kind == "job_templates" and values.get("project") in self.tables["projects"]:
            return {
                **values,
                "organization": self.tables["projects"][values["project"]]["organization"],
            }
        return values


class Handler(BaseHTTPRequestHandler):
    server: FakeAWX

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass

    def do_GET(self) -> None:
        self.answer("GET")

    def do_POST(self) -> None:
        self.answer("POST")

    def do_PATCH(self) -> None:
        self.answer("PATCH")

    def do_DELETE(self) -> None:
        self.answer("DELETE")

    def answer(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            self.authenticate()
            body = self.read_body() if method in {"POST", "PATCH"} else {}
            with self.server.store.lock:
                status, payload = self.server.route(
                    method, url.path, dict(parse_qsl(url.query)), body
                )
        except ApiError as error:
            status, payload = error.status, error.body
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authenticate(self) -> None:
        header = self.headers.get("Authorization", "")
        basic = (
            "Basic "
            + base64.b64encode(f"{self.server.username}:{self.server.password}".encode()).decode()
        )
        if header not in {basic, f"Bearer {self.server.token}"}:
            raise ApiError(401, {"detail": "Authentication credentials were not provided."})

    def read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as error:
            raise ApiError(400, {"detail": f"JSON parse error - {error}"}) from error
        if not isinstance(body, dict):
            raise ApiError(400, {"detail": "Expected an object."})
        return body


class FakeAWX(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, project_root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.store = Store(project_root)
        self.username, self.password, self.token = "admin", "fake-admin-password", "fake-token"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def writes(self) -> list[tuple[str, str]]:
        return list(self.store.writes)

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """Every object of a kind as the API shows it (secrets as $encrypted$)."""
        return [self.store.shown(record) for record in self.store.tables[kind].values()]

    def raw(self, kind: str, name: str) -> dict[str, Any]:
        """One object as stored, secrets included (for tests that check what was sent)."""
        return next(record for record in self.store.tables[kind].values() if record["name"] == name)

    def survey(self, template: int) -> dict[str, Any]:
        return self.store.surveys.get(template, {})

    def linked(self, template: int, relation: str) -> list[int]:
        return list(self.store.links.get(("job_templates", template, relation), []))

    def route(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        parts = [part for part in path.split("/") if part]
        if parts[:2] != ["api", "v2"]:
            raise ApiError(404, {"detail": "Not found."})
        parts = parts[2:]
        if parts == ["ping"]:
            return 200, {"version": "fake"}
        if not parts or parts[0] not in KINDS:
            raise ApiError(404, {"detail": "Not found."})
        kind = parts[0]
        if len(parts) == 1:
            return self.collection(method, kind, query, body, parent=None)
        ident = int(parts[1]) if parts[1].isdigit() else -1
        record = self.store.get(kind, ident)
        if len(parts) == 2:
            return self.detail(method, kind, record, body)
        if kind == "job_templates" and parts[2] == "survey_spec":
            return self.survey_spec(method, ident, body)
        if kind == "job_templates" and parts[2] == "schedules":
            return self.collection(method, "schedules", query, body, parent=ident)
        if kind == "job_templates" and parts[2] in {
            "credentials",
            "notification_templates_error",
            "notification_templates_success",
        }:
            return self.association(method, record, parts[2], body)
        raise ApiError(404, {"detail": "Not found."})

    def collection(
        self,
        method: str,
        kind: str,
        query: dict[str, str],
        body: dict[str, Any],
        *,
        parent: int | None,
    ) -> tuple[int, Any]:
        if method == "GET":
            rows = [
                record
                for record in self.store.tables[kind].values()
                if parent is None or record.get("unified_job_template") == parent
            ]
            rows = [
                row
                for row in rows
                if all(
                    query_text(row.get(key)) == value
                    for key, value in query.items()
                    if key not in {"page_size", "page"}
                )
            ]
            shown = [self.store.shown(row) for row in rows]
            return 200, {"count": len(shown), "next": None, "previous": None, "results": shown}
        if method != "POST":
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        if parent is not None:
            body = {**body, "unified_job_template": parent}
        values = self.store.derive(kind, {**KINDS[kind].defaults, **body})
        self.store.validate(kind, values, None)
        record = self.store.insert(kind, values)
        self.store.writes.append(("POST", f"{kind}/{record['name']}"))
        return 201, self.store.shown(record)

    def detail(
        self, method: str, kind: str, record: dict[str, Any], body: dict[str, Any]
    ) -> tuple[int, Any]:
        if method == "GET":
            return 200, self.store.shown(record)
        if method == "DELETE":
            del self.store.tables[kind][record["id"]]
            self.store.writes.append(("DELETE", f"{kind}/{record['name']}"))
            return 204, None
        if method != "PATCH":
            raise ApiError(405, {"detail": f'Method "{method}" not allowed.'})
        update = dict(body)
        for key in self.store.secret_inputs(record) & set(update.get("inputs", {})):
            if update["inputs"][key] == ENCRYPTED:  # AWX keeps the stored secret
                update["inputs"][key] = record["inputs"].get(key)
        values = self.store.derive(kind, {**record, **update})
        self.store.validate(kind, values, record["id"])
        record.update(values)
        self.store.writes.append(("PATCH", f"{kind}/{record['name']}:{','.join(sorted(body))}"))
        return 200, self.store.shown(record)

    def survey_spec(self, method: str, template: int, body: dict[str, Any]) -> tuple[int, Any]:
        if method == "GET":
            return 200, self.store.surveys.get(template, {})
        if method == "DELETE":
            self.store.surveys.pop(template, None)
            self.store.writes.append(("DELETE", f"survey_spec/{template}"))
            return 200, None
        errors = survey_errors(body)
        if errors:
            raise ApiError(400, {"error": errors[0], "errors": errors})
        self.store.surveys[template] = body
        self.store.writes.append(("POST", f"survey_spec/{template}"))
        return 200, None

    def association(
        self, method: str, template: dict[str, Any], relation: str, body: dict[str, Any]
    ) -> tuple[int, Any]:
        linked = self.store.links.setdefault(("job_templates", template["id"], relation), [])
        target_kind = "credentials" if relation == "credentials" else "notification_templates"
        if method == "GET":
            rows = [self.store.shown(self.store.tables[target_kind][ident]) for ident in linked]
            return 200, {"count": len(rows), "next": None, "previous": None, "results": rows}
        ident = body.get("id")
        target = self.store.get(target_kind, ident) if isinstance(ident, int) else None
        if target is None:
            raise ApiError(
                400,
                {
                    "msg": "'id' is required to disassociate"
                    if body.get("disassociate")
                    else "'id' is required"
                },
            )
        if body.get("disassociate"):
            if ident in linked:
                linked.remove(ident)
            self.store.writes.append(("POST", f"{relation}/{template['id']}-{ident}"))
            return 204, None
        if relation == "credentials" and ident not in linked:
            kind = target["credential_type"]
            same = [
                other
                for other in linked
                if self.store.tables["credentials"][other]["credential_type"] == kind
            ]
            if same:
                type_name = self.store.tables["credential_types"][kind]["name"]
                raise ApiError(400, {"error": f"Cannot assign multiple {type_name} credentials."})
        if ident not in linked:
            linked.append(ident)
            self.store.writes.append(("POST", f"{relation}/{template['id']}+{ident}"))
        return 204, None


@contextmanager
def running_awx(project_root: Path) -> Iterator[FakeAWX]:
    """A FakeAWX serving on 127.0.0.1 and a free port; always shut down on exit."""
    server = FakeAWX(project_root)
    thread = threading.Thread(target=server.serve_forever, name="fakeawx", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
