"""National identity numbers and national-format phone numbers, for ``sinks.masking``.

One compiled alternation finds every candidate in a single pass; each kind then has a
validator (the check digit its issuer defines, or a plausible date) so that an order number
that happens to have the right length is usually left alone. Kinds whose shape is a bare
digit run (Dutch BSN, Polish PESEL, Indian Aadhaar) also need their name nearby, as people
write it ("BSN 123456782"): nine or eleven digits alone are far more often ids of other kinds.

Countries: US (SSN is in masking.py), UK, DE, FR, ES, IT, NL, BE, PL, SE, DK, FI, BR, CA, IN,
CN. Patterns are ASCII-only so that the digit arithmetic never meets a non-ASCII digit.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_A = re.ASCII


def luhn_ok(digits: str) -> bool:
    """The Luhn check over ASCII digits: national ids here, payment cards in masking.py."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(raw: str) -> str:
    return "".join(ch for ch in raw if "0" <= ch <= "9")


def _uk_nino(raw: str) -> bool:
    prefix = raw[:2].upper()
    return prefix not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")


def _de_steuer_id(raw: str) -> bool:
    # ISO 7064 MOD 11,10 over the first ten digits; the first is never 0.
    d = _digits(raw)
    if len(d) != 11 or d[0] == "0":
        return False
    product = 10
    for ch in d[:10]:
        total = (int(ch) + product) % 10 or 10
        product = total * 2 % 11
    return (11 - product) % 10 == int(d[10])


def _fr_nir(raw: str) -> bool:
    compact = raw.replace(" ", "").upper()
    body, key = compact[:13], compact[13:]
    body = body.replace("2A", "19").replace("2B", "18")  # Corsica, as INSEE defines
    return body.isdigit() and 97 - int(body) % 97 == int(key)


def _es_dni(raw: str) -> bool:
    compact = raw.replace("-", "").upper()
    head = compact[:-1]
    head = {"X": "0", "Y": "1", "Z": "2"}.get(head[0], head[0]) + head[1:]
    return head.isdigit() and "TRWAGMYFPDXBNJZSQVHLCKE"[int(head) % 23] == compact[-1]


_CF_ODD = dict(zip("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                   (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4,
                    18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23), strict=True))


def _it_codice_fiscale(raw: str) -> bool:
    body = raw.upper()
    total = 0
    for i, ch in enumerate(body[:15]):
        total += _CF_ODD[ch] if i % 2 == 0 else (int(ch) if ch.isdigit() else ord(ch) - 65)
    return chr(65 + total % 26) == body[15]


def _nl_bsn(raw: str) -> bool:
    d = _digits(raw)
    total = sum(int(x) * w for x, w in zip(d[:8], range(9, 1, -1), strict=True))
    return (total - int(d[8])) % 11 == 0


def _be_national(raw: str) -> bool:
    d = _digits(raw)
    body, check = int(d[:9]), int(d[9:])
    return 97 - body % 97 == check or 97 - (2_000_000_000 + body) % 97 == check


def _pl_pesel(raw: str) -> bool:
    d = _digits(raw)
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    return (10 - sum(w * int(x) for w, x in zip(weights, d, strict=False)) % 10) % 10 == int(d[10])


def _nordic_date_id(raw: str) -> bool:
    # Sweden: YYMMDD-NNNC with a Luhn check; Denmark: DDMMYY-NNNN with a valid date.
    d = _digits(raw)
    if luhn_ok(d[-10:]):
        return True
    day, month = int(d[:2]), int(d[2:4])
    return 1 <= day <= 31 and 1 <= month <= 12


def _fi_hetu(raw: str) -> bool:
    compact = raw.upper()
    number = int(compact[:6] + compact[7:10])
    return "0123456789ABCDEFHJKLMNPRSTUVWXY"[number % 31] == compact[10]


def _br_cpf(raw: str) -> bool:
    d = [int(x) for x in _digits(raw)]
    if len(set(d)) == 1:
        return False
    for length in (9, 10):
        s = sum(x * w for x, w in zip(d[:length], range(length + 1, 1, -1), strict=True))
        if (s * 10 % 11) % 10 != d[length]:
            return False
    return True


def _ca_sin(raw: str) -> bool:
    d = _digits(raw)
    return d[0] not in "08" and luhn_ok(d)


def _cn_resident(raw: str) -> bool:
    body = raw[:17]
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
    return check == raw[17].upper()


def _aadhaar(raw: str) -> bool:
    return _digits(raw)[0] not in "01"


def _always(raw: str) -> bool:
    return True


_CONTEXT = r"(?i:\b{words}\b)[^\n\d]{{0,24}}"

# kind -> (pattern, validator, placeholder). Each pattern's outer boundaries are added below.
_KINDS: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "uk_nino": (r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]", _uk_nino,
                "[NATIONAL_ID]"),
    "de_steuer_id": (r"[1-9]\d ?\d{3} ?\d{3} ?\d{3}", _de_steuer_id, "[NATIONAL_ID]"),
    "fr_nir": (r"[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}",
               _fr_nir, "[NATIONAL_ID]"),
    "es_dni": (r"(?:\d{8}|[XYZ]-?\d{7})-?[A-Z]", _es_dni, "[NATIONAL_ID]"),
    "it_cf": (r"[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]", _it_codice_fiscale,
              "[NATIONAL_ID]"),
    "be_national": (r"\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2}", _be_national, "[NATIONAL_ID]"),
    "nordic": (r"(?:19|20)?\d{6}[-+]\d{4}", _nordic_date_id, "[NATIONAL_ID]"),
    "fi_hetu": (r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]", _fi_hetu, "[NATIONAL_ID]"),
    "br_cpf": (r"\d{3}\.\d{3}\.\d{3}-\d{2}", _br_cpf, "[NATIONAL_ID]"),
    "ca_sin": (r"\d{3}[- ]\d{3}[- ]\d{3}", _ca_sin, "[NATIONAL_ID]"),
    "in_pan": (r"[A-Z]{3}[PCHFATBLJG][A-Z]\d{4}[A-Z]", _always, "[NATIONAL_ID]"),
    "cn_resident": (r"\d{6}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]",
                    _cn_resident, "[NATIONAL_ID]"),
    "nl_bsn": (_CONTEXT.format(words="bsn|burgerservicenummer|sofinummer") + r"(?P<bsn>\d{9})",
               _nl_bsn, "[NATIONAL_ID]"),
    "pl_pesel": (_CONTEXT.format(words="pesel") + r"(?P<pesel>\d{11})", _pl_pesel,
                 "[NATIONAL_ID]"),
    "in_aadhaar": (_CONTEXT.format(words="aadhaar|aadhar|uidai")
                   + r"(?P<aadhaar>\d{4} ?\d{4} ?\d{4})", _aadhaar, "[NATIONAL_ID]"),
    # Phone numbers in national formats (a trunk 0, then 9-11 digits in groups) and with the
    # 00 international prefix; "+" forms are masking.py's phone_intl.
    "phone_00": (r"00[1-9]\d{0,2}(?:[ ./-]?\d){6,12}", _always, "[PHONE]"),
    "phone_national": (r"0[1-9]\d{0,4}(?:[ ./-]\d{2,8}){1,4}", lambda raw: 9 <= len(
        _digits(raw)) <= 11, "[PHONE]"),
}
_CONTEXT_GROUP = {"nl_bsn": "bsn", "pl_pesel": "pesel", "in_aadhaar": "aadhaar"}

def _alternation(kinds: list[str]) -> str:
    return "|".join(f"(?<![\\w.+-])(?P<{kind}>{_KINDS[kind][0]})(?![\\w-]|\\.\\d)"
                    for kind in kinds)


# The lookahead lets the engine skip to a digit or capital fast: one pass over prose then
# costs a few microseconds instead of trying seventeen alternatives at every character.
PATTERN = re.compile(
    "(?=[0-9A-Z])(?:" + _alternation([k for k in _KINDS if k not in _CONTEXT_GROUP]) + ")", _A)
# Kinds written after their name run only when one of the names is in the text.
CONTEXT_PATTERN = re.compile(_alternation(list(_CONTEXT_GROUP)), _A)
CONTEXT_WORDS = ("bsn", "burgerservicenummer", "sofinummer", "pesel", "aadhaar", "aadhar",
                 "uidai")


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup or ""
    _, valid, placeholder = _KINDS[kind]
    inner = _CONTEXT_GROUP.get(kind)
    if inner is not None:
        start, end = m.span(inner)
        value = m.group(inner)
        if not valid(value):
            return m.group(0)
        whole_start = m.start()
        return m.group(0)[: start - whole_start] + placeholder + m.group(0)[end - whole_start:]
    return placeholder if valid(m.group(0)) else m.group(0)


def national_pattern_sources() -> list[str]:
    """The patterns ``mask_national_plain`` runs, without their boundaries."""
    return [pattern for kind, (pattern, _, _) in _KINDS.items() if kind not in _CONTEXT_GROUP]


def mask_national_named(text: str, _low: str = "") -> str:
    """``text`` with the ids that need their name nearby (BSN, PESEL, Aadhaar) replaced."""
    return CONTEXT_PATTERN.sub(_replace, text)


def mask_national_plain(text: str) -> str:
    """``text`` with every other national id and national-format phone number replaced."""
    return PATTERN.sub(_replace, text)


def mask_national(text: str) -> str:
    """Both of the above."""
    return mask_national_plain(mask_national_named(text))
