"""Mask secrets and personal data in text before it is stored.

Detectors see the raw stream; only what lands in ClickHouse is masked, so a rule here
errs towards masking. Each match becomes a typed placeholder (``[EMAIL]``, ``[CARD]``...)
so a reader still sees what kind of value was there.

Speed: the sink masks every step's content, so each rule has a gate (its keywords, found
for all rules in one pass, or "holds a digit") and its full pattern runs only when the gate
passes; the digit rules run only around the places one RE2 pass marks as possible matches.
``python -m tripwire.bench.masking`` prints the cost per row. All patterns are ASCII-only on
purpose: the validators (Luhn, IBAN mod 97, national check digits) do digit arithmetic, and
a Unicode digit must not reach them.

Vendor token formats come from gitleaks' maintained rule set, imported as data into
``sinks/data/secret_rules.json`` (source, version and licence recorded there; regenerate with
``scripts/import_gitleaks_rules.py``). Its ~220 RE2 patterns run in google-re2, and only those
whose keywords occur in the text: one Aho-Corasick pass (ahocorasick-rs) over the lower-cased
text finds every keyword of every rule, gitleaks' and the hand-written ones here, at once.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2
from ahocorasick_rs import BytesAhoCorasick, Implementation

from tripwire.sinks.national_ids import (
    CONTEXT_WORDS,
    luhn_ok,
    mask_national_named,
    mask_national_plain,
    national_pattern_sources,
)

__all__ = ["mask", "mask_attributes"]

_A = re.ASCII


def _card(m: re.Match[str]) -> str:
    raw = m.group(0)
    digits = re.sub(r"[ -]", "", raw)
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or not luhn_ok(digits):
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


_PLAIN_KEYS = ("password", "passwd", "pwd", "passphrase", "secret", "credential",
               # Azure storage / Service Bus connection strings: AccountKey=...;
               "accountkey", "sharedaccesskey")
_COMPOUND_KEYS = {
    "key": ("api", "access", "private"),
    "token": ("access", "auth", "refresh", "session", "id", "api", "bearer", "client"),
}
_SECRET_KEYS = "|".join(
    [*_PLAIN_KEYS, *(f"(?:{'|'.join(pre)})[_-]?{word}" for word, pre in _COMPOUND_KEYS.items())]
)
# Gate words: every key the pattern knows contains one of them.
_KEY_NEEDLES = ("pass", "pwd", "secret", "credential", "key", "token")  # "accountkey" has "key"
# In RE2: a sixth of Python re's time on 1-2 KB tool output that mentions keys or tokens.
_ASSIGNMENT_PATTERN = (
    r"(?:" + _SECRET_KEYS + r")[\w.-]{0,40}[\"']?\s*(?:=>|[:=])\s*"
    # A placeholder left by an earlier rule is matched whole, so it is recognised
    # and kept instead of being cut at its "]".
    r"(?P<val>\[[a-z0-9_]+\]|\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&)}\]]+)"
)
_ASSIGNMENT = re2.compile(_ASSIGNMENT_PATTERN)
_ASSIGNMENT_CI = re2.compile("(?i)" + _ASSIGNMENT_PATTERN)
_VAL_GROUP = _ASSIGNMENT.groupindex["val"]  # google-re2's span() takes numbers only
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
        start, end = m.span(_VAL_GROUP)
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
    # The gate: the rule runs only if one of its needles (lower case) occurs in the
    # lower-cased text, as found by the one keyword pass; rules without needles always run.
    needles: tuple[str, ...] = ()
    needs_digit: bool = False  # every match holds an ASCII digit


_AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")

# Order matters: whole blocks and tokens first, so a key inside a PEM block or a JWT
# is not half-masked by a later, narrower rule; bare numbers last.
_BLOCK_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        _sub(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            "[PRIVATE_KEY]",
            re.S,
        ),
        needles=("private key",),
    ),
    _Rule(
        "jwt",
        _sub(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", "[JWT]"),
        needles=("eyj",),
    ),
    _Rule(
        "url_credentials",
        _sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]{0,20}://[^\s:/@]{0,128}:)[^\s@/]{1,256}@", r"\1[SECRET]@"),
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
    ),
    _Rule(
        # Needs a digit so prose about "bearer authentication" stays readable.
        "bearer",
        _sub(r"(\bbearer\s+)(?=[\w\-.~+/]*\d)[\w\-.~+/]{12,}=*", r"\1[TOKEN]", re.IGNORECASE),
        needles=("bearer",),
        needs_digit=True,
    ),
    _Rule(
        "aws_key",
        _sub(r"\b(?:" + "|".join(_AWS_PREFIXES) + r")[A-Z0-9]{16}\b", "[AWS_KEY]"),
        needles=tuple(p.lower() for p in _AWS_PREFIXES),
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
    _Rule("google_key", _sub(r"\bAIza[0-9A-Za-z_-]{35}", "[API_KEY]"), needles=("aiza",)),
    _Rule("slack_token", _sub(r"\bxox[abposr]-[A-Za-z0-9-]{10,}", "[TOKEN]"), needles=("xox",)),
)

# Long random-looking runs with upper case, lower case and digits: what keys look like when
# nothing names them (AWS secret keys, Azure account keys, most LLM providers' keys). Hashes
# (one case) and identifiers (low entropy) stay. A random 32-character key from 62 symbols
# has a Shannon entropy near 4.6 bits; "AbstractSingletonProxyFactoryBean2" has 3.9.
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}", _A)
_HIGH_ENTROPY = 4.2


def _mask_high_entropy(text: str, _low: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _LONG_RUN.finditer(text):
        run = m.group(0)
        if run[0] in "/-_=" or not (any(c.isupper() for c in run) and any(c.islower() for c in run)
                                   and sum(c.isdigit() for c in run) >= 2):
            continue
        if _shannon_entropy(run) < _HIGH_ENTROPY:
            continue
        out.append(text[pos:m.start()])
        out.append("[SECRET]")
        pos = m.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


# Quoted UUIDs (event ids, run ids: most of the digits in JSON tool results) are set aside
# while the number rules run, which halves their cost on such text. No number rule's
# pattern contains a quote, so none can reach into a quoted value from outside, and each
# rule's look-arounds see the same quote next to the stand-in as next to the UUID; the
# stand-in holds nothing any rule matches (lower-case letters only). Long random runs are
# judged before, on the text as it is.
_UUID = re.compile(r"(?<=[\"'])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?=[\"'])", _A)
_UUID_STAND_IN = "uuidstandinxzq"


def _mask_digit_chain(text: str) -> str:
    """The rules that only match text holding digits, in order: long random runs (keys need
    two digits), then IBANs/cards/phones/IPs, then national ids and national phone formats
    (after IBANs and cards, whose digit groups the phone formats would also take)."""
    text = _mask_high_entropy(text, "")
    uuids: list[str] = []
    if "-" in text and _UUID_STAND_IN not in text:
        def stash(m: re.Match[str]) -> str:
            uuids.append(m.group(0))
            return _UUID_STAND_IN

        spared = _UUID.sub(stash, text)
        if uuids:
            parts = mask_national_plain(_mask_numbers(spared, "")).split(_UUID_STAND_IN)
            if len(parts) == len(uuids) + 1:
                out = [parts[0]]
                for uuid, part in zip(uuids, parts[1:], strict=True):
                    out.append(uuid)
                    out.append(part)
                return "".join(out)
            # A rule took a stand-in with its neighbours: do it the long way.
    return mask_national_plain(_mask_numbers(text, ""))


# Where those rules can match: around digits. Each run of digits is widened to whole
# whitespace-separated tokens, plus two tokens each side ("AB 12 34 56 C": a national id's
# letters around its digits; an IBAN's letter groups between its digit groups), and windows
# that touch are merged. The Python patterns, with their look-arounds, then run on these
# windows only, not on the prose between them. A window starts and ends next to whitespace
# (or the text's ends), where every pattern's look-arounds see the same as in the full text;
# tests/test_masking_vendors.py checks the result equals the full-text pass.
_DIGIT_RUN = re.compile(r"[0-9]+")
_SPACE = frozenset(" \t\n\f\r\v")
_WIDEN_TOKENS = 2


_NEXT_SPACE = re.compile(r"[ \t\n\f\r\v]")
_NEXT_NON_SPACE = re.compile(r"[^ \t\n\f\r\v]")
_SPACE_CHARS = tuple(_SPACE)


_GROUP = re.compile(r"[A-Z0-9]{1,4}\Z", _A)  # an IBAN's letter group, a NINO's suffix


def _widen_left(text: str, start: int, floor: int) -> int:
    # C-speed scans (rfind, rstrip) rather than a Python loop per character. Two tokens,
    # then on through short upper-case groups.
    hops = 0
    token_start = start
    while True:
        previous = max(floor, 1 + max(text.rfind(c, floor, start) for c in _SPACE_CHARS))
        if hops > _WIDEN_TOKENS and not _GROUP.match(text, previous, start):
            return token_start  # a token's first character, not the spaces before it
        token_start = start = previous
        hops += 1
        if start <= floor or hops > _WIDEN_TOKENS + 1 + 8:  # an IBAN has at most 8 groups
            return start
        start = max(floor, len(text[floor:start].rstrip(" \t\n\f\r\v")) + floor)


def _widen_right(text: str, end: int) -> int:
    n = len(text)
    hops = 0
    token_end = end
    while True:
        m = _NEXT_SPACE.search(text, end)
        following = n if m is None else m.start()
        if hops > _WIDEN_TOKENS and not _GROUP.match(text, end, following):
            return token_end  # a token's last character, not the spaces after it
        token_end = end = following
        hops += 1
        if end >= n or hops > _WIDEN_TOKENS + 1 + 8:
            return end
        m = _NEXT_NON_SPACE.search(text, end)
        end = n if m is None else m.start()


def digit_windows(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` outside which no digit rule can match (merged, in order).

    Linear in ``len(text)``: every walk is over text no earlier walk covered (a digit run in
    the same token as the previous one adds nothing; left walks stop at the last window)."""
    windows: list[tuple[int, int]] = []
    previous_run_end = 0
    for m in _CANDIDATES.finditer(text):
        run_start, run_end = m.span()
        gap = text[previous_run_end:run_start]
        previous_run_end = run_end
        if windows and run_start <= windows[-1][1]:
            if not any(ch in _SPACE for ch in gap):
                continue  # the previous run's token: already widened to the right
            first, last = windows[-1]
            windows[-1] = (first, max(last, _widen_right(text, run_end)))
            continue
        floor = windows[-1][1] if windows else 0
        start = _widen_left(text, run_start, floor)
        end = _widen_right(text, run_end)
        if windows and (start <= floor or all(ch in _SPACE for ch in text[floor:start])):
            windows[-1] = (windows[-1][0], max(end, windows[-1][1]))
        else:
            windows.append((start, end))
    return windows


def _without_lookarounds(pattern: str) -> str:
    """``pattern`` with every (?=...), (?!...), (?<=...), (?<!...) removed: it then matches a
    superset of what the original matches, and RE2 compiles it."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i) and (
                i == 0 or pattern[i - 1] != "\\"):
            depth, j = 0, i
            while True:
                ch = pattern[j]
                if ch == "\\":
                    j += 2
                    continue
                if ch == "[":  # a class: skip to its end, brackets inside do not nest
                    j += 1
                    if pattern[j] == "^":
                        j += 1
                    j += 1
                    while pattern[j] != "]":
                        j += 2 if pattern[j] == "\\" else 1
                    j += 1
                    continue
                depth += ch == "("
                depth -= ch == ")"
                j += 1
                if depth == 0:
                    break
            i = j
            continue
        out.append(pattern[i])
        i += 1
    return "".join(out)


# One RE2 pass over the text finds every place a digit rule could match (their patterns
# without look-arounds, a superset); the Python patterns then run around those places only.
_CANDIDATES = re2.compile("|".join(
    f"(?:{_without_lookarounds(p)})"
    for p in (*_NUMBER_KINDS.values(), *national_pattern_sources(), _LONG_RUN.pattern)))

_MAX_WINDOWED_RUNS = 16
"""Above this many digit runs (JSON tool results: ~80 per 600 characters) building windows
costs more than it saves, measured in bench/masking.py; the chain then runs on the text."""


def _mask_digits(text: str, _low: str) -> str:
    if len(_DIGIT_RUN.findall(text, 0, len(text))) > _MAX_WINDOWED_RUNS:
        return _mask_digit_chain(text)
    out: list[str] = []
    pos = 0
    for start, end in digit_windows(text):
        window = text[start:end]
        masked = _mask_digit_chain(window)
        if masked is not window:
            out.append(text[pos:start])
            out.append(masked)
            pos = end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


# After the vendor rules: generic key=value secrets, e-mail addresses, numbers.
_LATE_RULES: tuple[_Rule, ...] = (
    _Rule("assignment", _mask_assignments, needles=_KEY_NEEDLES),
    _Rule(
        "email",
        _sub(
            r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
            r"\.[A-Za-z]{2,24}\b",
            "[EMAIL]",
        ),
        needles=("@",),
    ),
    # Ids written after their name ("BSN 123456782"): on the whole text, when a name is in it.
    _Rule("national_ids_named", mask_national_named, needles=CONTEXT_WORDS, needs_digit=True),
    _Rule("digits", _mask_digits, needs_digit=True),
)


# --- vendor token formats (gitleaks rules, as data) ---------------------------------------

SECRET_RULES_FILE = Path(__file__).resolve().parent / "data" / "secret_rules.json"


@dataclass(frozen=True)
class _VendorRule:
    id: str
    regex: re2._Regexp
    group: int
    entropy: float
    placeholder: str


def _shannon_entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


# Published formats gitleaks (v8.30) has no rule for, or catches only after "vendor = ";
# same fields as the rules file. Sources: each vendor's token documentation.
_EXTRA_VENDOR_RULES: tuple[dict[str, Any], ...] = (
    {"id": "gcp-oauth-client-secret", "regex": r"\bGOCSPX-[\w-]{28}", "keywords": ["gocspx-"]},
    {"id": "gcp-oauth-access-token", "regex": r"\bya29\.[\w-]{30,}", "keywords": ["ya29."]},
    {"id": "azure-sas-signature", "regex": r"[?&;]sig=([A-Za-z0-9%+/]{30,}={0,2})",
     "keywords": ["sig="], "secret_group": 1},
    {"id": "bitbucket-app-password", "regex": r"\bATBB[A-Za-z0-9_=.-]{28,}",
     "keywords": ["atbb"]},
    {"id": "docker-hub-token", "regex": r"\bdckr_(?:pat|oat)_[\w-]{27,}",
     "keywords": ["dckr_"]},
    {"id": "groq-api-key", "regex": r"\bgsk_[A-Za-z0-9]{52}\b", "keywords": ["gsk_"]},
    {"id": "xai-api-key", "regex": r"\bxai-[A-Za-z0-9]{80}\b", "keywords": ["xai-"]},
    {"id": "replicate-api-token", "regex": r"\br8_[A-Za-z0-9]{37}\b", "keywords": ["r8_"]},
    {"id": "discord-webhook-url",
     "regex": r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api/webhooks/\d+/[\w-]{40,}",
     "keywords": ["discord"]},
    {"id": "discord-bot-token", "regex": r"\b[MNO][A-Za-z\d]{23,27}\.[\w-]{6}\.[\w-]{27,40}\b",
     "keywords": ["discord"]},
    {"id": "stripe-webhook-secret", "regex": r"\bwhsec_[A-Za-z0-9]{24,}", "keywords": ["whsec_"]},
    {"id": "square-oauth-secret", "regex": r"\bsq0csp-[\w-]{43}", "keywords": ["sq0csp-"]},
    {"id": "braintree-access-token",
     "regex": r"access_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}",
     "keywords": ["access_token$"]},
    {"id": "mailgun-api-key", "regex": r"\bkey-[a-f0-9]{32}\b", "keywords": ["key-"]},
    {"id": "mailchimp-api-key", "regex": r"\b[a-f0-9]{32}-us\d{1,2}\b", "keywords": ["-us"]},
    {"id": "sentry-dsn", "regex": r"https?://([a-f0-9]{32})(?::[a-f0-9]{32})?@[\w.-]*sentry",
     "keywords": ["sentry"], "secret_group": 1},
    {"id": "teams-webhook-url",
     "regex": r"https://[\w-]+\.webhook\.office\.com/webhookb2/[\w@/-]{60,}",
     "keywords": ["webhook.office.com"]},
    {"id": "telegram-bot-token", "regex": r"\b\d{8,10}:AA[\w-]{32,33}\b", "keywords": [":aa"]},
    {"id": "new-relic-user-api-key", "regex": r"\bNRAK-[A-Z0-9]{27}\b", "keywords": ["nrak-"]},
    {"id": "twilio-auth-token",
     "regex": r"(?i)twilio[\w.-]{0,20}(?:auth)?[\w.-]{0,10}(?:token|secret)[\s\x22':=]{1,5}"
     r"([a-f0-9]{32})\b", "keywords": ["twilio"], "secret_group": 1},
)


def _vendor_rule(rule: Mapping[str, Any]) -> _VendorRule:
    return _VendorRule(
        id=rule["id"],
        regex=re2.compile(rule["regex"]),
        group=int(rule.get("secret_group", 0)),
        entropy=float(rule.get("entropy", 0.0)),
        placeholder="[" + re.sub(r"[^A-Z0-9]+", "_", rule["id"].upper()) + "]",
    )


def _vendor_rule_data(path: Path) -> list[Mapping[str, Any]]:
    return [*json.loads(path.read_text(encoding="utf-8"))["rules"], *_EXTRA_VENDOR_RULES]


_VENDOR_DATA = _vendor_rule_data(SECRET_RULES_FILE)
_VENDOR_RULES = tuple(_vendor_rule(rule) for rule in _VENDOR_DATA)


def _build_keywords() -> tuple[BytesAhoCorasick, list[tuple[tuple[int, ...], frozenset[str]]]]:
    """The keyword automaton, and per keyword the vendor rules (indices) and hand-written
    rules (names) it gates."""
    table: dict[str, tuple[list[int], list[str]]] = {}
    for index, rule in enumerate(_VENDOR_DATA):
        for keyword in rule["keywords"]:
            table.setdefault(keyword, ([], []))[0].append(index)
    for rule in (*_BLOCK_RULES, *_LATE_RULES):
        for needle in rule.needles:
            table.setdefault(needle, ([], []))[1].append(rule.name)
    words = sorted(table)
    gates = [(tuple(table[w][0]), frozenset(table[w][1])) for w in words]
    # A DFA over UTF-8 bytes: measured 9 µs on a 1.4 KB tool output, against 34 µs for the
    # default automaton over str (ahocorasick-rs 1.0.3).
    automaton = BytesAhoCorasick([w.encode() for w in words], implementation=Implementation.DFA)
    return automaton, gates


_KEYWORDS, _GATES = _build_keywords()
_ALWAYS = frozenset(r.name for r in (*_BLOCK_RULES, *_LATE_RULES) if not r.needles)


def _mask_vendor(text: str, candidates: set[int]) -> str:
    spans: list[tuple[int, int, str]] = []
    for index in sorted(candidates):
        rule = _VENDOR_RULES[index]
        for m in rule.regex.finditer(text):
            start, end = m.span(rule.group) if rule.group else m.span()
            if start < 0:  # the named group is in an alternative that did not match
                start, end = next((m.span(g) for g in range(1, rule.regex.groups + 1)
                                   if m.span(g)[0] >= 0), m.span())
            if end <= start:
                continue
            secret = text[start:end]
            if secret[0] == "[" and secret[-1] == "]":
                continue  # a placeholder of an earlier rule
            if rule.entropy and _shannon_entropy(secret) < rule.entropy:
                continue
            spans.append((start, end, rule.placeholder))
    if not spans:
        return text
    # Overlaps: the earliest start wins, then the longest; the rest of an overlap goes too.
    spans.sort(key=lambda s: (s[0], -s[1]))
    out: list[str] = []
    pos = 0
    for start, end, placeholder in spans:
        if end <= pos:
            continue
        if start < pos:
            pos = end
            continue
        out.append(text[pos:start])
        out.append(placeholder)
        pos = end
    out.append(text[pos:])
    return "".join(out)


_DIGIT = re.compile(r"[0-9]")
# Nothing any rule masks is shorter ("a@b.io", "1.2.3.4" are 6 and 7).
_MIN_LEN = 6


def mask(text: str) -> str:
    """``text`` with secrets and personal data replaced by typed placeholders."""
    if len(text) < _MIN_LEN:
        return text
    low = text.lower()
    try:
        low_utf8 = low.encode()
    except UnicodeEncodeError:
        # A lone surrogate (JSON can carry "\\ud800"): RE2 and the ClickHouse driver both
        # need UTF-8, so it becomes U+FFFD here rather than an error in the sink.
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
        low = text.lower()
        low_utf8 = low.encode()
    vendor: set[int] = set()
    hand: set[str] = set()
    # One pass finds every keyword of every rule; most rows match none or a few.
    for index, _, _ in _KEYWORDS.find_matches_as_indexes(low_utf8, overlapping=True):
        vendor_ids, hand_names = _GATES[index]
        vendor.update(vendor_ids)
        hand.update(hand_names)
    has_digit = _DIGIT.search(text) is not None
    if not hand and not vendor and not has_digit:
        return text
    for rule in _BLOCK_RULES:
        if rule.name in hand and (has_digit or not rule.needs_digit):
            masked = rule.apply(text, low)
            if masked is not text:
                text, low = masked, masked.lower()
    if vendor:
        masked = _mask_vendor(text, vendor)
        if masked is not text:
            text, low = masked, masked.lower()
    for rule in _LATE_RULES:
        if (rule.name in hand or rule.name in _ALWAYS) and (has_digit or not rule.needs_digit):
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
