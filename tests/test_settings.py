"""Settings: FWREPO_* variables and serve flags, checked once, refused in one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from repo_service.errors import SettingsError
from repo_service.settings import BY_FIELD, SETTINGS, load_settings, settings_page
from tests.support.checkout import ROOT
from tests.support.fwrepo import FWREPO


def test_embedded_defaults_keep_everything_under_var() -> None:
    settings = load_settings(environ={})
    assert settings.data_dir == Path("var")
    assert (settings.host, settings.port) == ("127.0.0.1", 8443)
    assert settings.public_url == "https://127.0.0.1:8443"
    assert settings.database_url == "sqlite:///var/fwrepo.sqlite3"
    assert settings.storage == "local" and settings.local_storage_dir == Path("var/storage")


def test_environment_sets_and_flags_override() -> None:
    environ = {"FWREPO_PORT": "9000", "FWREPO_DATA_DIR": "/srv/fw", "FWREPO_PUBLIC_URL": "https://fw.example.net/"}
    settings = load_settings(environ=environ, flags={"port": "9100"})
    assert settings.port == 9100
    assert settings.public_url == "https://fw.example.net"
    assert settings.database_url == "sqlite:////srv/fw/fwrepo.sqlite3"


def test_libpq_style_postgres_urls_use_psycopg() -> None:
    settings = load_settings(environ={"FWREPO_DATABASE_URL": "postgresql://fw@db:5432/fwrepo"})
    assert settings.database_url == "postgresql+psycopg://fw@db:5432/fwrepo"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"FWREPO_PORT": "eighty"}, "FWREPO_PORT"),
        ({"FWREPO_PORT": "70000"}, "FWREPO_PORT"),
        ({"FWREPO_STORAGE": "ftp"}, "FWREPO_STORAGE"),
        ({"FWREPO_PUBLIC_URL": "fw.example.net"}, "FWREPO_PUBLIC_URL"),
        ({"FWREPO_PUBLIC_URL": "https://fw.example.net/" + "p" * 378}, "FWREPO_PUBLIC_URL"),  # 401: no 2.0.1 room
        ({"FWREPO_DATABASE_URL": "mysql://x"}, "FWREPO_DATABASE_URL"),
        ({"FWREPO_STORAGE": "s3"}, "FWREPO_S3_BUCKET"),
        ({"FWREPO_S3_PART_SIZE": "1024"}, "FWREPO_S3_PART_SIZE"),
        ({"FWREPO_MAX_UPLOAD_BYTES": "-1"}, "FWREPO_MAX_UPLOAD_BYTES"),
        ({"FWREPO_S3_ACCESS_KEY_ID": "AKIA"}, "FWREPO_S3_SECRET_ACCESS_KEY"),
        ({"FWREPO_HOST": "0.0.0.0"}, "FWREPO_PUBLIC_URL"),
        ({"FWREPO_TOKEN_SECRET": "short"}, "FWREPO_TOKEN_SECRET"),
        ({"FWREPO_FTPS_PORT": "2121", "FWREPO_FTPS_IMPLICIT_PORT": "2121"}, "FWREPO_FTPS_IMPLICIT_PORT"),
        ({"FWREPO_FTPS_PASSIVE_PORTS": "60099-60000"}, "FWREPO_FTPS_PASSIVE_PORTS"),
        ({"FWREPO_FTPS_PASSIVE_PORTS": "60000"}, "FWREPO_FTPS_PASSIVE_PORTS"),
        ({"FWREPO_FTPS_LOCATION": "sometimes"}, "FWREPO_FTPS_LOCATION"),
        ({"FWREPO_FTPS_TLS_CERT": "/etc/fw.pem"}, "FWREPO_FTPS_TLS_KEY"),
        ({"FWREPO_RETRY_GRACE": "-1"}, "FWREPO_RETRY_GRACE"),
        ({"FWREPO_RETRY_GRACE": "86401"}, "FWREPO_RETRY_GRACE"),
        ({"FWREPO_TLS": "maybe"}, "FWREPO_TLS"),
    ],
)
def test_a_bad_value_names_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environ=environ)
    assert str(raised.value).startswith(named + ":")


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = load_settings(environ={"FWREPO_S3_ACCESS_KEY_ID": "AKIA", "FWREPO_S3_SECRET_ACCESS_KEY": "s3cr3t",
                                      "FWREPO_DATABASE_URL": "postgresql://fw:dbpa55@db:5432/fwrepo"})
    assert "s3cr3t" not in repr(settings) and "dbpa55" not in repr(settings)
    assert "postgresql+psycopg://fw:***@db:5432/fwrepo" in repr(settings)


def test_ftps_defaults_follow_the_environment_and_the_public_url() -> None:
    development = load_settings(environ={"FWREPO_PUBLIC_URL": "https://fw.example.net"})
    assert (development.ftps_port, development.ftps_implicit_port) == (2121, 9990)
    assert development.ftps_public_host == "fw.example.net"
    production = load_settings(environ={"FWREPO_ENV": "production", "FWREPO_KEY_PASSPHRASE": "p" * 20,
                                        "FWREPO_TOKEN_SECRET": "t" * 32, "FWREPO_PUBLIC_URL": "https://fw.example.net"})
    assert (production.ftps_port, production.ftps_implicit_port) == (21, 990)
    assert load_settings(environ={"FWREPO_HOST": "::1"}).public_url == "https://[::1]:8443"


def test_every_setting_has_a_serve_flag() -> None:
    help_text = subprocess.run([FWREPO, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    for setting in SETTINGS:
        assert setting.flag in help_text and setting.env in help_text


def test_serve_help_shows_each_settings_variable_and_real_default() -> None:
    help_text = " ".join(subprocess.run([FWREPO, "serve", "--help"], capture_output=True, text=True,
                                        check=True).stdout.split())
    for setting in SETTINGS:
        assert f"[{setting.env}; default {setting.default_text}]" in help_text


def test_a_default_that_depends_on_other_settings_says_how() -> None:
    settings = load_settings(environ={})
    for setting in SETTINGS:
        if getattr(settings, setting.field) != setting.default:
            assert setting.derived, f"{setting.env} becomes {getattr(settings, setting.field)!r}, not its declared default"
    assert BY_FIELD["public_url"].default_text.startswith(settings.public_url.replace("127.0.0.1:8443", "HOST:PORT"))


def test_the_settings_page_is_what_the_declaration_says() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == settings_page(), (
        "docs/settings.md differs from repo_service/settings.py: run `python -m repo_service.settings > docs/settings.md`")


def test_retry_grace_takes_zero_up_to_a_day() -> None:
    assert load_settings(environ={}).retry_grace == 300
    assert load_settings(environ={"FWREPO_RETRY_GRACE": "0"}).retry_grace == 0
    assert load_settings(environ={}, flags={"retry_grace": "86400"}).retry_grace == 86400


def test_serve_with_a_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run([FWREPO, "serve", "--data-dir", str(tmp_path), "--port", "abc"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["fwrepo: bad setting --port: expected a port number 1-65535, got 'abc'"]


def test_local_commands_work_while_serve_runs_on_the_same_data_directory(fwrepo) -> None:
    # fwrepo (the fixture) is serving; a second writer on the same database must not fail.
    keys = [fwrepo.cli("clients", "create", "--name", f"parallel-{n}", "--role", "csms").stdout.strip() for n in range(3)]
    assert len(set(keys)) == 3


def test_an_unreachable_database_stops_a_command_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run([FWREPO, "db", "upgrade", "--data-dir", str(tmp_path),
                             "--database-url", "postgresql://fwrepo@127.0.0.1:1/fwrepo"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("fwrepo: cannot use the database (FWREPO_DATABASE_URL): ")
    assert len(result.stderr.strip().splitlines()) == 1
