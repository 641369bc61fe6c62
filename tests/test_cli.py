"""The `fwrepo` command as a person meets it: each command's own options, typos named, human values, an honest start."""

from __future__ import annotations

import argparse
import io
import json
import secrets
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from repo_service.cli import build_parser
from repo_service.cli.arguments import settings_from
from repo_service.cli.terminal import StatusLine
from repo_service.wording import duration, size
from tests.support.builds import image, upload
from tests.support.fwrepo import FWREPO, Fwrepo


def fwrepo_run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FWREPO, *arguments], capture_output=True, text=True, timeout=60, env=env)


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    commands = getattr(parser, "commands", {})
    if not commands:
        return [(path, parser)]
    return [leaf for name, command in commands.items() for leaf in leaf_commands(command, (*path, name))]


# -- each command's options ---------------------------------------------------------------


def test_clients_create_help_shows_its_own_options_and_the_database_settings_only() -> None:
    help_text = fwrepo_run("clients", "create", "--help").stdout
    for option in ("--name", "--role", "--data-dir", "--database-url"):
        assert option in help_text
    for server_flag in ("--port", "--s3-bucket", "--ftps-port", "--tls"):
        assert server_flag not in help_text
    assert len(help_text.splitlines()) < 25, help_text


@pytest.mark.parametrize("path", [path for path, _ in leaf_commands(build_parser())], ids=" ".join)
def test_every_option_of_every_command_says_what_it_is_for(path: tuple[str, ...]) -> None:
    parser = dict(leaf_commands(build_parser()))[path]
    for action in parser._actions:
        assert action.help, f"fwrepo {' '.join(path)} {'/'.join(action.option_strings) or action.dest} has no help"


def test_booleans_are_flags_with_a_negation() -> None:
    help_text = fwrepo_run("serve", "--help").stdout
    assert "--tls, --no-tls" in help_text and "--ftps, --no-ftps" in help_text
    settings = settings_from(build_parser().parse_args(["serve", "--no-tls", "--no-ftps", "--port", "9000"]))
    assert (settings.tls, settings.ftps, settings.public_url) == (False, False, "http://127.0.0.1:9000")


def test_serve_help_shows_the_default_the_code_really_uses() -> None:
    help_text = " ".join(fwrepo_run("serve", "--help").stdout.split())
    assert "[FWREPO_PUBLIC_URL; default https://HOST:PORT (http:// with --no-tls)" in help_text
    assert "[FWREPO_RETRY_GRACE; default 300 (5 minutes)]" in help_text


def test_an_unknown_option_is_named_with_the_closest_known_one(tmp_path: Path) -> None:
    result = fwrepo_run("upload", str(tmp_path / "fw.bin"), "--vendr", "ACME", "--model", "AC22", "--version", "1.0")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "fwrepo upload: error: unknown option --vendr; did you mean --vendor?"
    assert "required" not in result.stderr


def test_a_server_flag_given_to_a_local_command_is_unknown_there(tmp_path: Path) -> None:
    result = fwrepo_run("clients", "create", "--name", "x", "--role", "admin", "--port", "9000")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "fwrepo clients create: error: unknown option --port"


def test_local_commands_take_their_settings_from_the_environment_too(tmp_path: Path) -> None:
    env = {**Fwrepo(data_dir=tmp_path, environment={}).env}
    created = fwrepo_run("clients", "create", "--name", "from-env", "--role", "csms", env=env)
    assert created.returncode == 0, created.stderr
    del env["FWREPO_DATA_DIR"]
    listed = fwrepo_run("clients", "list", "--data-dir", str(tmp_path), env=env)
    assert "from-env" in listed.stdout


# -- terminal output ----------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_status_line_off_a_terminal_is_one_line_per_change() -> None:
    stream = io.StringIO()
    line = StatusLine(stream)
    for text in ("1/3 finished", "1/3 finished", "2/3 finished", "3/3 finished"):
        line.show(text)
    line.end()
    assert stream.getvalue() == "1/3 finished\n2/3 finished\n3/3 finished\n"


def test_a_status_line_on_a_terminal_is_redrawn_in_place() -> None:
    stream = Terminal()
    line = StatusLine(stream)
    line.show("10/300 finished")
    line.show("9/30 done")
    line.end()
    assert stream.getvalue() == "\r10/300 finished\r9/30 done      \n"


@pytest.mark.parametrize(("seconds", "shown"), [(None, "-"), (0.42, "0.4 s"), (12.6, "13 s"), (185.2, "3 min 5 s"),
                                                (7_800, "2 h 10 min")])
def test_durations_read_as_a_person_says_them(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(("count", "shown"), [(999, "999 bytes"), (1536, "1.5 KiB"), (5 * 2**20, "5.0 MiB")])
def test_sizes_use_binary_units(count: int, shown: str) -> None:
    assert size(count) == shown


def test_campaigns_show_prints_human_values(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    vendor = f"V{secrets.token_hex(4)}"
    with fwrepo.client("release") as release:
        record = upload(release, vendor, "1.4.0", image(20_000)).json()
        release.post(f"/api/v1/firmware/{record['id']}/publish").raise_for_status()
    reply = csms.post("/api/v1/campaigns", json={"firmware_id": record["id"], "chargers": [
        {"charger_id": "CP-1", "current_version": "1.3.0", "model": "AC22"},
        {"charger_id": "CP-2", "current_version": "1.3.0", "model": "DC50"},
    ]})
    assert reply.status_code == 201, reply.text
    shown = fwrepo.cli("campaigns", "show", reply.json()["id"], "--url", fwrepo.url, "--key", fwrepo.key("csms")).stdout
    assert "None" not in shown and "{" not in shown and "'" not in shown, shown
    assert "skipped: 1 model" in shown
    assert "download median -, p95 -" in shown
    assert "created 20" in shown and " UTC" in shown


# -- start-up -----------------------------------------------------------------------------


def test_start_up_names_the_sqlite_file_keeps_migrations_quiet_and_says_listening_once_bound(tmp_path: Path) -> None:
    server = Fwrepo(data_dir=tmp_path, environment={})
    process = subprocess.Popen([FWREPO, "serve"], env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        printed = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"fwrepo serve ended: {process.stderr.read() if process.stderr else ''}"
            printed.append(line)
            if line.startswith("fwrepo listening on"):
                # Said once the port is bound: a connection right now is accepted, with no retry.
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
                break
        else:
            raise AssertionError(f"no listening line in {printed}")
        assert f"database {tmp_path / 'fwrepo.sqlite3'} (SQLite)" in printed[0]
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert "alembic" not in errors and "Running upgrade" not in errors, errors
    assert sum("database schema upgraded" in line for line in errors.splitlines()) == 1


def test_a_taken_https_port_stops_serve_with_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Fwrepo(data_dir=tmp_path, environment={"FWREPO_PORT": str(port)})
        result = subprocess.run([FWREPO, "serve"], env=server.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fwrepo: bad setting FWREPO_PORT: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another fwrepo? set another port)"]
    assert "listening" not in result.stdout


def test_upload_json_prints_the_record_scripts_take_the_id_from(fwrepo: Fwrepo, tmp_path: Path) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(image())
    result = fwrepo.cli("upload", str(path), "--url", fwrepo.url, "--key", fwrepo.key("release"), "--json",
                        "--vendor", f"V{secrets.token_hex(4)}", "--model", "AC22", "--version", "2.0.0")
    record = json.loads(result.stdout)
    with fwrepo.client() as release:
        assert release.get(f"/api/v1/firmware/{record['id']}").json()["sha256"] == record["sha256"]
    assert result.stderr.strip().startswith(f"stored new build {record['id']}")


def test_a_refusal_is_one_line_with_the_problem_s_status_title_and_detail(fwrepo: Fwrepo) -> None:
    result = fwrepo.cli("show", "0" * 16, "--url", fwrepo.url, "--key", fwrepo.key("release"), check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["fwrepo: 404 Not found: no firmware with id 0000000000000000"]
