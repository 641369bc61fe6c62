"""Download tokens, attacked directly: every altered, truncated or re-keyed token is refused."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest

from repo_service.domain.tokens import InvalidToken, TokenSigner

ALPHABET = string.ascii_letters + string.digits + "-_."


def test_a_token_round_trips_its_grant_and_expiry() -> None:
    signer = TokenSigner(b"s" * 32)
    expires = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    claims = signer.verify(signer.issue(123_456_789, expires))
    assert (claims.grant_id, claims.expires_at) == (123_456_789, expires)


def test_every_single_character_change_is_refused() -> None:
    signer = TokenSigner(b"s" * 32)
    token = signer.issue(42, datetime.now(UTC) + timedelta(days=1))
    for position in range(len(token)):
        for character in ALPHABET:
            if character != token[position]:
                with pytest.raises(InvalidToken):
                    signer.verify(token[:position] + character + token[position + 1 :])


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_and_extended_tokens_are_refused(cut: int) -> None:
    signer = TokenSigner(b"s" * 32)
    token = signer.issue(42, datetime.now(UTC) + timedelta(days=1))
    for bad in (token[:-cut], token + "A" * cut, "", ".", "..", "a.b.c.d", "é" * 10):
        with pytest.raises(InvalidToken):
            signer.verify(bad)


def test_a_token_from_another_secret_is_refused() -> None:
    token = TokenSigner(b"a" * 32).issue(42, datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(InvalidToken):
        TokenSigner(b"b" * 32).verify(token)


def test_a_token_is_short_enough_for_a_charger_url() -> None:
    token = TokenSigner(b"s" * 32).issue(2**31 - 1, datetime(2099, 12, 31, tzinfo=UTC))
    assert len(token) <= 40 and token.isascii()


def test_stray_characters_do_not_make_another_valid_spelling() -> None:
    signer = TokenSigner(b"s" * 32)
    token = signer.issue(42, datetime.now(UTC) + timedelta(days=1))
    grant, expiry, mac = token.split(".")
    for respelt in (f"{grant}.{expiry}.{mac[:5]}!{mac[5:]}", f"{grant}.{expiry}.{mac.replace('-', '+').replace('_', '/')}x"):
        with pytest.raises(InvalidToken):
            signer.verify(respelt)
