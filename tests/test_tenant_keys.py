"""Each tenant signs its builds under a root of its own: its chargers verify them against that root and no other
tenant's; its keys are made, imported, rotated, revoked, listed and used in it alone."""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from tests.support.admin import active_signing_key
from tests.support.builds import image, published_build, unique_vendor, upload
from tests.support.fwrepo import Fwrepo, start_fwrepo
from tests.support.openssl_pki import make_pki
from tests.support.signatures import cryptography_verifies, openssl_chain_verifies, openssl_verifies


def _tenant() -> str:
    return f"k-{secrets.token_hex(4)}"


def _active_key(fwrepo: Fwrepo, tenant: str) -> str:
    """The active key, as `fwrepo keys list` shows it (read in-process: the tests run that command for real)."""
    return active_signing_key(fwrepo.env, tenant)


def _chains_to(root: Path, certificate_pem: str) -> bool:
    """The `cryptography` package's check that root issued the certificate (what a charger's library does)."""
    issuer = x509.load_pem_x509_certificate(root.read_bytes())
    try:
        x509.load_pem_x509_certificate(certificate_pem.encode()).verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError):
        return False
    return True


def test_a_tenants_build_verifies_against_its_own_root_and_not_another_tenants(fwrepo: Fwrepo, tmp_path: Path) -> None:
    tenant, content = _tenant(), image(80_000)
    with fwrepo.client("release", tenant) as release, fwrepo.client("release") as default_release:
        build = published_build(release, unique_vendor(), content=content)
        default_build = published_build(default_release, unique_vendor())
        own_keys = release.get("/api/v1/signing-keys").json()["items"]
        default_keys = default_release.get("/api/v1/signing-keys").json()["items"]
        manifest = release.get(f"/api/v1/firmware/{build['id']}/manifest").json()
    # The tenant's key signed it; each tenant lists its own keys and not the other's.
    assert build["signing_key_id"] in {key["id"] for key in own_keys}
    assert not {key["id"] for key in own_keys} & {key["id"] for key in default_keys}
    assert default_build["signing_key_id"] in {key["id"] for key in default_keys}
    assert manifest["manifest"]["signing_key_id"] == build["signing_key_id"]

    root = fwrepo.keys_dir / "tenants" / tenant / "root-ca.pem"
    default_root = fwrepo.keys_dir / "root-ca.pem"
    assert f"of {tenant}" in x509.load_pem_x509_certificate(root.read_bytes()).subject.rfc4514_string()
    # As a charger checks it, with openssl: the signature over the image, the certificate against the root.
    assert openssl_verifies(tmp_path, build["signing_certificate"], build["signature"], content)
    assert openssl_chain_verifies(tmp_path, root, build["signing_certificate"])
    assert not openssl_chain_verifies(tmp_path, default_root, build["signing_certificate"])
    assert not openssl_chain_verifies(tmp_path, root, default_build["signing_certificate"])
    # And with the cryptography package.
    assert cryptography_verifies(build["signing_certificate"], build["signature"], content, build["signing_algorithm"])
    assert _chains_to(root, build["signing_certificate"])
    assert not _chains_to(default_root, build["signing_certificate"])
    assert not _chains_to(root, default_build["signing_certificate"])

    # The offline check of the manifest: the tenant's root passes it, another tenant's fails it.
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "image.bin").write_bytes(content)
    verify = ("verify", str(tmp_path / "image.bin"), "--manifest", str(tmp_path / "manifest.json"), "--root")
    assert fwrepo.cli(*verify, str(root)).returncode == 0
    assert fwrepo.cli(*verify, str(default_root), check=False).returncode == 1

    # Its private keys are in its own directory, encrypted and the owner's alone.
    private = sorted((fwrepo.keys_dir / "tenants" / tenant).glob("*.key"))
    assert [path.name for path in private] == sorted(["root-ca.key", f"signing-{build['signing_key_id']}.key"])
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_key_commands_act_in_the_tenant_they_name_and_on_its_trail(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    fwrepo.key("release", tenant)  # creates the tenant, with its development keys
    default_active = _active_key(fwrepo, "default")
    first = _active_key(fwrepo, tenant)

    rotated = fwrepo.cli("keys", "rotate", "--tenant", tenant, "--algorithm", "ecdsa-p384").stdout
    second = _active_key(fwrepo, tenant)
    assert second != first and f"signing key {second} (ecdsa-p384) active" in rotated
    assert _active_key(fwrepo, "default") == default_active  # the default tenant's keys are untouched
    listing = fwrepo.cli("keys", "list", "--tenant", tenant).stdout
    assert first in listing and default_active not in listing

    # Another tenant's key is unknown here, as an id never made.
    refused = fwrepo.cli("keys", "revoke", "--tenant", tenant, default_active, check=False)
    assert refused.returncode != 0 and f"no signing key with id {default_active}" in refused.stderr
    assert _active_key(fwrepo, "default") == default_active

    with fwrepo.client("release", tenant) as release:
        build = published_build(release, unique_vendor())
        assert build["signing_key_id"] == second
        revoked = fwrepo.cli("keys", "revoke", "--tenant", tenant, second).stdout
        assert f"keys resign --tenant {tenant}" in revoked
        assert release.get(f"/api/v1/firmware/{build['id']}").json()["signature"] is None
        # No active key now: a publish is refused, naming the commands that give the tenant one.
        refused = release.post(f"/api/v1/firmware/{upload(release, unique_vendor(), '1.0.0').json()['id']}/publish")
        assert refused.status_code == 409
        assert (f"no active signing key in tenant {tenant}: bring one in with `fwrepo keys import --tenant "
                f"{tenant} --cert CHAIN.pem --key KEY.pem`, or in development make one with `fwrepo keys init "
                f"--tenant {tenant}`") in refused.json()["detail"]
        fwrepo.cli("keys", "rotate", "--tenant", tenant)
        third = _active_key(fwrepo, tenant)
        assert fwrepo.cli("keys", "resign", "--tenant", tenant).stdout.strip() == (
            "re-signed 1 published firmware with the active key")
        assert release.get(f"/api/v1/firmware/{build['id']}").json()["signing_key_id"] == third

    trail = json.loads(fwrepo.cli("audit", "list", "--tenant", tenant, "--json").stdout)["items"]
    actions = [item["action"] for item in trail]
    assert {"key_init", "key_rotate", "key_revoke", "key_resign"} <= set(actions)
    assert all(item["tenant"] == tenant for item in trail)
    assert fwrepo.cli("audit", "verify", "--tenant", tenant).returncode == 0


def test_a_tenant_imports_a_production_key_under_its_own_operators_root(fwrepo: Fwrepo, tmp_path: Path) -> None:
    tenant, content = _tenant(), image(40_000)
    fwrepo.key("release", tenant)
    operator = make_pki(tmp_path / "operator")
    certificate, key = operator.issue("acme-signing", by_root=True)
    chain = operator.chain(certificate, with_intermediate=False)
    imported = fwrepo.cli("keys", "import", "--tenant", tenant, "--cert", str(chain), "--key", str(key)).stdout
    assert "imported and active" in imported
    with fwrepo.client("release", tenant) as release:
        build = published_build(release, unique_vendor(), content=content)
    assert openssl_verifies(tmp_path, build["signing_certificate"], build["signature"], content)
    assert openssl_chain_verifies(tmp_path, operator.root, build["signing_certificate"])
    assert not openssl_chain_verifies(tmp_path, fwrepo.keys_dir / "root-ca.pem", build["signing_certificate"])
    assert _active_key(fwrepo, "default") not in fwrepo.cli("keys", "list", "--tenant", tenant).stdout


def test_keys_for_an_unknown_tenant_are_refused(fwrepo: Fwrepo) -> None:
    result = fwrepo.cli("keys", "list", "--tenant", "no-such-tenant", check=False)
    assert result.returncode != 0 and "no tenant named no-such-tenant" in result.stderr


def test_in_production_a_new_tenant_gets_no_development_keys(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    production = Fwrepo(data_dir=fwrepo.data_dir, environment={
        **fwrepo.environment, "FWREPO_ENV": "production", "FWREPO_KEY_PASSPHRASE": "correct horse battery staple",
        "FWREPO_TOKEN_SECRET": "t" * 32})
    created = production.cli("tenants", "create", tenant).stdout
    assert f"fwrepo keys import --tenant {tenant} --cert CHAIN.pem --key KEY.pem" in created
    assert not (fwrepo.keys_dir / "tenants" / tenant).exists()
    assert " active " not in fwrepo.cli("keys", "list", "--tenant", tenant).stdout


def test_a_node_without_a_tenants_key_file_is_not_ready(tmp_path: Path) -> None:
    server = start_fwrepo(tmp_path)
    try:
        tenant = _tenant()
        server.key("release", tenant)
        key_file = tmp_path / "keys" / "tenants" / tenant / f"signing-{_active_key(server, tenant)}.key"
        with server.client(None) as anyone:
            # A node whose copy of the keys directory is behind (before it ever signed with the key: then it holds it).
            key_file.rename(key_file.with_suffix(".away"))
            try:
                broken = anyone.get("/readyz")
            finally:
                key_file.with_suffix(".away").rename(key_file)
            assert broken.status_code == 503
            assert f"of tenant {tenant} has no private key file" in broken.json()["checks"]["signing_key"]
            assert anyone.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_on_postgresql_row_level_security_holds_signing_keys_to_their_tenant(fwrepo: Fwrepo) -> None:
    """Below the application, as fwrepo's own (not superuser) role: a transaction sees the keys of the tenant
    it names and no other's, and cannot revoke another's."""
    url = fwrepo.env.get("FWREPO_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("row-level security is PostgreSQL's; on SQLite the application's filter alone holds")
    import psycopg

    tenant = _tenant()
    fwrepo.key("release", tenant)
    default_active = _active_key(fwrepo, "default")
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT count(*) FROM signing_key").fetchone() == (0,), "no tenant named"
        connection.execute("SELECT set_config('fwrepo.tenant', %s, true)", (tenant,))
        assert connection.execute("SELECT DISTINCT tenant FROM signing_key").fetchall() == [(tenant,)]
        assert connection.execute("UPDATE signing_key SET status = 'revoked' WHERE id = %s",
                                  (default_active,)).rowcount == 0
    assert _active_key(fwrepo, "default") == default_active
