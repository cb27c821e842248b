"""Mask secrets and personal data in text before it is stored.

Detectors see the raw stream; only what lands in ClickHouse is masked, so a rule here
errs towards masking. Each match becomes a typed placeholder (``[EMAIL]``, ``[CARD]``...)
so a reader still sees what kind of value was there.

Speed: the sink masks every step's content, so each rule has a gate (substring tests,
or a tiny pattern) and its full regex runs only when the gate passes. Text without
digits and without any of a few needles returns after a handful of C-speed scans.
All patterns are ASCII-only on purpose: the validators (Luhn, IBAN mod 97) do digit
arithmetic, and a Unicode digit must not reach them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["mask", "mask_attributes"]

_A = re.ASCII


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    raw = m.group(0)
    digits = re.sub(r"[ -]", "", raw)
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or not _luhn_ok(digits):
        return raw
    seps = {ch for ch in raw if ch in " -"}
    if seps:
        # Only the groupings cards are written in (4-4-4-4[-3], Amex 4-6-5): a Luhn-valid
        # digit run grouped any other way is far more often an id or a phone number.
        groups = tuple(len(g) for g in re.split(r"[ -]", raw))
        four_blocks = all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4
        if len(seps) > 1 or not (four_blocks or groups in ((4, 6, 5), (4, 6, 4))):
            return raw
    return "[CARD]"


def _iban(m: re.Match[str]) -> str:
    raw = m.group(0)
    compact = raw.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return raw
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return "[IBAN]" if int(number) % 97 == 1 else raw


def _phone_intl(m: re.Match[str]) -> str:
    raw = m.group(0)
    n = sum(ch.isdigit() for ch in raw)
    return "[PHONE]" if 8 <= n <= 15 else raw


_PLAIN_KEYS = ("password", "passwd", "pwd", "passphrase", "secret", "credential")
_COMPOUND_KEYS = {
    "key": ("api", "access", "private"),
    "token": ("access", "auth", "refresh", "session", "id", "api", "bearer", "client"),
}
_SECRET_KEYS = "|".join(
    [*_PLAIN_KEYS, *(f"(?:{'|'.join(pre)})[_-]?{word}" for word, pre in _COMPOUND_KEYS.items())]
)
# Gate words: every key the pattern knows contains one of them.
_KEY_NEEDLES = ("pass", "pwd", "secret", "credential", "key", "token")
_ASSIGNMENT = re.compile(
    r"(?=[pscairb])(?:" + _SECRET_KEYS + r")[\w.-]{0,40}[\"']?\s*(?:=>|[:=])\s*"
    # A placeholder left by an earlier rule is matched whole, so it is recognised
    # and kept instead of being cut at its "]".
    r"(?P<val>\[[a-z_]+\]|\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&)}\]]+)",
    _A,
)
_ASSIGNMENT_CI = re.compile(_ASSIGNMENT.pattern, _A | re.IGNORECASE)
_SECRET_KEY_NAME = re.compile(_SECRET_KEYS, _A)


def _mask_assignments(text: str, low: str) -> str:
    if ":" not in text and "=" not in text:
        return text  # "tokens" in prose is common; without a separator, no regex
    if len(low) == len(text):
        matches = list(_ASSIGNMENT.finditer(low))
    else:  # lower() changed lengths (rare non-ASCII); spans would not line up
        matches = list(_ASSIGNMENT_CI.finditer(text))
    if not matches:
        return text
    out: list[str] = []
    pos = 0
    for m in matches:
        start, end = m.span("val")
        value = text[start:end]
        quote = value[0] if value[0] in "\"'" else ""
        inner = value[1:-1] if quote else value
        if not inner or (inner.startswith("[") and inner.endswith("]")):
            continue  # empty, or already a placeholder from an earlier rule
        out.append(text[pos:start])
        out.append(f"{quote}[SECRET]{quote}")
        pos = end
    out.append(text[pos:])
    return "".join(out)


# IBANs, cards, SSNs, phone numbers and IPv4 addresses in one scan: one regex pass is
# several times cheaper than a gate per kind, and digits are in most agent content.
# The lookahead lets the engine skip to plausible first characters fast.
_NUMBER_KINDS = {
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    "card": r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])",
    "ssn": r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])",
    "phone_intl": r"(?<![\w+])\+\d(?:[ .()-]{0,2}\d){6,14}(?!\d)",
    # North American forms only: (415) 555-1234, 415-555-1234, 415.555.1234. Bare
    # digit runs are left alone; they are ids far more often than phone numbers.
    "phone_nanp": r"(?<![\w.-])(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-]|\.\d)",
    "ipv4": r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)",
}


def _number_pattern(kinds: list[str]) -> re.Pattern[str]:
    alternatives = "|".join(f"(?P<{k}>{_NUMBER_KINDS[k]})" for k in kinds)
    return re.compile(r"(?=[0-9A-Z(+])(?:" + alternatives + ")", _A)


_NUMBERS = _number_pattern(list(_NUMBER_KINDS))
# What a long digit run that is not a card may still contain.
_NUMBERS_IN_NON_CARD = _number_pattern(["ssn", "phone_intl", "phone_nanp", "ipv4"])
_NUMBER_PLACEHOLDER = {"ssn": "[SSN]", "phone_nanp": "[PHONE]", "ipv4": "[IP]"}


def _number(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "iban":
        return _iban(m)
    if kind == "card":
        masked = _card(m)
        if masked == m.group(0):
            return _NUMBERS_IN_NON_CARD.sub(_number, masked)
        return masked
    if kind == "phone_intl":
        return _phone_intl(m)
    return _NUMBER_PLACEHOLDER[kind or ""]


def _mask_numbers(text: str, _low: str) -> str:
    return _NUMBERS.sub(_number, text)


def _sub(pattern: str, repl: str | Callable[[re.Match[str]], str], flags: int = 0):
    compiled = re.compile(pattern, _A | flags)
    return lambda text, _low: compiled.sub(repl, text)


@dataclass(frozen=True)
class _Rule:
    name: str
    apply: Callable[[str, str], str]  # (text, text.lower()) -> masked text
    # The gate: the rule runs only if one of the needles is in the text (in its
    # lower-cased copy if lower), or, without needles, if probe matches, or always.
    needles: tuple[str, ...] = ()
    lower: bool = False
    probe: re.Pattern[str] | None = None
    needs_digit: bool = False  # every match holds an ASCII digit


# Order matters: whole blocks and tokens first, so a key inside a PEM block or a JWT
# is not half-masked by a later, narrower rule; bare numbers last.
_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        _sub(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            "[PRIVATE_KEY]",
            re.S,
        ),
        needles=("PRIVATE KEY",),
    ),
    _Rule(
        "jwt",
        _sub(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", "[JWT]"),
        needles=("eyJ",),
    ),
    _Rule(
        "url_credentials",
        _sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]{0,20}://[^\s:/@]{1,128}:)[^\s@/]{1,256}@", r"\1[SECRET]@"),
        needles=("://",),
    ),
    _Rule(
        "authorization",
        _sub(
            r"(\bauthorization[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?:bearer|basic|token|digest|negotiate)\s+)?)"
            # Not the scheme word itself, nor a placeholder from an earlier pass.
            r"(?!\[|(?:bearer|basic|token|digest|negotiate)\b)[^\s\"',;]{6,}",
            r"\1[TOKEN]",
            re.IGNORECASE,
        ),
        needles=("authorization",),
        lower=True,
    ),
    _Rule(
        # Needs a digit so prose about "bearer authentication" stays readable.
        "bearer",
        _sub(r"(\bbearer\s+)(?=[\w\-.~+/]*\d)[\w\-.~+/]{12,}=*", r"\1[TOKEN]", re.IGNORECASE),
        needles=("bearer",),
        lower=True,
        needs_digit=True,
    ),
    _Rule(
        "aws_key",
        _sub(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b", "[AWS_KEY]"),
        probe=re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA|NVA|IPA)"),
    ),
    _Rule(
        "github_token",
        _sub(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
            "[GITHUB_TOKEN]",
        ),
        needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _Rule(
        # OpenAI / Anthropic "sk-...", Stripe "sk_live_..." / "rk_live_...".
        "api_key",
        _sub(r"\b(?:sk|rk)[-_](?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}", "[API_KEY]"),
        needles=("sk-", "sk_", "rk_"),
        needs_digit=True,
    ),
    _Rule("google_key", _sub(r"\bAIza[0-9A-Za-z_-]{35}", "[API_KEY]"), needles=("AIza",)),
    _Rule("slack_token", _sub(r"\bxox[abposr]-[A-Za-z0-9-]{10,}", "[TOKEN]"), needles=("xox",)),
    _Rule("assignment", _mask_assignments, needles=_KEY_NEEDLES, lower=True),
    _Rule(
        "email",
        _sub(
            r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
            r"\.[A-Za-z]{2,24}\b",
            "[EMAIL]",
        ),
        needles=("@",),
    ),
    _Rule("numbers", _mask_numbers, needs_digit=True),
)

_DIGIT = re.compile(r"[0-9]")
_AWS_PREFIX = re.compile(r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA|NVA|IPA)")
# Every rule that can match text without a digit needs one of these ("_": GitHub).
_NO_DIGIT_NEEDLES = ("@", ":", "=", "PRIVATE KEY", "eyJ", "AIza", "xox", "_")
# Nothing any rule masks is shorter ("a@b.io", "1.2.3.4" are 6 and 7).
_MIN_LEN = 6


def mask(text: str) -> str:
    """``text`` with secrets and personal data replaced by typed placeholders."""
    if len(text) < _MIN_LEN:
        return text
    has_digit = _DIGIT.search(text) is not None
    if not has_digit:
        for needle in _NO_DIGIT_NEEDLES:
            if needle in text:
                break
        else:
            if _AWS_PREFIX.search(text) is None:
                return text
    low = text.lower()
    # Plain loops, not any(<genexpr>): this runs ~15 times per stored step, and the
    # generator overhead was a third of the sink's masking time.
    for rule in _RULES:
        if rule.needs_digit and not has_digit:
            continue
        if rule.needles:
            hay = low if rule.lower else text
            for needle in rule.needles:
                if needle in hay:
                    break
            else:
                continue
        elif rule.probe is not None and rule.probe.search(text) is None:
            continue
        masked = rule.apply(text, low)
        if masked is not text:
            text, low = masked, masked.lower()
    return text


def mask_attributes(attributes: Mapping[str, str] | None) -> dict[str, str]:
    """Masked copy of an attributes map; values under secret-looking keys go entirely.

    A value alone ("hunter2") carries no hint that it is a password; its key does.
    """
    if not attributes:
        return {}
    out: dict[str, str] = {}
    for key, value in attributes.items():
        if value and _SECRET_KEY_NAME.search(key.lower()) is not None:
            out[key] = "[SECRET]"
        else:
            out[key] = mask(value)
    return out
