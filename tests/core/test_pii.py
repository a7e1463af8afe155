"""steps/core/pii.py: what it finds, what it leaves alone, and that masked output never shows a value."""

from __future__ import annotations

import pytest

from steps.core.pii import luhn_ok, mask, scan, snippet


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to john.doe+kettle@example.co.uk today", "email", "john.doe+kettle@example.co.uk"),
        ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
        ("or +1 (555) 010-9999", "phone", "+1 (555) 010-9999"),
        ("tel +49-30-1234567.", "phone", "+49-30-1234567"),
        ("US (555) 123-4567 office", "phone", "(555) 123-4567"),
        ("US 555-123-4567 office", "phone", "555-123-4567"),
        ("toll free 1-800-555-0199", "phone", "1-800-555-0199"),
        ("London 020 7946 0958", "phone", "020 7946 0958"),
        ("mobile 07700 900123", "phone", "07700 900123"),
        ("SSN 123-45-6789 on file", "id", "123-45-6789"),
        ("NI number AB 12 34 56 C", "id", "AB 12 34 56 C"),
        ("visa 4111 1111 1111 1111 exp", "card", "4111 1111 1111 1111"),
        ("mc 5500-0055-5555-5559", "card", "5500-0055-5555-5559"),
        ("amex 378282246310005", "card", "378282246310005"),
        ("OPENAI_API_KEY sk-proj-abcdefghijklmnopqrstuvwxyz123456", "secret", "sk-proj-abcdefghijklmnopqrstuvwxyz123456"),
        ("aws AKIAIOSFODNN7EXAMPLE", "secret", "AKIAIOSFODNN7EXAMPLE"),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "secret", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "secret", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
        ("hf hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "secret", "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH"),
        ("slack xoxb-1234567890-abcdefghij", "secret", "xoxb-1234567890-abcdefghij"),
        ("Authorization: Bearer abcdef1234567890abcdef", "secret", "abcdef1234567890abcdef"),
        ("curl ...?api_key=Zx9fj3kLmn0pQrs7tUv&q=1", "secret", "Zx9fj3kLmn0pQrs7tUv"),
        ('token: "a1b2c3d4e5f6g7h8i9j0"', "secret", "a1b2c3d4e5f6g7h8i9j0"),
    ],
)
def test_finds_and_masks(text, kind, value):
    found = scan(text)
    assert [(f.type, text[f.start : f.end]) for f in found] == [(kind, value)]
    masked = mask(text)
    assert value not in masked and f"[{'SECRET' if kind == 'secret' else kind.upper()}]" in masked


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 the kettle cost $1,299.99; in 2023 it was 1,199.00 EUR.",
        "Update to version 1.2.3 or v2.10.4 (build 20240115).",
        "Error E5 means scale; E2 is boil-dry. Windows says 0x80070005, HTTP 404.",
        "Heat 1.7 L at 2200 W on 230 V for 3 minutes; 75 cm cord; 25 g citric acid.",
        "Released 2024-01-15, again on 01-02-2024 and 05 06 2023 at 10:30.",
        "Server at 192.168.1.100 port 8080; ISBN 978-3-16-148410-0; order #12345678.",
        "1,000,000 users; pi is 3.14159265; the card 4111 1111 1111 1112 fails Luhn.",
        "my password: hunter2 and token=short",
        "Years 1999 2000 2001 2002 2003 were good.",
    ],
)
def test_leaves_ordinary_numbers_alone(text):
    assert scan(text) == []
    assert mask(text) == text


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")


def test_overlaps_resolve_to_the_stronger_finding():
    text = "key=4111111111111111abcdef and mail a@b.io"
    assert [f.type for f in scan(text)] == ["secret", "email"]


def test_snippet_never_shows_a_value():
    text = "Contact jane@corp.example or +44 20 7946 0958, card 4111 1111 1111 1111, " * 3
    found = scan(text)
    assert len(found) == 9
    for f in found:
        s = snippet(text, f, found)
        for raw in ("jane@corp.example", "7946 0958", "1111 1111"):
            assert raw not in s
        assert f"[{'CARD' if f.type == 'card' else f.type.upper()}]" in s
