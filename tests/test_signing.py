"""Signing: firmware that openssl (and so chargers) verifies, keys that rotate and can be revoked."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from repo_service.domain import pki
from tests.support.builds import image, published_build, upload
from tests.support.examples import ocpp_example
from tests.support.fwrepo import FWREPO, Fwrepo, start_fwrepo
from tests.support.openssl_pki import LEAF_EXTENSIONS, make_pki, new_key, public_key
from tests.support.signatures import (
    VERIFY_BLOCKS,
    cryptography_verifies,
    documented_verification,
    openssl_chain_verifies,
    openssl_verifies,
)


@pytest.fixture
def own_fwrepo(fresh_database_url: str, tmp_path: Path) -> Iterator[Fwrepo]:
    """A server of its own, for tests that rotate, import or revoke the active key."""
    data = tmp_path / "own"
    data.mkdir()
    server = start_fwrepo(data, FWREPO_DATABASE_URL=fresh_database_url)
    yield server
    server.stop()


@pytest.fixture
def offline_repo(fresh_database_url: str, tmp_path: Path) -> Fwrepo:
    """A data directory and database with development keys, for CLI-only tests (no server needed)."""
    data = tmp_path / "offline"
    data.mkdir()
    repo = Fwrepo(data_dir=data, environment={"FWREPO_DATABASE_URL": fresh_database_url})
    repo.cli("keys", "init")
    return repo


def flip(text_or_bytes, at: int):
    data = bytearray(text_or_bytes)
    data[at] ^= 0x01
    return bytes(data)


# -- development PKI ------------------------------------------------------------------------


def test_first_start_makes_a_development_pki_with_encrypted_private_keys(fwrepo: Fwrepo) -> None:
    keys = fwrepo.data_dir / "keys"
    private_files = sorted(keys.glob("*.key")) + [keys / "dev-passphrase"]
    assert len(private_files) >= 3
    for path in private_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in keys.glob("*.key"):
        data = path.read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)
        serialization.load_pem_private_key(data, password=(keys / "dev-passphrase").read_bytes().strip())
    assert "for development only" in (fwrepo.data_dir / "serve.log").read_text()


def test_the_signing_certificate_may_sign_code_and_chains_to_the_root(fwrepo: Fwrepo, tmp_path: Path) -> None:
    active = next(line.split()[0] for line in fwrepo.cli("keys", "list").stdout.splitlines() if " active " in line)
    certificate = x509.load_pem_x509_certificate((fwrepo.data_dir / "keys" / f"signing-{active}.pem").read_bytes())
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    assert openssl_chain_verifies(tmp_path, fwrepo.data_dir / "keys" / "root-ca.pem", pem)


def test_production_without_a_passphrase_stops_start_up_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([FWREPO, "serve", "--data-dir", str(tmp_path), "--env", "production"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "fwrepo: bad setting FWREPO_KEY_PASSPHRASE: required when FWREPO_ENV=production (it encrypts the signing keys)"
    ]


def test_production_without_a_signing_key_stops_start_up(tmp_path: Path) -> None:
    result = subprocess.run([FWREPO, "serve", "--data-dir", str(tmp_path), "--env", "production",
                             "--key-passphrase", "correct horse battery staple", "--token-secret", "t" * 32],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "fwrepo keys import" in result.stderr


# -- signing on publish, checked with openssl -------------------------------------------------


def test_publish_signs_what_openssl_verifies_and_nothing_else(fwrepo: Fwrepo, release: httpx.Client, vendor: str, tmp_path: Path) -> None:
    content = image(700_000)
    record = published_build(release, vendor, "1.0.0", content)
    assert record["signing_key_id"]
    assert len(record["signature"]) <= 800 and "\n" not in record["signature"]
    assert len(record["signing_certificate"]) <= 5500
    root = fwrepo.data_dir / "keys" / "root-ca.pem"
    assert openssl_verifies(tmp_path, record["signing_certificate"], record["signature"], content)
    assert openssl_chain_verifies(tmp_path, root, record["signing_certificate"])
    # a flipped byte in the image, in the signature, or another key: refused
    assert not openssl_verifies(tmp_path, record["signing_certificate"], record["signature"], flip(content, 1234))
    raw = base64.b64decode(record["signature"])
    assert not openssl_verifies(tmp_path, record["signing_certificate"], base64.b64encode(flip(raw, len(raw) - 3)).decode(), content)
    other = make_pki(tmp_path / "other")
    other_certificate, _ = other.issue("other-signer")
    assert not openssl_verifies(tmp_path, other_certificate.read_text(), record["signature"], content)
    assert not openssl_chain_verifies(tmp_path, other.root, record["signing_certificate"])


def test_an_uploaded_but_unpublished_build_carries_no_signature(release: httpx.Client, vendor: str) -> None:
    record = upload(release, vendor, "1.0.0").json()
    assert record["signature"] is None and record["signing_certificate"] is None and record["signing_key_id"] is None


def test_rsa_signing_keys_sign_what_openssl_verifies(own_fwrepo: Fwrepo, tmp_path: Path) -> None:
    assert "rsa-3072" in own_fwrepo.cli("keys", "rotate", "--algorithm", "rsa-3072").stdout
    content = image(50_000)
    with own_fwrepo.client("release") as client:
        record = published_build(client, "ACME", "1.0.0", content)
    assert len(record["signature"]) == 512  # 384 bytes of PKCS#1 v1.5, base64
    assert openssl_verifies(tmp_path, record["signing_certificate"], record["signature"], content)


# -- signature schemes, checked by docs/signing.md's openssl commands ----------------------------


charger_example = ocpp_example("charger")


def canonical_json(document: dict) -> bytes:
    """The manifest's signed form, as docs/signing.md defines it: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("algorithm", pki.ALGORITHMS)
def test_each_scheme_signs_builds_and_manifests_that_the_documented_openssl_commands_verify(
    own_fwrepo: Fwrepo, tmp_path: Path, algorithm: str
) -> None:
    assert f"({algorithm}) active" in own_fwrepo.cli("keys", "rotate", "--algorithm", algorithm).stdout
    content = image(60_000)
    with own_fwrepo.client("release") as client:
        record = published_build(client, "ACME", "1.0.0", content)
    assert record["signing_algorithm"] == algorithm
    checked = documented_verification(own_fwrepo, tmp_path, record["id"], content, VERIFY_BLOCKS[algorithm])
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines() == [algorithm, "signing.pem: OK", "Verified OK"]
    assert cryptography_verifies(record["signing_certificate"], record["signature"], content, algorithm)
    root = x509.load_pem_x509_certificate((own_fwrepo.keys_dir / "root-ca.pem").read_bytes())
    assert charger_example.verify_signature(content, record["signing_certificate"], record["signature"], root) is None
    with own_fwrepo.client("csms") as csms:
        keys = csms.get("/api/v1/signing-keys").json()["items"]
        manifest = csms.get(f"/api/v1/firmware/{record['id']}/manifest").json()
    assert next(key for key in keys if key["id"] == record["signing_key_id"])["algorithm"] == algorithm
    assert manifest["manifest"]["signing_algorithm"] == algorithm
    assert cryptography_verifies(manifest["signing_certificate"], manifest["signature"],
                                 canonical_json(manifest["manifest"]), algorithm)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    verified = own_fwrepo.cli("verify", str(tmp_path / "image.bin"), "--manifest", str(tmp_path / "manifest.json"),
                              "--root", str(own_fwrepo.keys_dir / "root-ca.pem"))
    assert f"{algorithm})" in verified.stdout and "image signature OK" in verified.stdout


def test_a_tampered_image_fails_the_documented_pss_check_and_a_pss_signature_fails_the_pkcs1_one(
    own_fwrepo: Fwrepo, tmp_path: Path
) -> None:
    own_fwrepo.cli("keys", "rotate", "--algorithm", "rsa-pss-3072")
    content = image(60_000)
    with own_fwrepo.client("release") as client:
        record = published_build(client, "ACME", "1.0.0", content)
    tampered = documented_verification(own_fwrepo, tmp_path, record["id"], flip(content, 4321), "verify rsa-pss")
    assert tampered.returncode == 1 and "Verification failure" in tampered.stdout
    assert not cryptography_verifies(record["signing_certificate"], record["signature"], flip(content, 4321),
                                     "rsa-pss-3072")
    # A charger that verifies the other RSA scheme refuses the build: the scheme is part of what it checks.
    as_pkcs1 = documented_verification(own_fwrepo, tmp_path, record["id"], content, "verify rsa-pkcs1v15")
    assert as_pkcs1.returncode == 1 and "Verification failure" in as_pkcs1.stdout
    assert documented_verification(own_fwrepo, tmp_path, record["id"], content, "verify rsa-pss").returncode == 0
    # A manifest that claims another scheme: its signature covers the claim, or the key cannot sign so.
    with own_fwrepo.client("csms") as csms:
        document = csms.get(f"/api/v1/firmware/{record['id']}/manifest").json()
    for claim, refusal in (("rsa-3072", "manifest's signature does not verify"),
                           ("ecdsa-p256", "signing_algorithm: ecdsa-p256 does not fit the key")):
        document["manifest"]["signing_algorithm"] = claim
        (tmp_path / "manifest.json").write_text(json.dumps(document))
        verified = own_fwrepo.cli("verify", str(tmp_path / "image.bin"), "--manifest", str(tmp_path / "manifest.json"),
                                  check=False)
        assert verified.returncode == 1 and refusal in verified.stderr


def test_an_imported_rsa_key_signs_in_the_scheme_its_import_names(own_fwrepo: Fwrepo, tmp_path: Path) -> None:
    operator = make_pki(tmp_path / "pki")
    # Issued by the root itself, so that the documented `openssl verify` needs no intermediate.
    certificate, key = operator.issue("fw-signing-pss", algorithm="rsa3072", by_root=True)
    result = own_fwrepo.cli("keys", "import", "--cert", str(operator.chain(certificate, with_intermediate=False)),
                            "--key", str(key), "--scheme", "pss")
    assert "(rsa-pss-3072) imported and active" in result.stdout
    content = image(30_000)
    with own_fwrepo.client("release") as client:
        record = published_build(client, "ACME", "1.0.0", content)
    assert record["signing_algorithm"] == "rsa-pss-3072"
    checked = documented_verification(own_fwrepo, tmp_path, record["id"], content, "verify rsa-pss", operator.root)
    assert checked.returncode == 0, checked.stderr
    assert cryptography_verifies(record["signing_certificate"], record["signature"], content, "rsa-pss-3072")
    assert "rsa-pss-3072" in own_fwrepo.cli("keys", "list").stdout


@pytest.mark.parametrize(
    ("key_algorithm", "scheme", "message"),
    [
        ("ec", "pss", "--scheme: pss is a padding of RSA signatures; this key is ecdsa-p256, which signs with ECDSA"),
        ("ec384", "pkcs1v15", "--scheme: pkcs1v15 is a padding of RSA signatures; this key is ecdsa-p384"),
        ("rsa3072", "oaep", "--scheme: must be one of pkcs1v15, pss, got 'oaep'"),
    ],
)
def test_an_import_naming_a_scheme_the_key_cannot_sign_with_is_refused_naming_the_flag(
    offline_repo: Fwrepo, tmp_path: Path, key_algorithm: str, scheme: str, message: str
) -> None:
    operator = make_pki(tmp_path / "pki")
    certificate, key = operator.issue("signing", algorithm=key_algorithm)
    before = offline_repo.cli("keys", "list").stdout
    result = offline_repo.cli("keys", "import", "--cert", str(operator.chain(certificate)), "--key", str(key),
                              "--scheme", scheme, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert offline_repo.cli("keys", "list").stdout == before


def test_an_unknown_algorithm_is_refused_by_rotate_and_by_the_setting(offline_repo: Fwrepo) -> None:
    rotated = offline_repo.cli("keys", "rotate", "--algorithm", "rsa-pss-2048", check=False)
    assert rotated.returncode == 2 and "--algorithm: invalid choice: 'rsa-pss-2048'" in rotated.stderr
    result = subprocess.run([FWREPO, "keys", "rotate"], env={**offline_repo.env, "FWREPO_SIGNING_ALGORITHM": "ecdsa-p521"},
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        ("fwrepo: bad setting FWREPO_SIGNING_ALGORITHM: expected one of ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096, "
         "rsa-pss-3072, rsa-pss-4096, got 'ecdsa-p521'")
    ]


# -- production keys -----------------------------------------------------------------------------


def test_an_imported_chain_becomes_the_active_key(own_fwrepo: Fwrepo, tmp_path: Path) -> None:
    operator = make_pki(tmp_path / "pki")
    certificate, key = operator.issue("fw-signing-2026")
    result = own_fwrepo.cli("keys", "import", "--cert", str(operator.chain(certificate)), "--key", str(key))
    assert "imported and active" in result.stdout
    content = image(10_000)
    with own_fwrepo.client("release") as client:
        record = published_build(client, "ACME", "2.0.0", content)
    assert record["signing_certificate"] == certificate.read_text()
    assert openssl_verifies(tmp_path, record["signing_certificate"], record["signature"], content)
    # the operator's own key is kept encrypted with the repository's passphrase
    stored = (own_fwrepo.data_dir / "keys" / f"signing-{record['signing_key_id']}.key").read_bytes()
    assert stored.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_a_pkcs12_file_can_be_imported(offline_repo: Fwrepo, tmp_path: Path) -> None:
    operator = make_pki(tmp_path / "pki")
    certificate, key = operator.issue("fw-signing-p12")
    bundle = tmp_path / "signing.p12"
    subprocess.run(["openssl", "pkcs12", "-export", "-in", str(certificate), "-inkey", str(key),
                    "-certfile", str(operator.chain(certificate, with_intermediate=True, with_root=True)),
                    "-passout", "pass:p12-secret", "-out", str(bundle)], check=True, capture_output=True)
    environment = {"P12_PASSWORD": "p12-secret"}
    result = subprocess.run([FWREPO, "keys", "import", "--pkcs12", str(bundle), "--passphrase-env", "P12_PASSWORD"],
                            env={**offline_repo.env, **environment}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "imported and active" in result.stdout


def expired_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A signing certificate whose validity ended yesterday, under a root made for it."""
    now = datetime.now(UTC)
    root_key, key = pki.generate_key("ecdsa-p256"), pki.generate_key("ecdsa-p256")
    root = pki.make_root(root_key, "Expired Test Root", now - timedelta(days=400), 3650)
    leaf = pki.make_signing_certificate(key, root_key, root, "expired", now - timedelta(days=400), 399)
    chain = tmp_path / "expired-chain.pem"
    chain.write_text(pki.pem(leaf) + pki.pem(root))
    key_path = tmp_path / "expired.key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return chain, key_path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other key", "does not match"),
        ("leaf only", "chain is incomplete"),
        ("no code signing", "extended key usage does not include code signing"),
        ("a CA certificate", "is a CA certificate"),
        ("rsa 2048", "RSA 2048 bits is not supported"),
        ("expired", "is not valid now"),
    ],
)
def test_unusable_production_keys_are_refused_with_the_reason(offline_repo: Fwrepo, tmp_path: Path, case: str, message: str) -> None:
    operator = make_pki(tmp_path / "pki")
    if case == "expired":
        chain, key = expired_certificate(tmp_path)
    elif case == "other key":
        certificate, _ = operator.issue("signing")
        chain, key = operator.chain(certificate), new_key(tmp_path, "stray")
    elif case == "leaf only":
        certificate, key = operator.issue("signing")
        chain = operator.chain(certificate, with_intermediate=False, with_root=False)
    elif case == "no code signing":
        certificate, key = operator.issue("signing", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        chain = operator.chain(certificate)
    elif case == "a CA certificate":
        certificate, key = operator.issue("signing", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyCertSign\n")
        chain = operator.chain(certificate)
    else:
        certificate, key = operator.issue("signing", LEAF_EXTENSIONS, algorithm="rsa2048")
        chain = operator.chain(certificate)
    before = offline_repo.cli("keys", "list").stdout
    result = offline_repo.cli("keys", "import", "--cert", str(chain), "--key", str(key), check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert offline_repo.cli("keys", "list").stdout == before


# -- uploader signatures ----------------------------------------------------------------------


def engineer_signature(tmp_path: Path, key: Path, content: bytes, *options: str) -> str:
    """Signed the way a release engineer's script would: openssl dgst -sha256 -sign, with options (-sigopt)."""
    (tmp_path / "upload.bin").write_bytes(content)
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key), *options, "-out", "upload.sig", "upload.bin"],
                   cwd=tmp_path, check=True)
    return base64.b64encode((tmp_path / "upload.sig").read_bytes()).decode()


def test_a_registered_engineers_signature_is_verified_and_recorded(fwrepo: Fwrepo, release: httpx.Client, vendor: str, tmp_path: Path) -> None:
    key = new_key(tmp_path, "alice")
    fwrepo.cli("signers", "add", f"alice-{vendor}", "--key", str(public_key(tmp_path, key)))
    content = image()
    reply = upload(release, vendor, "1.0.0", content, signature=engineer_signature(tmp_path, key, content))
    assert reply.status_code == 201, reply.text
    assert reply.json()["signed_by"] == f"alice-{vendor}"


@pytest.mark.parametrize(
    ("key_algorithm", "options", "algorithm"),
    [
        ("ec384", (), "ecdsa-p384"),
        ("rsa3072", (), "rsa-3072"),
        # openssl's own default salt for PSS signing (as long as the key allows), and the digest's length
        ("rsa3072", ("-sigopt", "rsa_padding_mode:pss"), "rsa-3072"),
        ("rsa3072", ("-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"), "rsa-3072"),
    ],
)
def test_engineers_may_sign_uploads_with_p384_or_rsa_in_either_padding(
    fwrepo: Fwrepo, release: httpx.Client, vendor: str, tmp_path: Path, key_algorithm: str, options: tuple[str, ...],
    algorithm: str,
) -> None:
    key = new_key(tmp_path, "carol", key_algorithm)
    added = fwrepo.cli("signers", "add", f"carol-{vendor}", "--key", str(public_key(tmp_path, key)))
    assert f"  {algorithm}  " in added.stdout
    content = image()
    reply = upload(release, vendor, "1.0.0", content, signature=engineer_signature(tmp_path, key, content, *options))
    assert reply.status_code == 201, reply.text
    assert reply.json()["signed_by"] == f"carol-{vendor}"
    tampered = upload(release, vendor, "1.0.1", flip(content, 99),
                      signature=engineer_signature(tmp_path, key, content, *options))
    assert tampered.status_code == 422 and tampered.json()["field"] == "signature"


def test_a_signature_no_registered_key_made_is_refused_and_nothing_is_stored(release: httpx.Client, vendor: str, tmp_path: Path) -> None:
    stranger = new_key(tmp_path, "mallory")
    content = image()
    for signature in (engineer_signature(tmp_path, stranger, content), "not base64!", base64.b64encode(b"junk").decode()):
        reply = upload(release, vendor, "1.0.0", content, signature=signature)
        assert reply.status_code == 422 and reply.json()["field"] == "signature"
    assert release.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 0


def test_signers_are_managed_by_admins_over_the_api(fwrepo: Fwrepo, tmp_path: Path, vendor: str) -> None:
    pem = public_key(tmp_path, new_key(tmp_path, "bob")).read_text()
    with fwrepo.client("admin") as admin, fwrepo.client("release") as release:
        assert release.post("/api/v1/signers", json={"name": "bob", "public_key": pem}).status_code == 403
        created = admin.post("/api/v1/signers", json={"name": f"bob-{vendor}", "public_key": pem})
        assert created.status_code == 201 and created.json()["algorithm"] == "ecdsa-p256"
        assert admin.post("/api/v1/signers", json={"name": f"bob-{vendor}", "public_key": pem}).status_code == 409
        assert admin.post("/api/v1/signers", json={"name": "x", "public_key": "-----BEGIN junk"}).json()["field"] == "public_key"
        assert any(item["name"] == f"bob-{vendor}" for item in admin.get("/api/v1/signers").json()["items"])
        assert admin.delete(f"/api/v1/signers/{created.json()['id']}").status_code == 204
        assert not any(item["name"] == f"bob-{vendor}" for item in admin.get("/api/v1/signers").json()["items"])


def test_required_uploader_signature_refuses_unsigned_uploads_and_the_cli_signs_locally(
    fresh_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "server").mkdir()
    server = start_fwrepo(tmp_path / "server", FWREPO_DATABASE_URL=fresh_database_url, FWREPO_REQUIRE_UPLOADER_SIGNATURE="true")
    try:
        key = new_key(tmp_path, "carol", algorithm="rsa3072")
        server.cli("signers", "add", "carol", "--key", str(public_key(tmp_path, key)))
        with server.client("release") as client:
            unsigned = upload(client, "ACME", "1.0.0")
            assert unsigned.status_code == 422 and unsigned.json()["field"] == "signature"
            assert client.get("/api/v1/firmware").json()["total"] == 0
        path = tmp_path / "fw.bin"
        path.write_bytes(image(300_000))
        result = server.cli("upload", str(path), "--url", server.url, "--key", server.key("release"), "--vendor", "ACME",
                            "--model", "AC22", "--version", "1.0.0", "--sign-key", str(key))
        assert "ACME 1.0.0" in result.stdout
        with server.client("release") as client:
            assert client.get("/api/v1/firmware").json()["items"][0]["signed_by"] == "carol"
    finally:
        server.stop()


# -- rotation, re-signing, revocation ------------------------------------------------------------


def test_rotation_resigning_and_revocation_end_to_end(own_fwrepo: Fwrepo, tmp_path: Path) -> None:
    def offered(client: httpx.Client) -> str | None:
        update = client.get("/api/v1/updates", params={"vendor": "ACME", "model": "AC22", "current_version": "0.1"}).json()["update"]
        return update and update["id"]

    with own_fwrepo.client("release") as client:
        old_content = image(20_000)
        old = published_build(client, "ACME", "1.0.0", old_content)
        first_key = old["signing_key_id"]

        second_key = own_fwrepo.cli("keys", "rotate").stdout.split()[2]
        new = published_build(client, "ACME", "0.9.0")
        assert new["signing_key_id"] == second_key != first_key
        # the older build keeps its old signature, still valid under the same root
        kept = client.get(f"/api/v1/firmware/{old['id']}").json()
        assert kept["signing_key_id"] == first_key and kept["signature"] == old["signature"]
        assert openssl_verifies(tmp_path, kept["signing_certificate"], kept["signature"], old_content)

        listing = own_fwrepo.cli("keys", "list").stdout
        assert f"{first_key}  ecdsa-p256  retired" in listing and f"{second_key}  ecdsa-p256  active" in listing

        # revoking the first key: the build signed only by it is no longer offered
        assert offered(client) == old["id"]
        own_fwrepo.cli("keys", "revoke", first_key)
        revoked = client.get(f"/api/v1/firmware/{old['id']}").json()
        assert revoked["signature"] is None
        assert offered(client) == new["id"]

        # re-signing with the active key brings it back, with a signature openssl accepts
        assert "re-signed 1 published" in own_fwrepo.cli("keys", "resign").stdout
        resigned = client.get(f"/api/v1/firmware/{old['id']}").json()
        assert resigned["signing_key_id"] == second_key
        assert openssl_verifies(tmp_path, resigned["signing_certificate"], resigned["signature"], old_content)
        assert offered(client) == old["id"]

        own_fwrepo.cli("keys", "revoke", second_key)
        refused = client.post(f"/api/v1/firmware/{upload(client, 'ACME', '3.0.0').json()['id']}/publish")
        assert refused.status_code == 409 and "no active signing key" in refused.json()["detail"]


def test_signing_keys_are_listed_over_the_api_with_their_certificates(fwrepo: Fwrepo, csms: httpx.Client) -> None:
    items = csms.get("/api/v1/signing-keys").json()["items"]
    active = [item for item in items if item["status"] == "active"]
    assert len(active) == 1
    assert active[0]["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert active[0]["chain_pem"] == (fwrepo.data_dir / "keys" / "root-ca.pem").read_text()


# -- signed release manifests ----------------------------------------------------------------------


def test_the_manifest_verifies_offline_with_the_cli_and_catches_tampering(fwrepo: Fwrepo, release: httpx.Client, vendor: str, tmp_path: Path) -> None:
    content = image(120_000)
    record = published_build(release, vendor, "1.0.0", content)
    document = release.get(f"/api/v1/firmware/{record['id']}/manifest").json()
    assert document["manifest"]["sha256"] == record["sha256"]
    assert document["manifest"]["signing_key_id"] == record["signing_key_id"]
    manifest_file, image_file = tmp_path / "manifest.json", tmp_path / "image.bin"
    manifest_file.write_text(json.dumps(document))
    image_file.write_bytes(content)
    root = str(fwrepo.data_dir / "keys" / "root-ca.pem")

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FWREPO, "verify", str(image_file), "--manifest", str(manifest_file), *extra],
                              capture_output=True, text=True)

    good = verify("--root", root)
    assert good.returncode == 0, good.stderr
    assert "manifest signature OK" in good.stdout and "image signature OK" in good.stdout

    image_file.write_bytes(flip(content, 99))
    assert verify("--root", root).returncode == 1
    image_file.write_bytes(content)

    forged = json.loads(json.dumps(document))
    forged["manifest"]["version"] = "9.9.9"
    manifest_file.write_text(json.dumps(forged))
    bad = verify("--root", root)
    assert bad.returncode == 1 and "manifest's signature does not verify" in bad.stderr

    manifest_file.write_text(json.dumps(document))
    stranger = make_pki(tmp_path / "stranger")
    assert "not issued by the given root" in verify("--root", str(stranger.root)).stderr


def test_only_published_firmware_has_a_manifest(release: httpx.Client, vendor: str) -> None:
    record = upload(release, vendor, "1.0.0").json()
    assert release.get(f"/api/v1/firmware/{record['id']}/manifest").status_code == 409


def test_pkcs12_without_its_password_is_refused(offline_repo: Fwrepo, tmp_path: Path) -> None:
    key = pki.generate_key("ecdsa-p256")
    now = datetime.now(UTC)
    root = pki.make_root(key, "self", now, 10)
    bundle = tmp_path / "b.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(b"x", key, root, None, serialization.BestAvailableEncryption(b"pw")))
    result = offline_repo.cli("keys", "import", "--pkcs12", str(bundle), check=False)
    assert result.returncode == 1 and "password is wrong" in result.stderr
