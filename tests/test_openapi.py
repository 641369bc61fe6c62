"""The OpenAPI description: complete, valid OpenAPI 3.1, committed, served, and held true by the handlers."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from starlette.routing import Route

from repo_service.contract import CampaignRequest, GrantBatchRequest, Health, StatusEvents
from repo_service.errors import InvalidInput
from repo_service.http.app import ROUTES
from repo_service.http.observability import route_template
from repo_service.http.openapi import CONTENT_SECURITY_POLICY, describe, markdown
from repo_service.http.operations import conforming, reply
from tests.support.fwrepo import Fwrepo

DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(scope="module")
def document() -> dict:
    return describe(ROUTES)


def test_the_description_validates_as_openapi_3_1(document: dict) -> None:
    validate(document, cls=OpenAPIV31SpecValidator)
    assert document["openapi"].startswith("3.1")


def test_the_committed_description_is_the_generated_one(document: dict) -> None:
    committed = json.loads((DOCS / "openapi.json").read_text())
    assert committed == document, (
        "docs/openapi.json differs from what the code describes: review the API change, then regenerate with "
        "`python -m repo_service.http.openapi > docs/openapi.json` (and docs/api.md with --markdown)")


def test_the_committed_reference_is_the_generated_one(document: dict) -> None:
    assert (DOCS / "api.md").read_text() == markdown(document), (
        "docs/api.md is stale: regenerate with `python -m repo_service.http.openapi --markdown > docs/api.md`")


def test_every_route_of_the_app_is_described_and_nothing_else(document: dict) -> None:
    routed = {(route_template(route), method.lower()) for route in ROUTES if isinstance(route, Route)
              for method in route.methods or ()}
    described = {(path, method) for path, methods in document["paths"].items() for method in methods}
    assert routed - described == set(), "routes the description lacks"
    assert described - routed == set(), "described operations no route serves"
    assert all(path.startswith(("/api/v1/", "/d/")) or path in {"/healthz", "/readyz", "/metrics", "/api/docs"}
               for path, _ in routed)


def test_operations_name_their_roles_and_keyless_ones_need_no_key(document: dict) -> None:
    issue = document["paths"]["/api/v1/grants"]["post"]
    assert issue["x-fwrepo-roles"] == ["csms", "admin"] and "Roles: csms, admin" in issue["description"]
    assert document["paths"]["/api/v1/firmware"]["post"]["x-fwrepo-roles"] == ["release", "admin"]
    assert document["paths"]["/api/v1/audit"]["get"]["x-fwrepo-roles"] == ["admin", "platform"]
    for path in ("/api/v1/openapi.json", "/d/{token}/{filename}", "/healthz"):
        assert document["paths"][path]["get"]["security"] == []
    assert {"401", "403", "422"} <= document["paths"]["/api/v1/grants"]["post"]["responses"].keys()
    problem = document["paths"]["/api/v1/grants"]["post"]["responses"]["409"]["content"]
    assert problem == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def test_request_bounds_come_from_the_domain(document: dict) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["GrantBatchRequest"]["properties"]["charger_ids"]["maxItems"] == 10_000
    assert schemas["CampaignRequest"]["properties"]["chargers"]["maxItems"] == 100_000
    assert schemas["GrantRequest"]["properties"]["retries"] == {
        "default": 3, "maximum": 100, "minimum": 0, "title": "Retries", "type": "integer"}
    assert schemas["GrantRequest"]["additionalProperties"] is False
    # Replies may grow fields within v1: clients must not refuse them.
    assert "additionalProperties" not in schemas["Grant"]


def test_a_body_that_does_not_fit_its_model_is_refused_naming_the_field_with_its_path() -> None:
    charger = {"charger_id": "CP-1", "current_version": "1.0.0"}
    for model, document, field in [
        (CampaignRequest, {"firmware_id": "f", "chargers": [charger] * 3 + [{**charger, "time_zone": 7}]},
         "chargers[3].time_zone"),
        (CampaignRequest, {"firmware_id": "f", "chargers": [charger], "window": {"start": "25:00", "end": "01:00"}},
         "window.start"),
        (CampaignRequest, {"firmware_id": "f", "chargers": [charger], "failure_threshold": [0.1, 2]},
         "failure_threshold"),
        (GrantBatchRequest, {"firmware_id": "f", "charger_ids": ["CP-1", 2]}, "charger_ids"),
        (StatusEvents, {"events": [{"status": "Idle", "timestamp": "2026-01-01T00:00:00Z", "grant_id": 1,
                                    "colour": "red"}]}, "events[0].colour"),
        (StatusEvents, {"events": "all"}, "events"),
    ]:
        with pytest.raises(InvalidInput) as refusal:
            conforming(model, document)
        assert refusal.value.field == field, (document, refusal.value)
    with pytest.raises(InvalidInput, match="unknown field; expected some of firmware_version, grant_id, info, "):
        conforming(StatusEvents, {"events": [{"status": "Idle", "timestamp": "2026-01-01T00:00:00Z", "colour": 1}]})


def test_a_reply_that_its_model_does_not_describe_is_never_sent() -> None:
    assert reply(Health, {"status": "ok", "version": "1"}).status_code == 200
    with pytest.raises(AssertionError, match="does not describe"):
        reply(Health, {"status": "ok", "version": "1", "uptime": 3})
    with pytest.raises(ValueError):
        reply(Health, {"status": "ok"})


def test_the_description_is_served_without_a_key_and_is_the_committed_one(fwrepo: Fwrepo, document: dict) -> None:
    with fwrepo.client(None) as anonymous:
        served = anonymous.get("/api/v1/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json() == document


def test_the_reference_page_is_self_contained_html_without_script(fwrepo: Fwrepo) -> None:
    with fwrepo.client(None) as anonymous:
        page = anonymous.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "script" not in CONTENT_SECURITY_POLICY
    assert "<script" not in page.text.lower() and "http://" not in page.text and "https://" not in page.text
    assert "issueGrant" in page.text and "/api/v1/grants/batch" in page.text


def test_every_problem_reply_is_the_problem_document_the_description_names(release: httpx.Client) -> None:
    problem = release.get("/api/v1/firmware/0123456789abcdef").json()
    assert set(problem) <= {"type", "title", "status", "detail", "field"}
    assert problem["type"] == "urn:fwrepo:problem:not-found"
