"""Prompt-injection scanner for the ``content`` of agent steps.

Scores how strongly a piece of text (a web page, an email, a tool result...) looks like it
tries to steer the agent that reads it: overriding its instructions, addressing it with
orders hidden in data, hijacking its role with fake turns or chat-template markers,
extracting secrets or its system prompt, smuggling tool calls, or hiding any of that in
escapes, encodings, invisible characters, lookalike letters or hidden markup; in English,
French, German, Spanish and Chinese (and the basics of a few more languages).

How the work is arranged, because this runs on the stream's hot path:

* one native pass (Hyperscan, ``MATCHER``) over the text's UTF-8 bytes finds, at once, every
  phrase family of ``detectors/injection_families.py``, every regex of the rule engine
  below, and markers of escaped, encoded, hidden or lookalike content. Benign text matches
  nothing and is done after that pass (~10 µs for 1.4 KB on one core);
* a text with JSON/HTML/URL escapes is unescaped and matched again; one with invisible or
  lookalike characters is de-obfuscated (tag characters decoded, zero-width characters
  removed, NFKC for compatibility letters, a hand-written confusables map for mixed-script
  words) and matched again, and the obfuscation itself is a signal;
* each family or rule that matched is checked in Python on a window around its match
  (quoted as an example? negated? the writer retracting their own words?) and gives a
  weight to its signal; several matches of one phrase count once; signals combine as a
  noisy-OR, raised to a per-trust exponent so external text is weighted up and internal
  text down;
* base64/hex blobs are decoded and rescanned, hidden HTML/markdown regions are rescanned
  on their own, and texts longer than ``MAX_SCAN_CHARS`` are scanned head and tail only.

No network and no models; the only I/O is :func:`scan_lines` on the streams it is handed,
and the compiled pattern database cached under ``$XDG_CACHE_HOME/tripwire``. Measured on
public corpora by ``bench/injection_eval.py`` (see detectors/data/README.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import unquote

from tripwire.detectors.injection_families import FAMILIES, MARKERS

try:  # the server dependency; the pure-Python fallback gives the same answers, ~50x slower
    import hyperscan
except ImportError:  # pragma: no cover - exercised only where no wheel exists
    hyperscan = None

__all__ = ["HIT_THRESHOLD", "MAX_SCAN_CHARS", "SIGNALS", "ScanResult", "scan_lines", "scan_text"]

# 0.5 sits where one unambiguous sign (e.g. "ignore all previous instructions", a fake
# <tool_call>) is a hit on its own at partner trust, while one weak sign (a lone zero-width
# character, "from now on, you ...") is not unless a second sign or external trust backs it.
# On the public held-out corpora: recall 91.5 % at 0.4 % FPR on benign tool text; 0.4 gives
# 94 % at 1.9 %, 0.7 gives 85 % at 0.07 % (detectors/data/README.md).
HIT_THRESHOLD = 0.5

# Longer texts are scanned on their first _HEAD_CHARS and last _TAIL_CHARS: injected
# instructions sit at the start or, very often, appended at the end of a document, and
# capping the work keeps a 10 MB tool result from stalling the stream.
MAX_SCAN_CHARS = 64 * 1024
_HEAD_CHARS = 48 * 1024
_TAIL_CHARS = MAX_SCAN_CHARS - _HEAD_CHARS

# score = raw ** exponent: below 1 lifts a raw score, above 1 lowers it, and the order keeps
# external >= partner >= internal for every text. Unknown trust counts as partner, the
# middle, so a producer that forgets the field is neither trusted nor punished.
_TRUST_EXPONENT: dict[str | None, float] = {
    "external": 0.8,
    "partner": 1.0,
    None: 1.0,
    "internal": 1.3,
}

# Base64/hex found in the text is decoded and rescanned this many levels deep; nesting
# deeper than that is rare in practice and each level multiplies the work.
_MAX_DECODE_DEPTH = 2
_MAX_BLOBS = 8
_MAX_BLOB_CHARS = 8 * 1024
_MAX_HIDDEN_REGIONS = 16
_MAX_HIDDEN_CHARS = 2000

SIGNALS = (
    "instruction_override",
    "role_hijack",
    "secret_exfiltration",
    "tool_smuggling",
    "encoded_payload",
    "zero_width",
    "homoglyph",
    "hidden_markup",
    "addressed_to_ai",
    "concealment",
    "truncated",
)


@dataclass(frozen=True, slots=True)
class ScanResult:
    score: float
    hit: bool
    signals: list[str]


@dataclass(frozen=True, slots=True)
class _Rule:
    signal: str
    weight: float
    pattern: re.Pattern[str]


def _rule(signal: str, weight: float, gate: str, pattern: str) -> _Rule:
    """``gate`` ("anchors & group & group...") names the words and markers the regex cannot
    match without. It dispatched the rules in Python before every regex went into the native
    matcher, which now finds each rule's matches itself; it stays as the rule's summary."""
    return _Rule(signal, weight, re.compile(pattern, re.MULTILINE))


# --- vocabulary shared by several rules ------------------------------------------------------

_Q = "['\u2019]"  # straight or typographic apostrophe
_GAP = r"(?:[\w'\u2019-]+\s+){0,4}?"
_OVR_VERB = (
    r"(?:ignor(?:e|ing)|disregard(?:ing)?|(?<!n't )(?<!not )(?<!never )(?<!n\u2019t )forget"
    r"|pay\s+no\s+(?:attention|heed)\s+to|un-?learn|never\s*mind|throw\s+out|set\s+aside"
    r"|disobey)"
)
_OVR_VERB_W = "ignore ignoring disregard disregarding forget attention heed unlearn learn mind "
_OVR_VERB_W += "nevermind throw aside disobey"
_OVR_SOFT_VERB = r"(?:overrid(?:e|ing)|overrule|bypass(?:ing)?|discard|abandon|drop|skip|reset)"
_OVR_SOFT_W = "override overriding overrule bypass bypassing discard abandon drop skip reset"
_OVR_OBJ = (
    r"(?:instructions?|directions|directives?|rules|prompts?|guidelines|guidance|constraints"
    r"|programming|guardrails|safeguards|restrictions|polic(?:y|ies)|system\s+(?:prompt|message)"
    r"|training|orders|commands|context)\b"
)
_OVR_OBJ_W = "instructions instruction directions directives directive rules prompts prompt "
_OVR_OBJ_W += "guidelines guidance constraints programming guardrails safeguards restrictions "
_OVR_OBJ_W += "policy policies system training orders commands context"
_OVR_QUALIFIER = (
    r"(?:(?:all|any|every|each|of|the|your|these|those|its|such)\s+){0,3}(?:previous|prior"
    r"|preceding|above|earlier|former|original|initial|old|existing|foregoing|system|developer"
    r"|operator)\s+"
)
# Soft verbs (override, drop, skip...) are everyday words in config docs and SQL ("drop the
# old rules table", "override the existing rules"), so they need a qualifier that points
# back at instructions given earlier, not merely "old" ones.
_OVR_SOFT_QUALIFIER = (
    r"(?:(?:all|any|every|each|of|the|your|these|those|its|such)\s+){0,3}(?:previous|prior"
    r"|preceding|above|earlier|former|original|initial|foregoing|system|developer|operator)\s+"
)
_OVR_QUALIFIER_W = "previous prior preceding above earlier former original initial old existing "
_OVR_QUALIFIER_W += "foregoing system developer operator"
_REVOKED_W = "void cancelled canceled revoked obsolete outdated superseded invalid irrelevant "
_REVOKED_W += "null lifted longer"
_REVOKED = (
    r"\s+(?:(?:are|is|were|was|have\s+been|has\s+been)\s+(?:now\s+|hereby\s+)?(?:void"
    r"|cancell?ed|revoked|obsolete|outdated|superseded|invalid|irrelevant|null|lifted"
    r"|no\s+longer\s+(?:valid|apply|applicable|in\s+effect|relevant)))"
)
_AI = (
    r"(?:ai|a\.i\.|llm|gpt|chatbot|assistant|copilot|language\s+model|ai\s+(?:agent|assistant"
    r"|model|system|reviewer|reader)|agent|bot|model)s?"
)
_AI_W = "ai ais llm llms gpt chatbot chatbots assistant assistants copilot model models agent "
_AI_W += "agents bot bots language"
_SECRET = (
    r"(?:api[\s_-]?keys?|secret(?:\s+keys?|s)?\b|access\s+tokens?|session\s+tokens?"
    r"|auth\w*\s+tokens?|bearer\s+tokens?|api\s+tokens?|credentials?|passwords?|passwd"
    r"|private\s+(?:ssh\s+)?keys?|ssh\s+keys?|id_rsa|\.env\b|env(?:ironment)?\s+variables?"
    r"|[\w.]*_(?:api_)?(?:key|secret|token)\b|card\s+(?:details|numbers?)"
    r"|conversation\s+(?:history|log)|chat\s+history|(?:last|previous)\s+(?:\d+\s+)?messages"
    r"|customer\s+(?:list|data)|contact\s+list|mot\s+de\s+passe|contrase\u00f1a|passwort"
    r"|chave\s+da\s+api)"
)
_SECRET_W = "key keys secret secrets token tokens credential credentials password passwords "
_SECRET_W += "passwd rsa env environment card history messages customer contact passe "
_SECRET_W += "contrase\u00f1a passwort chave _key _secret _token"
_SEND_W = "send post upload forward email mail transmit exfiltrate leak submit copy paste "
_SEND_W += "include append attach embed share give tell reveal print output dump show expose "
_SEND_W += "disclose read cat"
_DEST = (
    r"(?:to|at|into|via|on|onto)\s+(?:our\s+\w+\s+portal\s+at\s+|the\s+(?:following\s+)?"
    r"(?:url|endpoint)\s+)?(?:https?://|www\.|[\w.+-]+@[\w-]+\.[\w.-]+|(?:this|the\s+following"
    r"|our|my)\s+(?:url|endpoint|webhook|server|address))"
)
_DEST_W = "http https www @ url endpoint webhook server address"
_DANGEROUS_PARTS = frozenset(
    "delete drop remove purge wipe destroy erase truncate transfer send wire pay payee refund "
    "grant disable exec execute shell rm approve write upload export forward post share deploy "
    "format kill shutdown mfa admin password credential credentials money funds".split()
)

_RULES: tuple[_Rule, ...] = (
    # --- instruction_override ---------------------------------------------------------------
    _rule(
        "instruction_override",
        0.8,
        f"{_OVR_VERB_W} & {_OVR_OBJ_W} & {_OVR_QUALIFIER_W}",
        rf"{_OVR_VERB}\s+{_OVR_QUALIFIER}{_OVR_OBJ}",
    ),
    _rule(
        "instruction_override",
        0.6,
        f"{_OVR_VERB_W} & {_OVR_OBJ_W}",
        rf"{_OVR_VERB}\s+{_GAP}{_OVR_OBJ}",
    ),
    _rule(
        "instruction_override",
        0.7,
        f"{_OVR_SOFT_W} & {_OVR_OBJ_W} & {_OVR_QUALIFIER_W}",
        rf"{_OVR_SOFT_VERB}\s+{_OVR_SOFT_QUALIFIER}{_OVR_OBJ}",
    ),
    _rule(
        "instruction_override",
        0.35,
        f"{_OVR_SOFT_W} & {_OVR_OBJ_W}",
        rf"\b{_OVR_SOFT_VERB}\s+{_GAP}{_OVR_OBJ}",
    ),
    _rule(
        "instruction_override",
        0.65,
        f"obey obeying heed adhere comply follow following & {_OVR_OBJ_W} & not don stop "
        "longer never",
        rf"(?:do\s+not|don{_Q}?t|stop|no\s+longer|never)\s+(?:follow(?:ing)?|obey(?:ing)?|heed"
        rf"|adhere\s+to|comply\s+with)\s+{_GAP}{_OVR_OBJ}",
    ),
    _rule(
        "instruction_override",
        0.7,
        "ignore ignoring disregard forget",
        rf"(?:ignor(?:e|ing)|disregard|(?<!n't )(?<!not )forget)\s+(?:(?:all|any|of|the|it)\s+)?"
        rf"(?:everything|anything|all|the\s+above|what(?:ever)?\s+(?:you\s+were|you{_Q}ve\s+been"
        rf"|they|it)|it\s+entirely)\s*(?:above|before|prior|previously|so\s+far|you\s+were"
        rf"|you{_Q}ve\s+been|told|said|and\b|,|$)",
    ),
    # Revoking instructions without a verb aimed at the reader ("your previous instructions
    # are obsolete"). Only "your/all/above/prior/system" make it address the agent: "the old
    # onboarding instructions are outdated" is everyday mail.
    _rule(
        "instruction_override",
        0.7,
        f"{_REVOKED_W} & {_OVR_OBJ_W} & your all above prior system",
        rf"(?:your|all|above|prior|system)\s+(?:\w+\s+){{0,2}}?{_OVR_OBJ}(?:\s+above|\s+before)?"
        + _REVOKED,
    ),
    _rule(
        "instruction_override",
        0.35,
        f"{_REVOKED_W} & {_OVR_OBJ_W}",
        rf"{_OVR_OBJ}(?:\s+above|\s+before)?" + _REVOKED,
    ),
    _rule(
        "instruction_override",
        0.65,
        f"supersede supersedes precedence overrides replaces & {_OVR_OBJ_W}",
        r"(?:supersedes?|takes?\s+precedence\s+over|overrides?|replaces?)\s+(?:all|any|your"
        rf"|every)\s+(?:\w+\s+){{0,2}}{_OVR_OBJ}",
    ),
    _rule(
        "instruction_override",
        0.55,
        "instructions instruction directive directives rules task "
        "assignment orders & new updated real actual true",
        r"(?:^|[.!:\-\n]\s*|\b(?:important|attention|note)\s*[:!]?\s*)(?:new|updated|real|actual"
        r"|true)\s+(?:instructions?|directives?|rules|task|assignment|orders)\s*(?:for\s+the\s+"
        r"\w+\s*)?(?:is|are)?\s*:",
    ),
    _rule(
        "instruction_override",
        0.5,
        "reset irrelevant distraction untrusted task",
        r"reset\s+your\s+(?:instructions|rules|prompt|programming|context)|previous\s+context"
        r"\s+is\s+irrelevant|(?:text|content)\s+above\s+(?:this\s+line\s+)?is\s+a\s+distraction"
        r"|untrusted\s+and\s+void|\bstop\.\s+new\s+task",
    ),
    _rule(
        "instruction_override",
        0.5,
        "bypass disable circumvent turn switch & policies policy "
        "filter filters guardrails safeguards restrictions moderation safety",
        r"(?:bypass|disable|turn\s+off|switch\s+off|circumvent)\s+(?:all\s+)?(?:your|the|any)\s+"
        r"(?:usual\s+|safety\s+|content\s+|ethical\s+)*(?:policies|policy|filters?|guardrails"
        r"|safeguards|restrictions|moderation|safety)\b",
    ),
    _rule(
        "instruction_override",
        0.5,
        "constraints directives",
        r"(?:earlier|previous|prior)\s+(?:constraints|directives)\s+(?:are|were|have\s+been)\s+"
        r"(?:void|revoked|lifted)",
    ),
    # French / Spanish / German / Italian / Portuguese / Dutch basics.
    _rule(
        "instruction_override",
        0.75,
        "ignore ignorez ignorer oublie oubliez oublier abstraction compte",
        r"(?:ignore[rz]?|oublie[rz]?|ne\s+tiens?\s+(?:plus|pas)\s+compte|ne\s+tenez\s+(?:plus|pas)"
        r"\s+compte|fais\s+abstraction|faites\s+abstraction|sans\s+tenir\s+compte)\s+(?:de\s+"
        r"|des\s+|du\s+)?(?:toutes?\s+|tous\s+)?(?:les\s+|tes\s+|vos\s+|ces\s+)?(?:instructions"
        r"|consignes|directives|r\u00e8gles|ordres)\b",
    ),
    _rule("instruction_override", 0.7, "oublie oubliez oublier", r"oublie[zr]?\s+tout\s+ce\s+qu"),
    _rule(
        "instruction_override",
        0.75,
        "ignora ignorar ignorad ignoren olvida olvidar olvidad olviden omiso sigas sigan",
        r"(?:ignora[rd]?|ignoren|olvida[rd]?|olviden|haz\s+caso\s+omiso\s+de|hagan\s+caso\s+omiso"
        r"\s+de|no\s+sigas|no\s+sigan)\s+(?:todas?\s+|todo\s+)?(?:las\s+|tus\s+|sus\s+|los\s+)?"
        r"(?:instrucciones|indicaciones|reglas|\u00f3rdenes|normas|directrices)",
    ),
    _rule(
        "instruction_override",
        0.7,
        "olvida",
        r"olvida\s+todo\s+lo\s+que\s+te\s+(?:dijeron|han\s+dicho|dije)",
    ),
    _rule(
        "instruction_override",
        0.75,
        "ignoriere ignorieren ignoriert vergiss vergessen missachte missachten anweisungen",
        r"(?:ignorier(?:e|en|t)?|vergiss|vergessen\s+sie|missachte[nt]?)\s+(?:sie\s+)?(?:bitte\s+)?"
        r"(?:alle\s+|deine\s+|ihre\s+|die\s+)?(?:vorherigen\s+|bisherigen\s+|obigen\s+|vorigen\s+"
        r"|fr\u00fcheren\s+|alten\s+)?(?:anweisungen|instruktionen|regeln|befehle|vorgaben)"
        r"|vergiss\s+alles,?\s+was|(?:bisherigen|vorherigen)\s+anweisungen\s+gelten\s+nicht",
    ),
    _rule(
        "instruction_override",
        0.75,
        "ignora dimentica ignore esque\u00e7a esquece negeer vergeet",
        r"(?:ignora|dimentica|ignore|esque\u00e7a|esquece|negeer|vergeet)\s+(?:tutte\s+|todas\s+"
        r"|alle\s+)?(?:le\s+|as\s+|suas\s+|tue\s+|de\s+|je\s+)?(?:tue\s+|suas\s+)?(?:istruzioni"
        r"|regole|instru\u00e7\u00f5es|regras|instructies|regels|eerdere\s+instructies)",
    ),
    # --- role_hijack -----------------------------------------------------------------------
    # No leading \b: a literal-led pattern lets the regex engine skip ahead, and "Dan" is a
    # common name, so this one runs on plenty of benign text.
    _rule(
        "role_hijack",
        0.8,
        "dan stan & you act pretend become eres",
        rf"(?:you\s+are|you{_Q}re|you\s+will\s+be|act\s+as|pretend\s+to\s+be|become|eres)\s+"
        r"(?:now\s+|ahora\s+)?(?:dan|stan)\b",
    ),
    _rule("role_hijack", 0.8, "anything & now", r"do\s+anything\s+now\b"),
    _rule(
        "role_hijack",
        0.7,
        "mode jailbreak",
        rf"\b(?:you\s+are|you{_Q}re|now)\s+(?:now\s+)?(?:in|operating\s+in|running\s+in)\s+"
        r"(?:developer|dev|god|admin|debug|jailbreak|jailbroken|unrestricted|unfiltered|sudo|dan)"
        r"\s+mode\b|(?:activate|enable|enter|switch\s+to|entering|activating)\s+(?:the\s+)?"
        r"(?:jailbreak|dan|god|unrestricted|unfiltered|sudo)\s+mode|jailbreak\s+(?:mode|enabled)",
    ),
    _rule(
        "role_hijack",
        0.35,
        "mode",
        r"(?:enable|enter|switch\s+to|entering|activating|activate)\s+(?:the\s+)?"
        r"(?:developer|dev|debug|maintenance|admin)\s+mode",
    ),
    _rule(
        "role_hijack",
        0.7,
        "unrestricted unfiltered uncensored jailbroken evil rogue amoral liberated",
        rf"\b(?:you\s+are|you{_Q}re|as)\s+(?:now\s+)?(?:an?\s+)?(?:unrestricted|unfiltered"
        r"|uncensored|jailbroken|evil|rogue|amoral|liberated)\s+(?:ai|assistant|model|chatbot"
        r"|agent|bot|version|persona|terminal|shell)",
    ),
    _rule(
        "role_hijack",
        0.55,
        "unrestricted unfiltered uncensored jailbroken",
        r"\ban?\s+(?:unrestricted|unfiltered|uncensored|jailbroken)\s+(?:ai|assistant|model"
        r"|chatbot|agent|bot|shell)\b|unfiltered\s+ai\b",
    ),
    _rule(
        "role_hijack",
        0.65,
        "longer & you",
        r"you\s+are\s+no\s+longer\s+(?:(?:an?|the)\s+[\w-]+\s+(?:[\w-]+\s+)?(?:assistant|ai"
        r"|bot|model|agent|chatbot)|an\s+(?:ai|assistant)|bound|restricted|limited|chatgpt"
        r"|claude)",
    ),
    _rule(
        "role_hijack",
        0.6,
        "bound restricted limited constrained openai anthropic",
        r"(?:not|never|no\s+longer)\s+(?:be\s+)?(?:bound|restricted|limited|constrained)\s+by\s+"
        r"(?:any\s+)?(?:rules|policies|guidelines|restrictions|ethics|openai|anthropic|your)"
        r"|\bno\s+(?:openai|anthropic|content)(?:\s+or\s+\w+)?\s+(?:rules|policy|policies)\s+"
        r"(?:apply|applies)",
    ),
    _rule(
        "role_hijack",
        0.6,
        "guidelines restrictions rules filters limits censorship & no",
        r"\b(?:has|have|with)\s+no\s+(?:ethical\s+)?(?:guidelines|restrictions|rules|filters"
        r"|limits|content\s+filters|censorship)\b",
    ),
    _rule(
        "role_hijack",
        0.45,
        "restrictions limits filters censorship & without",
        r"(?:respond|answer|reply|comply)\s+(?:to\s+(?:the\s+user|me|everything)\s+)?"
        r"(?:\w+\s+)?without\s+(?:any\s+)?(?:restrictions|limits|filters|censorship)"
        r"|without\s+any\s+restrictions\b",
    ),
    _rule(
        "role_hijack",
        0.6,
        "system root superuser sudo terminal shell unrestricted unfiltered "
        "jailbroken dan grandmother grandma & act behave operate function respond",
        r"\b(?:act|behave|operate|function|respond)\s+(?:as|like)\s+(?:the\s+|an?\s+|my\s+)?"
        r"(?:system\b|root\b|superuser|sudo\b|(?:linux\s+)?terminal|shell\b|unrestricted"
        r"|unfiltered|jailbroken|dan\b|(?:late\s+|deceased\s+)?grandm)",
    ),
    _rule(
        "role_hijack",
        0.4,
        "admin administrator & act behave operate",
        r"\b(?:act|behave|operate)\s+(?:as|like)\s+(?:the\s+|an?\s+)?(?:admin|administrator)\b",
    ),
    _rule(
        "role_hijack",
        0.6,
        "pretend roleplay role play simulate yourself ais",
        rf"pretend\s+(?:to\s+be|you\s+are|you{_Q}re|that\s+you\s+(?:are|have))\s+(?:an?\s+)?"
        r"(?:ai|assistant|model|chatbot|unrestricted|unfiltered|different|evil|jailbroken|free"
        r"|system|admin|developer|dan|no\s+)|\b(?:role-?\s?play|play)\s+as\s+\w*gpt\b"
        r"|version\s+of\s+yourself\s+(?:that|which|who)\s+(?:has|have|is)\s+(?:no|not|free)"
        r"|(?:respond|answer)\s+as\s+two\s+(?:ais|assistants|bots)",
    ),
    _rule(
        "role_hijack", 0.45, "roleplay role", r"role-?\s?play\s+as\s+\w+,?\s+(?:who|which|an?\s+ai)"
    ),
    _rule(
        "role_hijack",
        0.7,
        "<| <<sys [inst [/inst",
        r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|(?:start|end)_header_id\|>|<<sys>>"
        r"|\[/?inst\]|<\|endoftext\|>",
    ),
    _rule("role_hijack", 0.6, "[system] <system>", r"\[system\]|<system>"),
    _rule(
        "role_hijack",
        0.6,
        "system & message override instruction notice update note prompt #",
        r"system\s+(?:message|override|instruction|notice|update|note|prompt)\s*:"
        r"|(?:^|\n)\s*#{1,4}\s*system\s*:",
    ),
    _rule(
        "role_hijack",
        0.5,
        "developer creator programmer operator",
        rf"\b(?:i\s+am|i{_Q}m|this\s+is)\s+(?:your|the)\s+(?:developer|creator|programmer|operator"
        r"|system\s+administrator)\b",
    ),
    _rule(
        "role_hijack",
        0.5,
        "verified authorised authorized administrator",
        r"user\s+(?:is|has\s+been)\s+verified\s+as\s+an?\s+admin|(?:has|have)\s+authori[sz]ed"
        r"\s+you\s+to\b|you\s+are\s+now\s+the\s+administrator\b",
    ),
    _rule(
        "role_hijack",
        0.55,
        "persona identity name directive prompt instructions rules programming purpose & new",
        r"your\s+new\s+(?:persona|identity|name|directive|system\s+prompt|instructions|rules"
        r"|programming|purpose)\s+(?:is|are)\b",
    ),
    _rule(
        "role_hijack",
        0.3,
        "role objective goal task & new",
        r"your\s+new\s+(?:role|objective|goal|task)\s+(?:is|are)\b",
    ),
    # "From now on, you will receive the report on Mondays" is ordinary mail: weak alone.
    _rule(
        "role_hijack",
        0.35,
        "now point henceforth forward & you",
        r"(?:from\s+now\s+on|from\s+this\s+point\s+(?:on|forward)|henceforth|going\s+forward),?"
        r"\s+you\s+(?:are|will|must|shall|should|have\s+to|answer|respond|obey|only|take)\b",
    ),
    _rule(
        "role_hijack",
        0.55,
        "disabled turned removed lifted suspended deactivated switched god upgraded",
        r"(?:safety|content)\s+(?:settings|filters?|policy|policies|guardrails|safeguards)\s+"
        r"(?:have|has|are|is)\s+(?:been\s+)?(?:now\s+)?(?:disabled|turned\s+off|removed|lifted"
        r"|suspended|deactivated)|(?:safeguards|guardrails|filters|restrictions)\s+(?:turned"
        r"|switched)\s+off|\bgod\s+mode\b|upgraded\s+to\s+.{0,40}\b(?:allowed|permitted)\s+to",
    ),
    _rule(
        "role_hijack",
        0.55,
        "tu vous eres bist sei agis agissez act\u00faa comportati",
        r"\b(?:tu\s+es|vous\s+\u00eates)\s+(?:maintenant|d\u00e9sormais|\u00e0\s+pr\u00e9sent)\b"
        r"|\b(?:ahora|a\s+partir\s+de\s+ahora)\s+eres\b|\bdu\s+bist\s+(?:jetzt|nun|ab\s+sofort"
        r"|ab\s+jetzt)\b|\bsei\s+ora\b|\b(?:agis|agissez)\s+comme\s+(?:le\s+|un\s+)?(?:syst\u00e8me"
        r"|administrateur|root)|act\u00faa\s+como\s+(?:el\s+|un\s+)?(?:sistema|administrador)"
        r"|comportati\s+come\s+un\s+assistente\s+senza",
    ),
    _rule(
        "role_hijack",
        0.45,
        "sans sin ohne senza sem ninguna",
        r"sans\s+aucune\s+restriction|\bsin\s+restricciones\b|\bohne\s+(?:jegliche\s+)?"
        r"einschr\u00e4nkungen|senza\s+limiti\b|\bsem\s+restri\u00e7\u00f5es|ninguna\s+norma\b",
    ),
    # --- secret_exfiltration -----------------------------------------------------------------
    _rule(
        "secret_exfiltration",
        0.75,
        "prompt message instructions context preprompt pre & your",
        r"\b(?:print|reveal|show|display|output|repeat|recite|tell|give|share|leak|dump|disclose"
        r"|write\s+out|return|expose|paste|quote|list|spell\s+out|translate|send|email|what\s+"
        r"(?:is|are|was|were|did))\s+(?:me\s+|us\s+)?(?:\w+\s+){0,4}?your\s+(?:\w+\s+){0,2}?"
        r"(?:system\s+(?:prompt|message)|prompt|initial\s+instructions|hidden\s+instructions"
        r"|secret\s+instructions|confidential\s+instructions|context\s+window|developer\s+message"
        r"|pre-?prompt)\b",
    ),
    _rule(
        "secret_exfiltration",
        0.5,
        "prompt message instructions window & system initial hidden context",
        r"\b(?:print|reveal|show|display|output|repeat|recite|leak|dump|disclose|expose|quote"
        r"|spell\s+out)\s+(?:me\s+)?(?:\w+\s+){0,3}?(?:system\s+(?:prompt|message)|initial\s+prompt"
        r"|hidden\s+(?:instructions|prompt)|context\s+window)\b",
    ),
    _rule(
        "secret_exfiltration",
        0.6,
        "instructions configuration config rules guidelines secrets "
        "credentials & your & print reveal show display output repeat dump disclose expose leak "
        "list",
        r"\b(?:print|reveal|show|display|output|repeat|dump|disclose|expose|leak|list)\s+(?:me\s+)?"
        r"(?:all\s+)?your\s+(?:\w+\s+){0,2}?(?:instructions|configuration|config|rules|guidelines"
        r"|secrets|credentials)\b",
    ),
    _rule(
        "secret_exfiltration",
        0.6,
        "given told provided & you",
        r"(?:instructions|rules|prompt|guidelines|directives)\s+(?:that\s+)?you\s+(?:were|have"
        rf"\s+been|{_Q}ve\s+been)\s+(?:given|told|provided)",
    ),
    _rule(
        "secret_exfiltration",
        0.7,
        "above before far preceding starting context & repeat print "
        "output copy return recite reproduce starting everything",
        r"\b(?:repeat|print|output|copy|return|recite|reproduce)\s+(?:back\s+)?(?:all\s+(?:of\s+)?"
        r"|everything\s+|the\s+)?(?:the\s+)?(?:text|words|content|messages?|everything)?\s*"
        r"(?:above|before|so\s+far|preceding)|starting\s+(?:from|with)\s+['\"\u201c\u2018]?you"
        r"\s+are\b|everything\s+in\s+your\s+context",
    ),
    _rule(
        "secret_exfiltration",
        0.45,
        f"{_SECRET_W} & {_SEND_W}",
        rf"\b(?:{_SEND_W.replace(' ', '|')}|e-mail)\s+(?:me\s+|us\s+)?"
        r"(?:(?!you\b)[\w.'\u2019-]+\s+){0,4}?" + _SECRET,
    ),
    _rule(
        "secret_exfiltration",
        0.5,
        "key keys password secret token credentials & what",
        rf"what(?:\s+is|{_Q}s|\s+are)\s+(?:your|the)\s+(?:\w+\s+){{0,3}}?(?:api\s+keys?|password"
        r"|secret\s+key|access\s+token|credentials)\b",
    ),
    _rule(
        "secret_exfiltration",
        0.75,
        f"{_SECRET_W} & {_DEST_W}",
        _SECRET + r"[^.\n]{0,80}?\b" + _DEST,
    ),
    _rule(
        "secret_exfiltration",
        0.6,
        f"conversation thread chat file history & email mail forward send upload post & {_DEST_W}",
        r"(?:e-?mail|forward|send|upload|post)\s+(?:the\s+|this\s+|a\s+copy\s+of\s+(?:this|the)\s+)?"
        r"(?:full\s+|entire\s+|whole\s+)?(?:conversation|thread|chat|file|history)\b[^.\n]{0,40}?"
        r"\b" + _DEST,
    ),
    _rule(
        "secret_exfiltration",
        0.45,
        f"emails email messages message mail correspondence "
        f"documents files contacts & forward send copy bcc cc & all every each & {_DEST_W}",
        r"(?:forward|send|copy|bcc|cc)\s+(?:all|every|each)\s+(?:of\s+the\s+)?(?:e-?mails?"
        r"|messages?|mail|correspondence|documents|files|contacts)\b[^.\n]{0,80}?\b" + _DEST,
    ),
    _rule(
        "secret_exfiltration",
        0.75,
        "![",
        r"!\[[^\]]{0,100}\]\(\s*https?://[^)\s]{0,300}[?&]"
        r"[\w-]+=[^)\s]*(?:\{|\[|%7b|<|\$)",
    ),
    # A URL whose query value is left open is a slot for the agent to fill in with data.
    _rule(
        "secret_exfiltration",
        0.5,
        "= & http https",
        r"https?://[^\s)\"'<>]+[?&][\w-]+=(?=[\s)\"'<>]|$|\{|%7b|<|\[)",
    ),
    _rule(
        "secret_exfiltration",
        0.55,
        "ssh passwd shadow aws env secrets secret rsa & read cat "
        "type open print post upload paste share send dump",
        r"\b(?:read|cat|type|open|print|post|upload|paste|share|send|dump)\s+(?:the\s+)?(?:contents?"
        r"\s+of\s+)?(?:the\s+)?(?:file\s+)?(?:~/\.ssh/\w+|/etc/(?:passwd|shadow)|~/\.aws/credentials"
        r"|\.env\b|secrets?\.ya?ml|id_rsa)",
    ),
    _rule(
        "secret_exfiltration",
        0.6,
        "prompt systemprompt ocultas cach\u00e9es anweisungen "
        "istruzioni & imprime muestra revela affiche montre r\u00e9v\u00e8le donne zeige gib "
        "drucke mostra rivela mostre revele",
        r"\b(?:imprime|muestra|revela|affiche|montre|r\u00e9v\u00e8le|donne|zeige|gib|drucke|mostra"
        r"|rivela|mostre|revele)\s+(?:\w+\s+){0,3}?(?:prompt|systemprompt|instrucciones\s+ocultas"
        r"|instructions\s+cach\u00e9es|anweisungen|istruzioni)",
    ),
    # --- tool_smuggling ----------------------------------------------------------------------
    _rule(
        "tool_smuggling",
        0.7,
        "<tool </tool <function </function <invoke </invoke <antml [tool_call <|tool <|python",
        r"</?(?:tool_calls?|tool_use|function_calls?|invoke|antml:invoke|tool_code|tool_result)\b"
        r"[^>]{0,200}>|\[tool_calls?\]|<\|tool_call\|>|<\|python_tag\|>",
    ),
    _rule(
        "tool_smuggling",
        0.55,
        "function_call tool_call tool_use",
        r"[\"'](?:function_call|tool_calls?|tool_use)[\"']\s*:",
    ),
    _rule(
        "tool_smuggling",
        0.5,
        "arguments args parameters input params & name tool function & {",
        r"[{,]\s*[\"'](?:name|tool|function)[\"']\s*:\s*[\"']([\w.-]+)[\"']\s*,\s*[\"']"
        r"(?:arguments|args|parameters|input|params)[\"']\s*:\s*[{\"']",
    ),
    # Docs say "call the get_invoice function" all the time; only a destructive-looking
    # name (see _DANGEROUS_PARTS) makes this a hit on its own.
    _rule(
        "tool_smuggling",
        0.35,
        "_ & call invoke run execute use trigger fire launch calling invoking executing",
        r"\b(?:call|invoke|run|execute|use|trigger|fire|launch|calling|invoking|executing)\s+"
        r"(?:the\s+|your\s+|this\s+|a\s+)?`?([a-z][\w.]*_[\w.]*)`?\s*(?:\(|tool\b|function\b"
        r"|action\b|command\b|endpoint\b|method\b|skill\b|plugin\b|with\b|for\b|on\b)",
    ),
    _rule(
        "tool_smuggling",
        0.6,
        "tool & use",
        r"\buse\s+(?:the|your)\s+[\w-]+\s+tool\s+to\s+(?:send|delete|forward|transfer|email|post"
        r"|upload|execute|run|grant|pay|share|accept|navigate|export|remove|wipe)",
    ),
    _rule(
        "tool_smuggling",
        0.35,
        "call invoke run execute trigger terminal & assistant agent ai model bot",
        r"\b(?:assistant|agent|ai|model|bot)\s+(?:should|must|needs?\s+to|will|shall)\s+(?:now\s+"
        r"|immediately\s+|automatically\s+)?(?:call|invoke|run|execute|trigger|open\s+the\s+"
        r"terminal)|have\s+the\s+(?:agent|assistant|ai|bot)\s+(?:run|call|execute|invoke|use)\b",
    ),
    _rule(
        "tool_smuggling",
        0.6,
        "rm powershell shadow iex",
        r"\brm\s+-(?:rf|fr|r)\s+(?:/|~|\*|--no-preserve-root)|powershell(?:\.exe)?\s+"
        r"(?:-\w+\s+)*-e(?:nc\w*)?\s+[a-z0-9+/=]{20,}|cat\s+/etc/shadow|iex\s*\(\s*new-object",
    ),
    # Piping a download into a shell is how many install guides start, and DROP TABLE is
    # plain SQL: telling an agent to do either is risky, but the text alone is weak evidence.
    _rule(
        "tool_smuggling",
        0.45,
        "curl wget chmod",
        r"\b(?:curl|wget)\s[^\n|;]{0,200}\|\s*(?:sudo\s+)?(?:ba|z|da)?sh\b"
        r"|chmod\s+(?:-r\s+)?777\s+/",
    ),
    _rule("tool_smuggling", 0.35, "table & drop", r"drop\s+table\b"),
    _rule(
        "tool_smuggling",
        0.4,
        "command script code & execute run",
        r"\b(?:execute|run)\s+(?:the\s+following|this)\s+(?:shell\s+)?(?:command|script|code)"
        r"(?:\s+immediately|\s+now)?\s*:",
    ),
    _rule("tool_smuggling", 0.35, "force & push", r"git\s+push\s+(?:--force|-f)\b"),
    _rule("tool_smuggling", 0.6, "functions", r"functions\.\w+\s*\(|\bto=functions\b"),
    _rule(
        "tool_smuggling",
        0.5,
        "approved authorised authorized & tool function",
        r"(?:tool|function)\s+(?:execution|call|use)\s+(?:is\s+)?(?:pre-?)?(?:approved"
        r"|authori[sz]ed)",
    ),
    _rule(
        "tool_smuggling",
        0.6,
        "herramienta outil werkzeug strumento funci\u00f3n fonction "
        "funktion funzione tool & llama usa ejecuta appelle utilise ex\u00e9cute rufe benutze "
        "f\u00fchre chiama",
        r"\b(?:llama|usa|ejecuta|appelle|utilise|ex\u00e9cute|rufe|benutze|f\u00fchre|chiama)\s+"
        r"(?:a\s+)?(?:la\s+|el\s+|l['\u2019]|das\s+|den\s+|il\s+|lo\s+)?(?:herramienta|outil|tool"
        r"|werkzeug|strumento|funci\u00f3n|fonction|funktion|funzione)\s+`?[a-z]\w*_\w*",
    ),
    # --- encoded_payload: a request to decode and obey ---------------------------------------
    _rule(
        "encoded_payload",
        0.45,
        "decode decoded decipher unscramble rot",
        r"\b(?:decode|decipher|base64[\s-]*decode|rot-?13|unscramble)\b[^.\n]{0,60}?\b(?:follow"
        r"|execute|run|obey|do\s+what|carry\s+out|act\s+on)\b|\b(?:follow|execute|obey)\s+"
        r"(?:the\s+)?(?:decoded|hidden|encoded)\s+(?:instructions|text|message|payload)",
    ),
    # --- addressed_to_ai / concealment: weak alone, they back up other signs -----------------
    _rule(
        "addressed_to_ai",
        0.3,
        _AI_W,
        rf"(?:^|[\n.!?>(\[:]\s*|\b(?:dear|hey|hi|attention|note\s+(?:to|for)(?:\s+the)?"
        rf"|instructions\s+for|prompt\s+for)\s+)(?:the\s+|any\s+|all\s+)?{_AI}(?:\s+(?:readers?"
        rf"|reading|processing|summari[sz]ing|parsing|analy[sz]ing)(?:\s+this(?:\s+\w+)?)?)?\s*[:,]"
        rf"|\bfor\s+(?:the\s+|any\s+|all\s+)?{_AI}\s*:|\bif\s+you\s+are\s+an?\s+{_AI}\b"
        rf"|\b{_AI}\s+(?:reading|processing|summari[sz]ing"
        rf"|parsing|analy[sz]ing)\s+this\b|\bwhen\s+(?:an?\s+|the\s+)?{_AI}\s+(?:reads"
        r"|processes|summari[sz]es)\s+this",
    ),
    _rule(
        "addressed_to_ai",
        0.3,
        "summarising summarizing summarise summarize & when",
        r"when\s+(?:you\s+summari[sz]e|summari[sz]ing)\s+this",
    ),
    _rule(
        "concealment",
        0.3,
        "tell telling mention mentioning inform informing alert alerting "
        "notify notifying reveal revealing & not don never without must",
        rf"(?:do\s+not|don{_Q}?t|never|without|must\s+not)\s+(?:tell(?:ing)?|mention(?:ing)?"
        r"|inform(?:ing)?|alert(?:ing)?|notify(?:ing)?|reveal(?:ing)?)\s+(?:it\s+to\s+)?"
        r"(?:the\s+|this\s+|that\s+)?(?:user|human|customer|change|sentence|instruction"
        r"|operator|them|anyone|it)\b",
    ),
    _rule("concealment", 0.3, "silently secretly", r"\b(?:silently|secretly)\b"),
    _rule(
        "concealment",
        0.3,
        "confirmation approval confirmaci\u00f3n & no without pedir",
        r"\b(?:no|without\s+(?:asking\s+for\s+)?)\s*(?:user\s+)?(?:confirmation|approval)\s*"
        r"(?:needed|required)?|sin\s+pedir\s+confirmaci\u00f3n",
    ),
)


# --- encoded payloads --------------------------------------------------------------------------

# Base64 alphabet to "a", the rest to " ": a run of 24 "a" means a candidate blob, found in
# about 1 µs for 500 chars against ~8 µs for the equivalent regex search. Case does not
# matter here, so the lower-cased text serves.
_B64_BLOB = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{24,}={0,2}")
_HEX_BLOB = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{2}){16,}(?![0-9a-fA-F])")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# --- invisible characters and lookalikes -------------------------------------------------------

_ZW_CHARS = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad\u034f"
_ZW_ANY = re.compile(f"[{_ZW_CHARS}]")
_ZW_IN_WORD = re.compile(
    rf"(?<=[A-Za-z\u0370-\u03ff\u0400-\u04ff])[{_ZW_CHARS}]+(?=[A-Za-z\u0370-\u03ff\u0400-\u04ff])"
)
_TAG_RUN = re.compile("[\U000e0000-\U000e007f]+")
# Subdivision flags (England, Scotland, Wales) are legitimately spelled with tag characters
# after U+1F3F4 WAVING BLACK FLAG and end with CANCEL TAG.
_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")

# Letters from other scripts that render like Latin ones. Written for this scanner (not a copy
# of Unicode's confusables.txt): the Cyrillic, Greek and Armenian letters that attackers
# actually swap into English words, plus a few Latin-extended lookalikes NFKC leaves alone.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic lower case
    "\u0430": "a", "\u0432": "b", "\u0435": "e", "\u0451": "e", "\u0456": "i", "\u0457": "i",
    "\u0458": "j", "\u043a": "k", "\u043c": "m", "\u043d": "h", "\u043e": "o", "\u0440": "p",
    "\u0441": "c", "\u0442": "t", "\u0443": "y", "\u0445": "x", "\u0455": "s", "\u0501": "d",
    "\u051b": "q", "\u051d": "w", "\u04bb": "h", "\u04cf": "l", "\u0261": "g",
    # Cyrillic upper case
    "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M", "\u041d": "H",
    "\u041e": "O", "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0425": "X", "\u0423": "Y",
    "\u0406": "I", "\u0408": "J", "\u0405": "S",
    # Greek
    "\u03b1": "a", "\u03bf": "o", "\u03b9": "i", "\u03bd": "v", "\u03c1": "p", "\u03ba": "k",
    "\u03c4": "t", "\u03c5": "u", "\u03c7": "x", "\u03b5": "e", "\u03b7": "n",
    "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I",
    "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T",
    "\u03a5": "Y", "\u03a7": "X",
    # Armenian and Latin-extended lookalikes
    "\u0585": "o", "\u057d": "u", "\u0570": "h", "\u0578": "n", "\u0251": "a", "\u0131": "i",
    "\u0237": "j", "\u0269": "i",
}  # fmt: skip
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
# Compatibility letters NFKC folds to ASCII (full-width, mathematical alphanumerics, ligatures,
# enclosed and super/subscript letters): the only reason to normalise a text, since CJK
# punctuation (full-width commas and colons in every Chinese sentence), which NFKC also
# rewrites, hides nothing.
_COMPAT_LETTERS = re.compile(
    "[\uff21-\uff3a\uff41-\uff5a\U0001d400-\U0001d7ff\ufb00-\ufb06\u2460-\u24ff\U0001f100-\U0001f1ff"
    "\u2070-\u209f\u2100-\u214f\u1d00-\u1dbf\u02b0-\u02ff]"
)


def _suspect_marker() -> str:
    """A byte pattern for any character _deobfuscate acts on, so that the native pass tells
    whether a non-ASCII text needs it (most French or Chinese text does not; the Python
    searches cost ~25 µs per KB)."""
    ranges = [(0x2460, 0x24FF), (0x2070, 0x209F), (0x2100, 0x214F), (0x1D00, 0x1DBF),
              (0x02B0, 0x02FF), (0xFB00, 0xFB06)]  # fmt: skip
    chars = set(_ZW_CHARS) | set(_CONFUSABLES)
    chars.update(chr(c) for lo, hi in ranges for c in range(lo, hi + 1))
    literals = sorted("".join(f"\\x{b:02x}" for b in c.encode()) for c in chars)
    return "|".join(
        [
            r"\xf3\xa0[\x80\x81][\x80-\xbf]",  # tag characters U+E0000-E007F
            r"\xef\xbc[\xa1-\xba]|\xef\xbd[\x81-\x9a]",  # full-width Latin letters
            r"\xf0\x9d[\x90-\x9f][\x80-\xbf]",  # mathematical alphanumerics
            r"\xf0\x9f[\x84-\x87][\x80-\xbf]",  # enclosed alphanumerics
            *literals,
        ]
    )


_HAS_CONFUSABLE = re.compile(f"[{''.join(_CONFUSABLES)}]")

_WORD = re.compile(r"[^\W\d_]+")

# --- hidden markup -----------------------------------------------------------------------------

_HIDE_STYLE = (
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.\d+)?(?:px|pt|em|rem|%)?"
    r"\s*(?:[;\"']|$)|font-size\s*:\s*[01](?:\.\d+)?px|opacity\s*:\s*0(?:\.0*)?\s*(?:[;\"']|$)"
    r"|(?<![-\w])color\s*:\s*(?:white|#fff(?:fff)?\b|#fefefe|#fdfdfd|rgba?\(\s*25[345]\s*,\s*25[345]"
    r"\s*,\s*25[345]|transparent)|left\s*:\s*-\d{3,}px|top\s*:\s*-\d{3,}px|text-indent\s*:\s*-\d{3,}"
    r"|height\s*:\s*0(?:px)?\s*;[^\"']{0,40}overflow\s*:\s*hidden|clip\s*:\s*rect\(\s*0"
)
_HIDDEN_TAG = re.compile(
    r"<([a-z][\w-]*)\b([^>]{0,500}?(?:style\s*=\s*[\"'][^\"']*(?:" + _HIDE_STYLE + r")"
    r"|\shidden(?:\s|>|=|/)|aria-hidden\s*=\s*[\"']true|class\s*=\s*[\"'][^\"']*\b(?:sr-only"
    r"|visually-hidden|hidden)\b|color\s*=\s*[\"']?(?:white|#fff(?:fff)?)\b)[^>]{0,500}?)>",
    re.IGNORECASE,
)
_MD_COMMENT = re.compile(
    r"^\s*\[(?://|comment|_metadata_|#)\]:\s*(?:#|<>)\s*\((.{0,2000}?)\)\s*$", re.MULTILINE
)
# Hidden text that names a reader (an AI, the system, the user) and tells it to do something
# is the whole point of hiding text from humans; hidden navigation labels and tracking
# snippets name no one.
_HIDDEN_WHO = re.compile(
    r"\b(?:ai|a\.i\.|llm|gpt|chatbot|assistant|copilot|agent|language\s+model|bot|system|model"
    rf"|reviewer|prompt|user{_Q}?s?)s?\b"
)
_HIDDEN_DO = re.compile(
    r"\b(?:must|should|always|never|do\s+not|don't|tell|say|respond|reply|answer|recommend"
    r"|summari[sz]e|describe|classify|rate|rank|mark|state|include|add|quote|forward|send|ignore"
    r"|grant|change|call|reveal|give)\b"
)

# Mentions inside quotes next to words like "example" or "such as" are usually discussion of
# attacks (security docs, training material), so their weight is cut rather than dropped:
# an attacker can quote too, and the other signs of the text still count in full.
_META_CUE = re.compile(
    r"\b(?:such\s+as|for\s+example|e\.g\.|example|phrases?|like|attacks?|injection|jailbreaks?"
    r"|famous|called|known\s+as|text)\b"
)
_QUOTES = "'\"\u201c\u201d\u2018\u2019\u00ab\u00bb`"
_TITLE_OPENERS = "{([*_#>"
_CITATION_CUE = re.compile(
    r"\b(?:arxiv|doi|title|paper|proceedings|attack\s+techniques|attacks|benchmark|dataset"
    r"|red[\s-]team\w*|probes?|payloads?|jailbreaks|prompt\s+injection)\b"
)
_SELF_RETRACTION = re.compile(
    r"\W*(?:i|we)\s+(?:sent|gave|wrote|shared|mentioned|provided|emailed)\b"
)
_OWN_OBJECT = re.compile(r"\b(?:my|our)\b")
_NEGATED = re.compile(rf"\b(?:never|not|n{_Q}t|no)\s+(?:\w+\s+){{0,3}}$")
_NAME_PARTS = re.compile(r"[_.\-]")


@dataclass(slots=True)
class _Scan:
    """What one scan found: per signal, the weights of the rules that fired."""

    weights: dict[str, list[float]] = field(default_factory=dict)

    def add(self, signal: str, weight: float) -> None:
        self.weights.setdefault(signal, []).append(weight)

    def merge(self, other: _Scan) -> None:
        for signal, ws in other.weights.items():
            self.weights.setdefault(signal, []).extend(ws)

    def raw(self) -> float:
        keep = 1.0
        for ws in self.weights.values():
            ws = sorted(ws, reverse=True)
            # Repeats of one kind of sign add a little (a text that says "ignore previous
            # instructions" three ways is more likely an attack) but cannot compound into
            # certainty the way independent kinds of sign do.
            w = ws[0] + (1.0 - ws[0]) * min(0.5, 0.25 * sum(ws[1:]))
            keep *= 1.0 - min(w, 0.97)
        return 1.0 - keep


def _adjust(rule: _Rule, low: str, m: re.Match[str]) -> float:
    weight = _adjust_weight(rule.signal, rule.weight, low, m)
    if rule.signal == "tool_smuggling" and m.lastindex and weight:
        if not _DANGEROUS_PARTS.isdisjoint(_NAME_PARTS.split(m.group(1))):
            weight = min(0.95, weight + 0.2)
    return weight


def _adjust_weight(signal: str, weight: float, low: str, m: re.Match[str]) -> float:
    start = m.start()
    before = low[max(0, start - 120) : start]
    if before.rstrip()[-1:] in _QUOTES and before.strip() and _META_CUE.search(before):
        weight *= 0.4
    elif before.rstrip()[-1:] in _TITLE_OPENERS and _CITATION_CUE.search(
        low, max(0, start - 120), m.end() + 120
    ):
        # A title or emphasis in writing about attacks: "title = {Ignore Previous Prompt:
        # Attack Techniques for Language Models}", "**Ignore previous instructions** attacks".
        weight *= 0.4
    if signal == "instruction_override" and (
        _OWN_OBJECT.search(m.group(0)) or _SELF_RETRACTION.match(low, m.end())
    ):
        # "ignore my previous instructions", "ignore the instructions I sent": the writer
        # retracting their own words, which business mail does all the time.
        weight *= 0.4
    elif signal == "secret_exfiltration" and _NEGATED.search(before[-40:]):
        # "never share your password", "we will never ask you to send credentials": a
        # warning against the very act, not a request for it.
        weight = 0.0
    return weight


def _run_rule(rule: _Rule, low: str, acc: _Scan) -> None:
    best = 0.0
    for m in rule.pattern.finditer(low):
        best = max(best, _adjust(rule, low, m))
        if best >= rule.weight:
            break
    if best:
        acc.add(rule.signal, best)


def _deobfuscate(text: str, acc: _Scan) -> str:
    """Undo invisible-character and lookalike tricks; record the tricks themselves."""
    hidden_tags = ""
    if _TAG_RUN.search(text):
        runs = _TAG_RUN.findall(_FLAG_TAGS.sub("", text))
        if runs:
            hidden_tags = "".join(chr(ord(c) - 0xE0000) for run in runs for c in run)
            acc.add("zero_width", 0.5)
        text = _TAG_RUN.sub("", text)
    if _ZW_ANY.search(text):
        inside = len(_ZW_IN_WORD.findall(text))
        if inside:
            acc.add("zero_width", 0.3 if inside < 3 else 0.4)
        text = _ZW_ANY.sub("", text)
    if _COMPAT_LETTERS.search(text) and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    if _HAS_CONFUSABLE.search(text):
        text = _map_confusables(text, acc)
    if hidden_tags:
        # Its own paragraph, so it is scanned like any visible text.
        text = f"{text}\n{hidden_tags}"
    return text


def _map_confusables(text: str, acc: _Scan) -> str:
    words = _WORD.findall(text)
    latin = sum(len(w) for w in words if w.isascii())
    total = sum(len(w) for w in words) or 1
    # A wholly-lookalike word ("ѕуѕтем") only counts inside mostly Latin text; in Russian or
    # Greek prose such words are just words.
    mostly_latin = latin / total >= 0.7
    mixed = 0

    def fix(m: re.Match[str]) -> str:
        nonlocal mixed
        w = m.group(0)
        if w.isascii() or not _HAS_CONFUSABLE.search(w):
            return w
        if not all(c.isascii() or c in _CONFUSABLES for c in w):
            return w
        if any(c.isascii() for c in w) or (mostly_latin and len(w) >= 3):
            mixed += 1
            return w.translate(_CONFUSABLE_TABLE)
        return w

    out = _WORD.sub(fix, text)
    if mixed:
        acc.add("homoglyph", 0.3 if mixed == 1 else 0.4 if mixed < 4 else 0.5)
    return out


def _hidden_regions(text: str) -> list[str]:
    regions: list[str] = []
    start = text.find("<!--")
    while start >= 0 and len(regions) < _MAX_HIDDEN_REGIONS:
        # str.find rather than a lazy DOTALL regex: thousands of unclosed "<!--" would make
        # the regex rescan the same 2 KB from every one of them. An unclosed comment hides
        # the rest of the page, so it counts up to the cap.
        end = text.find("-->", start + 4, start + 4 + _MAX_HIDDEN_CHARS)
        stop = end if end >= 0 else start + 4 + _MAX_HIDDEN_CHARS
        regions.append(text[start + 4 : stop])
        start = text.find("<!--", stop)
    if "]:" in text:
        regions += _MD_COMMENT.findall(text)[:_MAX_HIDDEN_REGIONS]
    if "<" in text:
        for m in _HIDDEN_TAG.finditer(text):
            if len(regions) >= _MAX_HIDDEN_REGIONS:
                break
            after = text[m.end() : m.end() + _MAX_HIDDEN_CHARS]
            close = re.search(f"</{re.escape(m.group(1))}", after, re.IGNORECASE)
            # The tag's own attributes (alt, title...) are hidden text too.
            regions.append(m.group(2) + " " + after[: close.start() if close else 300])
    return regions


def _scan_hidden(text: str, acc: _Scan) -> None:
    for region in _hidden_regions(text):
        low = region.lower()
        inner = _Scan()
        _apply_families(region.encode("utf-8", "replace"), MATCHER.scan(region), inner)
        if inner.weights or (_HIDDEN_WHO.search(low) and _HIDDEN_DO.search(low)):
            acc.add("hidden_markup", 0.55)
            return


def _decode_blob(blob: str) -> str | None:
    try:
        if len(blob) % 2 == 0 and _HEX_DIGITS.issuperset(blob):
            raw = bytes.fromhex(blob)
        else:
            body = blob.rstrip("=")
            padded = body + "=" * (-len(body) % 4)
            altchars = b"-_" if ("-" in body or "_" in body) else None
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not decoded or sum(c.isprintable() or c in "\n\t" for c in decoded) < 0.9 * len(decoded):
        return None
    # Instructions are sentences; ids, hashes and tokens rarely hold several spaces. A blob
    # that decodes to another blob is kept so that the rescan can peel the next layer.
    if decoded.count(" ") < 2 and not _B64_BLOB.fullmatch(decoded.strip()):
        return None
    return decoded


def _scan_encoded(text: str, acc: _Scan, depth: int) -> None:
    blobs = _B64_BLOB.findall(text)[:_MAX_BLOBS]
    blobs += _HEX_BLOB.findall(text)[: _MAX_BLOBS - len(blobs)]
    # A hex string is also a base64 candidate; decoding it twice would count it twice.
    for blob in dict.fromkeys(blobs):
        decoded = _decode_blob(blob[:_MAX_BLOB_CHARS])
        if decoded is None:
            continue
        inner = _scan(decoded, depth + 1, thorough=True)
        inner_raw = inner.raw()
        if inner_raw >= 0.3:
            acc.merge(inner)
            acc.add("encoded_payload", max(0.55, inner_raw))
        elif " " in decoded:
            # Readable prose wrapped in an encoding is itself a way of hiding it from a
            # human reader; weak alone, it backs up other signs.
            acc.add("encoded_payload", 0.3)


class _Matcher:
    """All of FAMILIES and MARKERS in one Hyperscan database: ``scan`` returns the ids that
    occur. Family i has id i; marker j has id len(FAMILIES) + j."""

    def __init__(self, patterns: list[str], single: frozenset[int] = frozenset()) -> None:
        self.patterns = patterns
        self.fallback: list[re.Pattern[str]] | None = None
        if hyperscan is None:
            self.fallback = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in patterns]
            return
        flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_MULTILINE
        # Byte semantics throughout: "[^\n]{0,160}" over UTF-8 characters is a bounded repeat
        # Hyperscan cannot compile, and UTF-8 mode made the pass 5x slower on non-ASCII text.
        # Over bytes a non-ASCII letter is its UTF-8 sequence (classes holding one are
        # rewritten as alternations) and a gap of n characters is a gap of up to 3n bytes.
        # Markers report their first match only; families and rules every match, because a
        # first match the Python check rejects (a quoted example, "never share your
        # password") must not hide a later one.
        all_flags = [
            flags | hyperscan.HS_FLAG_SINGLEMATCH if i in single else flags
            for i in range(len(patterns))
        ]
        self.db = _cached_database([_bytewise(p) for p in patterns], all_flags)

    def scan(self, text: str) -> dict[int, list[int]]:
        """{pattern id: byte offsets in ``text.encode()`` where its matches end}, at most
        _MAX_WINDOWS of them, each more than _NEXT_WINDOW bytes after the one before."""
        data = text.encode("utf-8", "replace")
        found: dict[int, list[int]] = {}
        if self.fallback is not None:
            for i, p in enumerate(self.fallback):
                for m in p.finditer(text):
                    _on_match(i, 0, len(text[: m.end()].encode("utf-8", "replace")), 0, found)
            return found
        # "replace": a lone surrogate cannot be encoded; its "?" changes no match.
        self.db.scan(data, match_event_handler=_on_match, context=found)
        return found


def _cached_database(patterns: list[str], flags: list[int]) -> object:
    """Compiling the set takes 2-5 s on the shared 2-core machine, once per process: the
    compiled database is kept in the user's cache directory, keyed by the patterns, flags
    and Hyperscan version, and loaded in ~10 ms next time. No cache (read-only home...)
    only costs the compile."""
    key = hashlib.sha256(
        repr((patterns, flags, getattr(hyperscan, "__version__", ""))).encode()
    ).hexdigest()[:20]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "tripwire", f"injection-{key}.hsdb")
    try:
        with open(path, "rb") as f:
            db = hyperscan.loadb(f.read(), hyperscan.HS_MODE_BLOCK)
        db.scratch = hyperscan.Scratch(db)
        return db
    except Exception:  # noqa: BLE001 - no cache, or a stale or corrupt one: compile instead
        pass
    db = hyperscan.Database()
    db.compile(
        expressions=[p.encode() for p in patterns],
        ids=list(range(len(patterns))),
        elements=len(patterns),
        flags=flags,
    )
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(hyperscan.dumpb(db))
        os.replace(tmp, path)
    except OSError:
        pass
    return db


_CLASS = re.compile(r"\[([^\]\\^]*[^\x00-\x7f][^\]\\]*)\]")
# A gap of "any character" (".", "[^\n]"...) bounded in characters.
_CHAR_GAP = re.compile(r"(\.|\[\^[^\]]*\])\{(\d+),(\d+)\}")
_QUANTIFIED = re.compile(r"([^\x00-\x7f])(?=[?*+{])")


def _bytewise(pattern: str) -> str:
    """``pattern`` for a byte-mode database (the Python regex, run on the match's window,
    then decides): ``\\w`` also takes any non-ASCII byte (a letter of "sys忽略" is one to
    Python), ``[üu]`` becomes ``(?:ü|u)``, ``的?`` becomes ``(?:的)?`` and ``.{0,12}``
    becomes ``.{0,36}``. ``\\b`` keeps its byte meaning: next to a non-ASCII letter it can
    differ from Python's, which is why texts with such letters first go through
    _deobfuscate only when they hold lookalikes."""
    pattern = _widen_words(pattern)
    # A gap of n characters is up to 3n bytes of CJK text (4n only for emoji, not worth the
    # larger automaton).
    pattern = _CHAR_GAP.sub(lambda m: f"{m[1]}{{{m[2]},{3 * int(m[3])}}}", pattern)
    if pattern.isascii():
        return pattern
    pattern = _CLASS.sub(lambda m: "(?:" + "|".join(m.group(1)) + ")", pattern)
    # A quantifier after a multi-byte letter must apply to all of its bytes.
    return _QUANTIFIED.sub(r"(?:\1)", pattern)


def _widen_words(pattern: str) -> str:
    out: list[str] = []
    i, class_start = 0, -1  # index of the open class's first member, -1 outside a class
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            esc = pattern[i : i + 2]
            if esc == "\\w":
                out.append("\\w\\x80-\\xff" if class_start >= 0 else "[\\w\\x80-\\xff]")

            else:
                out.append(esc)
            i += 2
            continue
        if class_start >= 0:
            if c == "]" and i > class_start:
                class_start = -1
        elif c == "[":
            # A "]" right after "[" or "[^" is a member, not the end.
            class_start = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
        out.append(c)
        i += 1
    return "".join(out)


def _on_match(pattern_id: int, start: int, end: int, flags: int, found: dict) -> None:
    ends = found.get(pattern_id)
    if ends is None:
        found[pattern_id] = [end]
    elif end - ends[-1] > _NEXT_WINDOW and len(ends) < _MAX_WINDOWS:
        ends.append(end)


# A later match of one pattern is looked at only if it ends past the window of the one before
# (whose Python check already saw it); a text gets at most this many windows per pattern.
_NEXT_WINDOW = 700
_MAX_WINDOWS = 8


_LOOKAROUND = re.compile(r"\(\?(?:<[=!]|[=!])")
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _native_rule(pattern: str) -> str:
    """A rule's regex for Hyperscan: ``\\u2019`` escapes written out, look-arounds dropped
    (Hyperscan has none; the match it reports is then a superset, which the Python regex,
    run on the match's window, narrows back)."""
    pattern = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), pattern)
    while m := _LOOKAROUND.search(pattern):
        pattern = pattern[: m.start()] + pattern[_group_end(pattern, m.start()) :]
    return pattern


def _group_end(pattern: str, start: int) -> int:
    """Index just past the group opening at ``start``, skipping escapes and classes."""
    depth, i, in_class = 0, start, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(pattern)


# One database, in this id order: the families, the markers, the suspect-character marker,
# then every rule of the rule engine (so a rule runs in Python only where its own regex
# matched natively, never because a common word of it occurs somewhere in the text).
MATCHER = _Matcher(
    [f.pattern for f in FAMILIES]
    + list(MARKERS)
    + [_suspect_marker()]
    + [_native_rule(r.pattern.pattern) for r in _RULES],
    single=frozenset(range(len(FAMILIES), len(FAMILIES) + len(MARKERS) + 1)),
)
_N_FAMILIES = len(FAMILIES)
_ID_HIDDEN, _ID_BLOB, _ID_ESCAPE = (_N_FAMILIES + MARKERS.index(m) for m in MARKERS)
_ID_SUSPECT = _N_FAMILIES + len(MARKERS)
_FIRST_RULE_ID = _ID_SUSPECT + 1
# The Python form of each family, run only on a text where Hyperscan found that family, to
# see where it matched (quoted as an example? negated? the writer's own instructions?).
_FAMILY_RES: dict[int, re.Pattern[str]] = {}
# Bytes before a family's match end that its Python check reads: the longest family match
# (two 160-character gaps) plus the 120 characters the quoting check looks back over.
_FAMILY_WINDOW = 900
_SAME_PHRASE = 80

_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
# (A regex, not str.translate: translate's per-character lookup costs ~50 µs per KB.)
_ODD_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_BACKSLASH = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[nrt\"'/\\])")
_BACKSLASH_CHARS = {"n": "\n", "r": "\r", "t": "\t"}


def _unescape(text: str) -> str:
    """The text as its reader sees it: JSON/YAML/Python string escapes, HTML entities and URL
    escapes undone, so that ``\\u0069gnore`` or ``&#105;gnore`` match like ``ignore``."""

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if len(code) > 1:
            return chr(int(code[1:], 16))
        return _BACKSLASH_CHARS.get(code, code)

    if "\\" in text:
        text = _BACKSLASH.sub(one, text)
    if "&" in text:
        text = html.unescape(text)
    if "%" in text and len(_PERCENT.findall(text)) >= 3:
        # One "%20" in a link changes no word; a run of them can spell one.
        text = unquote(text)
    # Unicode spaces (no-break, thin, ideographic...; "&nbsp;" once unescaped) separate words
    # for Python's \s but not for the native pass's: one kind of space for both.
    return _ODD_SPACE.sub(" ", text)


def _window(data: bytes, end: int) -> str:
    # Hyperscan reports the shortest match ("instr" of "instructions"): the window runs on
    # past it, for the rest of the word and the words after it ("...I sent"), and over the
    # later matches _on_match skipped because they end within _NEXT_WINDOW of this one.
    start = max(0, end - _FAMILY_WINDOW)
    return data[start : end + _NEXT_WINDOW + 80].decode("utf-8", "ignore").lower()


def _apply_families(data: bytes, found: dict[int, int], acc: _Scan) -> None:
    """Weigh each family and rule Hyperscan found, looking at its match with Python ``re`` in
    a window that ends where Hyperscan's first match ended: the window bounds the work (word
    gaps could otherwise backtrack over a whole document) and holds the 120 characters before
    the match that the quoting and negation checks read."""
    signs: dict[str, list[tuple[int, float]]] = {}
    for i, ends in found.items():
        if i >= _FIRST_RULE_ID:
            rule = _RULES[i - _FIRST_RULE_ID]
            signal, weight, pattern = rule.signal, rule.weight, rule.pattern
        elif i < _N_FAMILIES:
            family = FAMILIES[i]
            signal, weight = family.signal, family.weight
            pattern = _FAMILY_RES.get(i)
            if pattern is None:
                pattern = _FAMILY_RES[i] = re.compile(family.pattern, re.I | re.M)
            rule = None
        else:
            continue
        for end in ends:
            low = _window(data, end)
            best = 0.0
            for m in pattern.finditer(low):
                adjusted = (
                    _adjust(rule, low, m) if rule else _adjust_weight(signal, weight, low, m)
                )
                best = max(best, adjusted)
                if best >= weight:
                    break
            if best:
                signs.setdefault(signal, []).append((end, best))
    # Matches of one signal that end within _SAME_PHRASE bytes of each other are one phrase
    # that several families and rules know ("ignore all previous instructions" is in five):
    # one sign, its best weight. Only separate phrases count as repeats.
    for signal, found_signs in signs.items():
        found_signs.sort()
        last_end, best = found_signs[0]
        for end, weight in found_signs[1:]:
            if end - last_end <= _SAME_PHRASE:
                best = max(best, weight)
            else:
                acc.add(signal, best)
                best = weight
            last_end = end
        acc.add(signal, best)


def _scan(text: str, depth: int = 0, thorough: bool = False) -> _Scan:
    """``thorough``: look for hidden regions even without a hidden-style marker (decoded
    blobs)."""
    acc = _Scan()
    ids = MATCHER.scan(text)
    if _ID_ESCAPE in ids:
        unescaped = _unescape(text)
        if unescaped != text:
            text = unescaped
            ids = MATCHER.scan(text)
    if _ID_SUSPECT in ids:
        text = _deobfuscate(text, acc)
        ids = MATCHER.scan(text)
        ids.pop(_ID_SUSPECT, None)
    # The pre-filter: no family, no marker of hidden, encoded or template content, nothing
    # de-obfuscated: most benign text stops here after one native pass over its bytes.
    ids.pop(_ID_ESCAPE, None)
    if not ids and not acc.weights:
        return acc
    _apply_families(text.encode("utf-8", "replace"), ids, acc)
    if _ID_HIDDEN in ids or ((thorough or acc.weights) and "<" in text):
        _scan_hidden(text, acc)
    if _ID_BLOB in ids and depth < _MAX_DECODE_DEPTH:
        _scan_encoded(text, acc, depth)
    return acc


def scan_text(
    text: str | None,
    source_trust: str | None = None,
    threshold: float = HIT_THRESHOLD,
) -> ScanResult:
    """Score ``text`` for signs of prompt injection.

    ``source_trust`` is the step's ``SourceTrust`` ("internal", "partner", "external") or
    None (treated as partner). Any other value is a caller bug and raises ``ValueError``;
    the text itself never makes this function raise.
    """
    if source_trust not in _TRUST_EXPONENT:
        raise ValueError(f"unknown source_trust {source_trust!r}")
    if not text:
        return ScanResult(0.0, False, [])
    truncated = len(text) > MAX_SCAN_CHARS
    if truncated:
        text = text[:_HEAD_CHARS] + "\n" + text[-_TAIL_CHARS:]
    acc = _scan(text)
    score = acc.raw() ** _TRUST_EXPONENT[source_trust] if acc.weights else 0.0
    score = round(min(1.0, max(0.0, score)), 4)
    signals = sorted(acc.weights)
    if truncated:
        signals.append("truncated")
    return ScanResult(score, score >= threshold, signals)


def scan_lines(inp: TextIO, out: TextIO) -> int:
    """`tripwire scan`: one JSON result line per JSON input line.

    Input lines are ``{"text": str | null, "source_trust": "internal" | "partner" |
    "external" | null}``. A line that is not such an object (bad JSON, wrong types, unknown
    trust, blank) gets ``{"error": reason, "line": n}`` in its place and the scan goes on, so
    outputs stay aligned with inputs. Returns 1 if any line was malformed, else 0, so a
    pipeline notices bad input without losing the good results.
    """
    status = 0
    for n, line in enumerate(inp, start=1):
        error = None
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            error = f"invalid JSON: {e.msg}" if line.strip() else "empty line"
        else:
            error = _input_error(item)
        if error:
            status = 1
            out.write(json.dumps({"error": error, "line": n}) + "\n")
            continue
        r = scan_text(item.get("text"), item.get("source_trust"))
        out.write(json.dumps({"score": r.score, "hit": r.hit, "signals": r.signals}) + "\n")
    return status


def _input_error(item: object) -> str | None:
    if not isinstance(item, dict):
        return "line is not a JSON object"
    if "text" not in item:
        return 'missing "text"'
    if item["text"] is not None and not isinstance(item["text"], str):
        return '"text" must be a string or null'
    if item.get("source_trust") not in _TRUST_EXPONENT:
        return '"source_trust" must be "internal", "partner", "external" or null'
    return None
