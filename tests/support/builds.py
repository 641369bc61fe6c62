"""Firmware builds as a release engineer makes them: image bytes, an upload, a published build."""

from __future__ import annotations

import secrets

import httpx


def unique_vendor() -> str:
    """A vendor name no other test uses, so tests sharing a server do not see each other's firmware."""
    return f"V{secrets.token_hex(5)}"


def image(size: int = 100_000, seed: str | None = None) -> bytes:
    """Deterministic-looking but unique bytes for a firmware image."""
    block = secrets.token_bytes(64) if seed is None else seed.encode().ljust(64, b"\0")
    return (block * (size // len(block) + 1))[:size]


def upload(client: httpx.Client, vendor: str, version: str, content: bytes | None = None, **fields: object) -> httpx.Response:
    data: dict[str, object] = {"vendor": vendor, "models": fields.pop("models", "AC22"), "version": version, **fields}
    return client.post(
        "/api/v1/firmware", data=data, files={"file": ("fw.bin", content if content is not None else image())}
    )


def published_build(
    release: httpx.Client, vendor: str, version: str = "1.0.0", content: bytes | None = None, **fields: object
) -> dict:
    """Upload a build (fresh bytes unless content is given) and publish it; its published record."""
    uploaded = upload(release, vendor, version, content, **fields)
    assert uploaded.status_code in (200, 201), uploaded.text
    published = release.post(f"/api/v1/firmware/{uploaded.json()['id']}/publish")
    assert published.status_code == 200, published.text
    return published.json()
