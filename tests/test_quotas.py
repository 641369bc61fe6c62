"""Quotas per tenant (issue 16, point 6): stored bytes, builds and grants per minute, tried as a tenant pushing
past them would: just under, at and over each, in parallel, in batches, and with other tenants looking on."""

from __future__ import annotations

import json
import math
import re
import secrets
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from repo_service.client import Fwrepo as Client
from repo_service.client import QuotaExceeded, RateLimited
from tests.support.admin import set_quotas
from tests.support.builds import image, published_build, unique_vendor, upload
from tests.support.databases import scratch_postgres
from tests.support.fwrepo import Fwrepo, two_nodes

MiB = 1024 * 1024


def _tenant() -> str:
    return f"q-{secrets.token_hex(4)}"


def _quota(fwrepo: Fwrepo, tenant: str, *flags: str) -> str:
    """`fwrepo tenants quota` for real, where its output is tested; elsewhere set_quotas does the same in-process."""
    return fwrepo.cli("tenants", "quota", tenant, *flags).stdout


def _stored_files(fwrepo: Fwrepo) -> set[Path]:
    storage = fwrepo.data_dir / "storage"
    return {path for path in storage.rglob("*") if path.is_file()} if storage.exists() else set()


def _refused(reply: httpx.Response, status: int, quota: str, used: int, limit: int) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert (body["quota"], body["used"], body["limit"]) == (quota, used, limit), body
    assert body["type"] == "urn:fwrepo:problem:" + ("rate-limited" if status == 429 else "quota-exceeded")
    return body


def _metric(fwrepo: Fwrepo, name: str, **labels: str) -> float | None:
    text = httpx.get(fwrepo.url + "/metrics", verify=fwrepo.tls()).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return None


# -- setting them ---------------------------------------------------------------------------


def test_quotas_are_set_lifted_listed_with_their_use_and_audited_on_the_tenants_trail(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    fwrepo.key("release", tenant)
    shown = _quota(fwrepo, tenant, "--stored-bytes", "1000000", "--builds", "5", "--grants-per-minute", "7")
    assert re.search(rf"{tenant}\s+0/1000000\s+0/5\s+0/7", shown), shown
    # Only the quotas named change; none lifts one.
    assert re.search(rf"{tenant}\s+0/-\s+0/5\s+0/7", _quota(fwrepo, tenant, "--stored-bytes", "none"))
    with fwrepo.client("release", tenant) as release:
        assert upload(release, unique_vendor(), "1.0.0", image(1234)).status_code == 201
    listed = fwrepo.cli("tenants", "list").stdout
    assert re.search(rf"{tenant}\s+\S+ \S+ UTC\s+-\s+1234/-\s+1/5\s+0/7", listed), listed
    trail = json.loads(fwrepo.cli("audit", "list", "--tenant", tenant, "--action", "tenant_quota", "--json").stdout)
    assert [event["detail"] for event in trail["items"]] == [
        {"stored_bytes": None},
        {"stored_bytes": 1000000, "builds": 5, "grants_per_minute": 7}]


def test_bad_quota_values_are_refused_naming_the_flag(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    fwrepo.key("release", tenant)
    for flags, message in (
            (("--builds", "-1"), "--builds: must be a whole number of at least 0, or none to lift it; got '-1'"),
            (("--stored-bytes", "10GB"), "--stored-bytes: must be a whole number of at least 0, or none"),
            (("--grants-per-minute", "2147483648"), "--grants-per-minute: must be at most 2147483647"),
            (("--stored-bytes", "١٢"), "--stored-bytes: must be a whole number")):
        refused = fwrepo.cli("tenants", "quota", tenant, *flags, check=False)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    unknown = fwrepo.cli("tenants", "quota", "no-such-tenant", "--builds", "1", check=False)
    assert unknown.returncode != 0 and "no tenant named no-such-tenant" in unknown.stderr
    assert re.search(rf"{tenant}\s+0/-\s+0/-\s+0/-", _quota(fwrepo, tenant)), "a refused value changed nothing"


# -- builds and bytes -----------------------------------------------------------------------


def test_builds_quota_lets_the_last_build_in_refuses_the_next_and_stores_nothing_of_it(fwrepo: Fwrepo) -> None:
    tenant, vendor = _tenant(), unique_vendor()
    fwrepo.key("release", tenant)
    set_quotas(fwrepo.env, tenant, builds="2")
    with fwrepo.client("release", tenant) as release:
        first = image(5000)
        assert upload(release, vendor, "1.0.0", first).status_code == 201
        assert upload(release, vendor, "1.0.1", image(5000)).status_code == 201  # at the quota
        before = _stored_files(fwrepo)
        body = _refused(upload(release, vendor, "1.0.2", image(5000)), 507, "builds", 2, 2)
        assert f"builds quota of tenant {tenant}" in body["detail"] and "nothing was stored" in body["detail"]
        assert _stored_files(fwrepo) == before
        assert release.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 2
        # A retry of a build it holds is still the no-op it always was, at the quota or not.
        again = upload(release, vendor, "1.0.0", first)
        assert again.status_code == 200, again.text
    assert "removed 0 interrupted uploads" in fwrepo.cli("storage", "sweep", "--older-than", "0").stdout
    assert _metric(fwrepo, "fwrepo_quota_refusals_total", tenant=tenant, quota="builds") == 1
    assert _metric(fwrepo, "fwrepo_tenant_builds", tenant=tenant) == 2
    assert _metric(fwrepo, "fwrepo_tenant_quota_limit", tenant=tenant, quota="builds") == 2


def test_stored_bytes_quota_takes_a_build_that_fills_it_exactly_and_refuses_one_byte_more(fwrepo: Fwrepo) -> None:
    tenant, vendor = _tenant(), unique_vendor()
    fwrepo.key("release", tenant)
    set_quotas(fwrepo.env, tenant, stored_bytes="300000")
    with fwrepo.client("release", tenant) as release:
        assert upload(release, vendor, "1.0.0", image(100_000)).status_code == 201
        assert upload(release, vendor, "1.0.1", image(199_999)).status_code == 201  # one byte under
        before = _stored_files(fwrepo)
        body = _refused(upload(release, vendor, "1.0.2", image(2)), 507, "stored_bytes", 299_999, 300_000)
        assert "nothing was stored" in body["detail"]
        assert _stored_files(fwrepo) == before
        assert upload(release, vendor, "1.0.2", image(1)).status_code == 201  # exactly at the quota
        before = _stored_files(fwrepo)
        _refused(upload(release, vendor, "1.0.3", image(1)), 507, "stored_bytes", 300_000, 300_000)
        # Fields after the file: the quota is only known to apply once the whole form is in, and still holds.
        boundary = "q"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n".encode()
                + image(1) + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"vendor\"\r\n\r\n{vendor}"
                f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\nAC22"
                f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n9.9.9"
                f"\r\n--{boundary}--\r\n".encode())
        late = release.post("/api/v1/firmware", content=form,
                            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        _refused(late, 507, "stored_bytes", 300_000, 300_000)
        assert _stored_files(fwrepo) == before
        assert release.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 3
    assert _metric(fwrepo, "fwrepo_tenant_stored_bytes", tenant=tenant) == 300_000
    assert _metric(fwrepo, "fwrepo_quota_refusals_total", tenant=tenant, quota="stored_bytes") == 3


def test_an_upload_past_the_room_left_is_cut_off_as_its_bytes_arrive(fwrepo: Fwrepo) -> None:
    tenant, vendor = _tenant(), unique_vendor()
    fwrepo.key("release", tenant)
    set_quotas(fwrepo.env, tenant, stored_bytes=str(3 * MiB))
    before = _stored_files(fwrepo)
    with fwrepo.client("release", tenant) as release:
        # Its length allows it (less than 2 MiB of form around 4 MiB), its bytes do not.
        body = _refused(upload(release, vendor, "1.0.0", image(4 * MiB)), 507, "stored_bytes", 0, 3 * MiB)
    passed = re.search(r"the upload passed (\d+) bytes", body["detail"])
    assert passed and 3 * MiB < int(passed.group(1)) < 4 * MiB + 1, body["detail"]  # cut off before its end
    assert "more than the 3145728 left under its limit of 3145728" in body["detail"], body["detail"]
    assert _stored_files(fwrepo) == before
    assert "removed 0 interrupted uploads" in fwrepo.cli("storage", "sweep", "--older-than", "0").stdout


def test_an_upload_whose_length_cannot_fit_is_refused_before_its_body_is_sent(fwrepo: Fwrepo) -> None:
    tenant, vendor = _tenant(), unique_vendor()
    key = fwrepo.key("release", tenant)
    set_quotas(fwrepo.env, tenant, stored_bytes=str(MiB))
    declared = 40 * MiB
    fields = (f"--b\r\nContent-Disposition: form-data; name=\"vendor\"\r\n\r\n{vendor}"
              "\r\n--b\r\nContent-Disposition: form-data; name=\"models\"\r\n\r\nAC22"
              "\r\n--b\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0.0"
              "\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n\r\n").encode()
    context = ssl.create_default_context(cafile=fwrepo.ca)
    with socket.create_connection(("127.0.0.1", fwrepo.port), timeout=60) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as connection:
        connection.sendall(
            f"POST /api/v1/firmware HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {declared}\r\n\r\n".encode()
            # The file's first block lets the upload begin; the server reads at most one more before it answers.
            + fields + image(2 * MiB + 1))
        reply = b""
        while b"}" not in reply:
            reply += connection.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 507"), head
    problem = json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])
    assert (problem["quota"], problem["used"], problem["limit"]) == ("stored_bytes", 0, MiB)
    assert f"this build of at least {declared - 2 * MiB} bytes" in problem["detail"], problem["detail"]


def test_parallel_uploads_into_the_last_free_build_let_exactly_one_in(fwrepo: Fwrepo) -> None:
    tenant, vendor = _tenant(), unique_vendor()
    fwrepo.key("release", tenant)
    set_quotas(fwrepo.env, tenant, builds="1")
    before = _stored_files(fwrepo)

    def one(number: int) -> int:
        with fwrepo.client("release", tenant) as release:
            return upload(release, vendor, f"1.0.{number}", image(2 * MiB)).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(one, range(6)))
    assert statuses == [201, 507, 507, 507, 507, 507]
    assert len(_stored_files(fwrepo) - before) == 1
    with fwrepo.client("release", tenant) as release:
        assert release.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 1


def test_a_tenant_at_its_quotas_does_not_hold_back_another(fwrepo: Fwrepo) -> None:
    full, other, vendor = _tenant(), _tenant(), unique_vendor()
    with fwrepo.client("release", full) as release:
        held = published_build(release, vendor, "1.0.0")
    # Limits under what it already uses take nothing away; they refuse what would add to them.
    set_quotas(fwrepo.env, full, builds="0", grants_per_minute="0")
    with fwrepo.client("release", full) as release, fwrepo.client("csms", full) as csms:
        _refused(upload(release, vendor, "1.0.1"), 507, "builds", 1, 0)
        assert release.get(f"/api/v1/firmware/{held['id']}").status_code == 200
        # No minute ever has room for a grant: no Retry-After to wait for.
        never = csms.post("/api/v1/grants", json={"firmware_id": held["id"], "charger_id": "CP-1"})
        assert never.status_code == 422 and "Retry-After" not in never.headers
        assert never.json()["detail"] == f"charger_id: tenant {full} may issue no grants: its grants per minute quota is 0"
    with fwrepo.client("release", other) as release, fwrepo.client("csms", other) as csms:
        build = published_build(release, vendor, "1.0.1")  # the version refused to the other tenant
        assert csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": "CP-1"}).status_code == 201
    assert _metric(fwrepo, "fwrepo_quota_refusals_total", tenant=other, quota="builds") is None


# -- grants per minute ----------------------------------------------------------------------


def test_grants_past_the_minutes_quota_are_refused_429_with_the_seconds_until_they_fit(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    with fwrepo.client("release", tenant) as release:
        build = published_build(release, unique_vendor())
    set_quotas(fwrepo.env, tenant, grants_per_minute="4")
    with fwrepo.client("csms", tenant) as csms:
        # Each grant's time is known to lie between the moments before and after its request.
        before = time.time()
        assert csms.post("/api/v1/grants/batch", json={"firmware_id": build["id"],
                                                       "charger_ids": ["CP-1", "CP-2"]}).status_code == 201
        first = (before, time.time())
        time.sleep(3)
        before = time.time()
        for charger in ("CP-3", "CP-4"):  # the 4th is at the quota
            assert csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": charger}
                             ).status_code == 201
        second = (before, time.time())

        def leaves_in(granted: tuple[float, float], asked: float, answered: float) -> range:
            """The Retry-After a refusal between asked and answered may give for a grant made within granted."""
            return range(math.floor(granted[0] + 60 - answered), math.ceil(granted[1] + 60 - asked) + 2)

        asked = time.time()
        one = csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": "CP-5"})
        body = _refused(one, 429, "grants_per_minute", 4, 4)
        # One more fits when the oldest grant (of the first batch) leaves the minute.
        assert int(one.headers["Retry-After"]) in leaves_in(first, asked, time.time()), one.headers["Retry-After"]
        assert f"try again in {one.headers['Retry-After']} s" in body["detail"]
        # Three more fit only once the third oldest (one of the later ones) has left: a batch counts each grant.
        asked = time.time()
        three = csms.post("/api/v1/grants/batch", json={"firmware_id": build["id"],
                                                        "charger_ids": ["CP-6", "CP-7", "CP-8"]})
        _refused(three, 429, "grants_per_minute", 4, 4)
        assert int(three.headers["Retry-After"]) in leaves_in(second, asked, time.time())
        # Five can never fit in a minute of four: waiting would not help, so no Retry-After.
        five = csms.post("/api/v1/grants/batch", json={"firmware_id": build["id"],
                                                       "charger_ids": [f"X-{number}" for number in range(5)]})
        assert five.status_code == 422 and "Retry-After" not in five.headers
        assert five.json()["field"] == "charger_ids" and "split the batch" in five.json()["detail"]
    assert _metric(fwrepo, "fwrepo_quota_refusals_total", tenant=tenant, quota="grants_per_minute") == 3
    assert _metric(fwrepo, "fwrepo_tenant_grants_last_minute", tenant=tenant) == 4
    # Lifted, it lets them through at once.
    set_quotas(fwrepo.env, tenant, grants_per_minute="none")
    with fwrepo.client("csms", tenant) as csms:
        assert csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": "CP-5"}).status_code == 201


def test_parallel_grants_never_pass_the_minutes_quota(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    with fwrepo.client("release", tenant) as release:
        build = published_build(release, unique_vendor())
    set_quotas(fwrepo.env, tenant, grants_per_minute="5")
    fwrepo.key("csms", tenant)  # made once, before the threads that use it

    def one(number: int) -> int:
        with fwrepo.client("csms", tenant) as csms:
            return csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": f"CP-{number}"}
                             ).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(one, range(12)))
    assert statuses == [201] * 5 + [429] * 7


def test_a_campaign_wave_larger_than_the_quota_waits_for_room_instead_of_failing(fwrepo: Fwrepo) -> None:
    tenant = _tenant()
    with fwrepo.client("release", tenant) as release:
        build = published_build(release, unique_vendor(), "2.0.0")
    set_quotas(fwrepo.env, tenant, grants_per_minute="3")
    with fwrepo.client("csms", tenant) as csms:
        created = csms.post("/api/v1/campaigns", json={"firmware_id": build["id"], "chargers": [
            {"charger_id": f"CP-{number}", "current_version": "1.0.0"} for number in range(5)]})
        assert created.status_code == 201, created.text
        campaign = created.json()
        assert campaign["status"] == "running"
        assert campaign["pending"] == 2, campaign
        assert _metric(fwrepo, "fwrepo_tenant_grants_last_minute", tenant=tenant) == 3
        # The campaign took the minute's room: a grant of the CSMS's own waits like anyone's.
        _refused(csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": "CP-9"}),
                 429, "grants_per_minute", 3, 3)
        set_quotas(fwrepo.env, tenant, grants_per_minute="none")
        deadline = time.monotonic() + 20  # the campaign tick runs every 5 s
        while time.monotonic() < deadline:
            report = csms.get(f"/api/v1/campaigns/{campaign['id']}").json()
            if report["pending"] == 0:
                break
            time.sleep(0.5)
        assert report["pending"] == 0 and report["status"] == "running", report
        assert _metric(fwrepo, "fwrepo_tenant_grants_last_minute", tenant=tenant) == 5


def test_the_python_client_raises_what_each_quota_answers(fwrepo: Fwrepo, tmp_path: Path) -> None:
    tenant = _tenant()
    with fwrepo.client("release", tenant) as release:
        build = published_build(release, unique_vendor())
    set_quotas(fwrepo.env, tenant, builds="1", grants_per_minute="1")
    path = tmp_path / "fw.bin"
    path.write_bytes(image(1000))
    with Client(fwrepo.url, fwrepo.key("release", tenant), ca_file=fwrepo.ca) as release:
        with pytest.raises(QuotaExceeded, match=f"507 Quota exceeded: builds quota of tenant {tenant}"):
            release.upload(path, vendor=unique_vendor(), models=["AC22"], version="1.0.0")
    with Client(fwrepo.url, fwrepo.key("csms", tenant), ca_file=fwrepo.ca) as csms:
        csms.grant(build["id"], "CP-1")
        with pytest.raises(RateLimited) as limited:
            csms.grant(build["id"], "CP-2")
    assert limited.value.retry_after is not None and 1 <= limited.value.retry_after <= 60


def test_two_nodes_on_one_database_never_both_take_the_last_room(postgres_server_url: str, tmp_path: Path) -> None:
    shared = {"FWREPO_KEYS_DIR": str(tmp_path / "keys"), "FWREPO_STORAGE_DIR": str(tmp_path / "storage"),
              "FWREPO_KEY_PASSPHRASE": secrets.token_urlsafe(24), "FWREPO_TOKEN_SECRET": secrets.token_urlsafe(32),
              "FWREPO_SHUTDOWN_GRACE": "1"}
    for database_url in scratch_postgres(postgres_server_url):
        nodes = two_nodes(database_url, tmp_path, shared)
        a, b = next(nodes)
        try:
            tenant, vendor = _tenant(), unique_vendor()
            with a.client("release", tenant) as release:
                build = published_build(release, vendor, "0.1.0")
            set_quotas(a.env, tenant, builds="2", grants_per_minute="3")
            a.key("csms", tenant)

            def upload_on(number: int) -> int:
                with (a, b)[number % 2].client("release", tenant) as release:
                    return upload(release, vendor, f"1.0.{number}", image(MiB)).status_code

            def grant_on(number: int) -> int:
                with (a, b)[number % 2].client("csms", tenant) as csms:
                    return csms.post("/api/v1/grants", json={"firmware_id": build["id"],
                                                             "charger_id": f"CP-{number}"}).status_code

            with ThreadPoolExecutor(8) as pool:
                assert sorted(pool.map(upload_on, range(6))) == [201] + [507] * 5
                assert sorted(pool.map(grant_on, range(8))) == [201] * 3 + [429] * 5
            assert _metric(b, "fwrepo_tenant_builds", tenant=tenant) == 2  # read from the database on either node
        finally:
            nodes.close()
