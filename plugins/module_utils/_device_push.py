"""One push of a rendered block list to a CLI device over a netmiko-like connection.

read -> delta -> (check: report; Junos also `commit check`) -> send chunks -> read back ->
compare. A rejected line or a read-back that differs puts the device back to what it held
before, then raises DeviceError with the device's own message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.campusnet.smtpguard.plugins.module_utils._bastion import Route
from ansible_collections.campusnet.smtpguard.plugins.module_utils._devices import (
    Delta,
    DeviceConfig,
    DeviceError,
    Platform,
    compute_delta,
    delta_chunks,
    device_errors,
    parse_config,
)

log = logging.getLogger(__name__)

# A private candidate: other administrators' uncommitted edits are neither committed with ours
# nor thrown away by our `rollback 0`.
JUNOS_CONFIGURE = "configure private"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Connection(Protocol):
    """The part of a netmiko connection the push uses."""

    def send_command(self, command_string: str, **kwargs: Any) -> Any: ...

    def send_config_set(self, config_commands: list[str], **kwargs: Any) -> str: ...

    def config_mode(self, *args: Any, **kwargs: Any) -> str: ...

    def exit_config_mode(self, *args: Any, **kwargs: Any) -> str: ...


@dataclass
class PushResult:
    """What a push did or, in check mode, would do."""

    changed: bool
    before: DeviceConfig
    desired: DeviceConfig
    delta: Delta
    commands: list[str] = field(default_factory=list)
    chunks: int = 0
    messages: list[str] = field(default_factory=list)

    def to_dict(self, platform: Platform) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "added": self.delta.networks("added"),
            "removed": self.delta.networks("removed"),
            "commands": self.commands,
            "chunks": self.chunks,
            "count": {"before": self.before.count(), "after": self.desired.count()},
            "diff": {
                "before": "".join(f"{line}\n" for line in self.before.lines(platform)),
                "after": "".join(f"{line}\n" for line in self.desired.lines(platform)),
            },
            "messages": self.messages,
        }


class DevicePush:
    """Push one rendered configuration text to one device."""

    def __init__(
        self,
        connection: Connection,
        platform: Platform,
        *,
        host: str,
        chunk_size: int | None = None,
        confirm_minutes: int = 5,
        read_timeout: float = 60.0,
    ) -> None:
        self.connection = connection
        self.platform = platform
        self.host = host
        self.chunk_size = chunk_size or platform.chunk_size
        self.confirm_minutes = confirm_minutes
        self.read_timeout = read_timeout

    def run(self, rendered: str, *, check: bool) -> PushResult:
        desired = parse_config(rendered, self.platform, strict=True)
        if not desired.containers:
            raise DeviceError(
                "the rendered configuration names no object group or prefix list; check the "
                "template's name variables"
            )

        before = self.read(desired)
        delta = compute_delta(before, desired)
        chunks = delta_chunks(delta, self.platform, chunk_size=self.chunk_size)
        result = PushResult(
            changed=bool(delta),
            before=before,
            desired=desired,
            delta=delta,
            commands=[command for chunk in chunks for command in chunk],
            chunks=len(chunks),
        )
        if not delta:
            return result

        if self.platform.commit:
            self._junos(chunks, before=before, desired=desired, check=check, result=result)
        elif not check:
            self._cisco(chunks, before=before, desired=desired)
        return result

    # Reading

    def read(self, wanted: DeviceConfig) -> DeviceConfig:
        """The device's members of the containers `wanted` names (empty when it has none)."""
        output = self._show(self.platform.read_back)
        errors = device_errors(output, self.platform)
        if errors:
            raise DeviceError(
                f"{self.host} refused to show its configuration "
                f"({self.platform.read_back!r}): {errors[0]}"
            )
        held = parse_config(output, self.platform, strict=False)
        return DeviceConfig(
            {name: dict(held.containers.get(name, {})) for name in wanted.containers}
        )

    def _show(self, command: str) -> str:
        return str(self.connection.send_command(command, read_timeout=self.read_timeout))

    # Cisco IOS and ASA: every line takes effect at once

    def _cisco(
        self, chunks: list[list[str]], *, before: DeviceConfig, desired: DeviceConfig
    ) -> None:
        for number, chunk in enumerate(chunks, start=1):
            try:
                output = self.connection.send_config_set(chunk, read_timeout=self.read_timeout)
            except Exception as exc:  # a timeout or a dropped session half way: put it back
                self._restore_cisco(
                    before, cause=f"failed during chunk {number}", errors=[_describe(exc)]
                )
            errors = device_errors(output, self.platform)
            if errors:
                log.debug("%s rejected chunk %d: %r", self.host, number, errors)
                self._restore_cisco(
                    before, cause=f"rejected a line of chunk {number}", errors=errors
                )

        after = self.read(desired)
        if _members(after) != _members(desired):
            self._restore_cisco(
                before, cause="read back a different list", errors=[_mismatch(after, desired)]
            )

    def _restore_cisco(self, before: DeviceConfig, *, cause: str, errors: list[str]) -> None:
        """Put back what the device held before, then raise with its message."""
        outcome = "restored what it held before"
        try:
            now = self.read(before)
            back = delta_chunks(
                compute_delta(now, before), self.platform, chunk_size=self.chunk_size
            )
            for chunk in back:
                output = self.connection.send_config_set(chunk, read_timeout=self.read_timeout)
                failed = device_errors(output, self.platform)
                if failed:
                    raise DeviceError(failed[0])
            if _members(self.read(before)) != _members(before):
                raise DeviceError("the read-back after restoring still differs")
        except Exception as exc:  # the session may be gone: say so, never hide the first cause
            outcome = (
                f"restoring what it held before FAILED too ({_describe(exc)}); check the device "
                "by hand"
            )
        raise DeviceError(f"{self.host} {cause}: {' | '.join(errors)} -- {outcome}")

    # Junos: a candidate configuration, commit check, commit confirmed, confirm

    def _junos(
        self,
        chunks: list[list[str]],
        *,
        before: DeviceConfig,
        desired: DeviceConfig,
        check: bool,
        result: PushResult,
    ) -> None:
        self.connection.config_mode(config_command=JUNOS_CONFIGURE)
        try:
            for number, chunk in enumerate(chunks, start=1):
                try:
                    output = self.connection.send_config_set(
                        chunk,
                        enter_config_mode=False,
                        exit_config_mode=False,
                        read_timeout=self.read_timeout,
                    )
                except Exception as exc:  # a timeout or a dropped session half way
                    try:
                        self._discard()
                    except Exception:
                        pass  # a private candidate dies with its session anyway
                    raise DeviceError(
                        f"{self.host} failed during chunk {number}: {_describe(exc)} -- the "
                        "private candidate configuration was discarded, nothing was committed"
                    ) from None
                errors = device_errors(output, self.platform)
                if errors:
                    self._discard()
                    raise DeviceError(
                        f"{self.host} rejected a line of chunk {number}: {' | '.join(errors)} "
                        f"-- the candidate configuration was discarded, nothing was committed"
                    )

            self._config_command("commit check", what="commit check")
            result.messages.append("commit check succeeded")
            if check:
                self._discard()
                return

            self._config_command(
                f"commit confirmed {self.confirm_minutes}", what="commit confirmed"
            )
        finally:
            self.connection.exit_config_mode()

        after = self.read(desired)
        if _members(after) != _members(desired):
            self._junos_rollback(cause=_mismatch(after, desired))
        self.connection.config_mode(config_command=JUNOS_CONFIGURE)
        try:
            failed = self._send("commit")
        finally:
            self.connection.exit_config_mode()
        if failed:
            raise DeviceError(
                f"{self.host} failed confirming the commit: {' | '.join(failed)} -- the "
                f"commit confirmed {self.confirm_minutes} stays unconfirmed and Junos rolls it "
                f"back by itself within {self.confirm_minutes} minutes"
            )
        result.messages.append(f"commit confirmed {self.confirm_minutes}, verified, confirmed")

    def _send(self, command: str) -> list[str]:
        """Send one configuration-mode command; the device's error lines, if any."""
        output = self.connection.send_command(
            command, expect_string=r"[#>]\s*$", read_timeout=self.read_timeout
        )
        return device_errors(str(output), self.platform)

    def _config_command(self, command: str, *, what: str) -> None:
        """A configuration-mode command; on an error the candidate is discarded. (The final
        `commit` after `commit confirmed` has its own message: see `_junos`.)"""
        errors = self._send(command)
        if errors:
            self._discard()
            raise DeviceError(
                f"{self.host} failed {what}: {' | '.join(errors)} -- the candidate configuration "
                f"was discarded, nothing was committed"
            )

    def _discard(self) -> None:
        self.connection.send_command("rollback 0", expect_string=r"[#>]\s*$")

    def _junos_rollback(self, *, cause: str) -> None:
        self.connection.config_mode(config_command=JUNOS_CONFIGURE)
        try:
            self.connection.send_command("rollback 1", expect_string=r"[#>]\s*$")
            output = str(self.connection.send_command("commit", expect_string=r"[#>]\s*$"))
        finally:
            self.connection.exit_config_mode()
        failed = device_errors(output, self.platform)
        outcome = (
            "rolled back to the previous commit"
            if not failed
            else f"rolling back FAILED ({failed[0]}); the commit confirmed times out by itself"
        )
        raise DeviceError(f"{self.host} read back a different list: {cause} -- {outcome}")


def connection_settings(
    params: dict[str, Any], platform: Platform, *, route: Route, sock: Any = None, check: bool
) -> dict[str, Any]:
    """netmiko ConnectHandler arguments from the module's options and the resolved route.

    The route (see _bastion.py) already holds what `ssh_config_file` says, and `sock` is its
    hop through the bastion, so netmiko is not given the file. Secrets go only here: netmiko
    masks `password` and `secret` in its session log by itself.
    """
    settings: dict[str, Any] = {
        "device_type": platform.device_type,
        "host": route.hostname,
        "port": route.port,
        "username": params["username"],
        "conn_timeout": params["timeout"],
        "auth_timeout": params["timeout"],
        "banner_timeout": params["timeout"],
    }
    if sock is not None:
        settings["sock"] = sock
    for option in ("password", "secret", "key_file", "passphrase"):
        if params.get(option):
            settings[option] = params[option]
    if params.get("key_file"):
        settings["use_keys"] = True
    if platform.device_type == "cisco_asa" and check:
        # netmiko's login sets `terminal width 511` on the ASA, which is a configuration-mode
        # command there: a check run must not enter configuration mode (see verify_echo).
        settings["allow_auto_change"] = False
    if params.get("host_key_checking", True):
        settings["ssh_strict"] = True
        settings["system_host_keys"] = True
        if params.get("known_hosts"):
            settings["alt_host_keys"] = True
            settings["alt_key_file"] = params["known_hosts"]
    if params.get("session_log"):
        settings["session_log"] = params["session_log"]
        settings["session_log_file_mode"] = "append"
    return settings


def verify_echo(connection: Any, settings: dict[str, Any]) -> None:
    """Turn netmiko's echo check back on after an ASA login without `terminal width`.

    netmiko switches it off then, because long commands wrap at the default 80 columns; but
    without it a command's output can be the stale prompts of the one before. A check run
    sends only short `show` commands, whose echo fits.
    """
    if settings.get("allow_auto_change") is False:
        connection.global_cmd_verify = None


def _members(config: DeviceConfig) -> dict[str, set[Any]]:
    return {name: set(members) for name, members in config.containers.items()}


def _mismatch(after: DeviceConfig, desired: DeviceConfig) -> str:
    missing, unexpected = [], []
    for name, wanted in desired.containers.items():
        held = after.containers.get(name, {})
        missing += [str(n) for n in set(wanted) - set(held)]
        unexpected += [str(n) for n in set(held) - set(wanted)]
    return (
        f"missing {', '.join(sorted(missing)[:10]) or 'none'}; "
        f"unexpected {', '.join(sorted(unexpected)[:10]) or 'none'}"
    )
