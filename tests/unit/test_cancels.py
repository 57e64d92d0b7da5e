"""The per-process cancel claims (core/cancels.py): one kill path per run sends the cancel."""

from __future__ import annotations

from airflow_provider_runwatch.core.cancels import CLAIM_SECONDS, CancelClaims


def test_the_first_claim_wins_until_it_expires() -> None:
    now = [0.0]
    claims = CancelClaims(clock=lambda: now[0])
    assert claims.claim("gumloop", "s1")
    assert not claims.claim("gumloop", "s1"), "the twin instance's kill sends nothing"
    assert claims.claim("gumloop", "s2"), "another run"
    assert claims.claim("puffle", "s1"), "the same id at another vendor"
    now[0] = CLAIM_SECONDS + 1
    assert claims.claim("gumloop", "s1"), "expired: a later kill path may cancel again"


def test_a_released_claim_can_be_taken_again() -> None:
    claims = CancelClaims()
    assert claims.claim("gumloop", "s1")
    claims.release("gumloop", "s1")
    assert claims.claim("gumloop", "s1")
    claims.release("gumloop", "nothing-claimed")  # harmless
