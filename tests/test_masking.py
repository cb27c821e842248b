import base64
import time

import pytest

from tripwire.sinks.masking import mask, mask_attributes

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L\nq7bWx==\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+ops@example.co.uk now", "mail [EMAIL] now"),
        ("call +1 (415) 555-0132 today", "call [PHONE] today"),
        ("call +44 20 7946 0958", "call [PHONE]"),
        ("office 415-555-0132 or (415) 555 0132", "office [PHONE] or [PHONE]"),
        ("visa 4111 1111 1111 1111 ok", "visa [CARD] ok"),
        ("visa 4111-1111-1111-1111", "visa [CARD]"),
        ("mc 5555555555554444.", "mc [CARD]."),
        ("amex 3782 822463 10005", "amex [CARD]"),
        ("iban DE89 3704 0044 0532 0130 00", "iban [IBAN]"),
        ("iban GB82WEST12345698765432", "iban [IBAN]"),
        ("ssn 123-45-6789", "ssn [SSN]"),
        ("AKIAIOSFODNN7EXAMPLE", "[AWS_KEY]"),
        ("Authorization: Bearer abc.DEF-123_xyz", "Authorization: Bearer [TOKEN]"),
        ("curl -H 'authorization: Basic dXNlcjpwYXNz'", "curl -H 'authorization: Basic [TOKEN]'"),
        ("use bearer 9f8e7d6c5b4a39281706", "use bearer [TOKEN]"),
        ("OPENAI_KEY sk-proj-Ab3dEf6hIj9kLm2nOp5q", "OPENAI_KEY [API_KEY]"),
        ("stripe sk_live_51Habcdefghijklmnopqrst", "stripe [API_KEY]"),
        ("t=ghp_0123456789abcdefghijABCDEFGHIJ012345", "t=[GITHUB_TOKEN]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[GITHUB_TOKEN]"),
        (f"token {JWT} end", "token [JWT] end"),
        ("password=hunter2", "password=[SECRET]"),
        ("DB_PASSWORD: 'correct horse'", "DB_PASSWORD: '[SECRET]'"),
        ('{"client_secret": "s3cr3t!", "n": 1}', '{"client_secret": "[SECRET]", "n": 1}'),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "aws_secret_access_key = [SECRET]"),
        ("api-key=>xyz987", "api-key=>[SECRET]"),
        (
            "postgres://app:pa55word@db.internal:5432/app",
            "postgres://app:[SECRET]@db.internal:5432/app",
        ),
        ("from 10.0.12.7 to 192.168.1.254", "from [IP] to [IP]"),
        (f"key:\n{PEM}\ndone", "key:\n[PRIVATE_KEY]\ndone"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "[PRIVATE_KEY]"),
    ],
)
def test_secrets_and_personal_data_are_replaced(text: str, expected: str):
    assert mask(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Order #48213-7 shipped on 2024-03-15 at 14:05:09Z",
        "Invoice INV-2024-000123: 3 items, total $1,299.99 (EUR 1.199,00)",
        "upgraded numpy 1.26.4 -> 2.0.1; python 3.11.7; build 20240315.1",
        "order 1234567890123456 placed",  # 16 digits, not Luhn-valid
        "4111 1111 1111 1112 fails Luhn",
        "tracking 1Z999AA10123456784, ticket JIRA-4521, PR #812",
        "used 1532 input tokens and 210 output tokens; max_tokens: 4096",
        "the bearer of this note; a token budget; see RFC 6750 section 2.1",
        "ratio 0.25, p95 870 ms, 12.5% errors, uptime 99.95",
        "key insight: revenue grew; monkey=banana",
        "GB82 is a code, not an IBAN",
        "matrix 3x3, coords (12, -7), temperature -3.5C, 2024-06-01T12:00:00+02:00",
        "dial extension 4521 or room 12-345",
        "sku 000-00-0000 and 900-12-3456 are not SSNs",
        "a@b",
        "",
    ],
)
def test_benign_text_is_left_alone(text: str):
    assert mask(text) == text


def test_placeholders_are_not_masked_again():
    once = mask("password=hunter2 Authorization: Bearer abc123def456ghi789")
    assert mask(once) == once


def test_attribute_values_under_secret_keys_are_dropped_whole():
    assert mask_attributes({"password": "x", "API-Key": "abc", "user": "bob@example.com"}) == {
        "password": "[SECRET]",
        "API-Key": "[SECRET]",
        "user": "[EMAIL]",
    }
    assert mask_attributes(None) == {}
    assert mask_attributes({"monkey": "banana", "tokens": "1532"}) == {
        "monkey": "banana",
        "tokens": "1532",
    }


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(bytes(range(256)) * 600).decode(),
        "a@b " + "x." * 50_000 + " password: " + "1 2-" * 20_000,
        "9" * 200_000,
    ],
)
def test_large_adversarial_text_stays_linear(text: str):
    start = time.perf_counter()
    mask(text)
    assert time.perf_counter() - start < 2.0
