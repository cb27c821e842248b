"""Import gitleaks' secret rules as data: sinks/data/secret_rules.json (used by sinks/masking.py)
and tests/data/gitleaks_samples.json (sample secrets of each rule, for the masking tests).

gitleaks (https://github.com/gitleaks/gitleaks, MIT licence, Copyright (c) 2019 Zachary Rice)
maintains ~220 rules for vendors' published token formats. Only data is taken: each rule's id,
regular expression (RE2 syntax, which google-re2 compiles as gitleaks' Go regexp does),
keywords, secret group and entropy threshold; and the literal sample secrets its rule
generator validates against. No code.

Usage: python scripts/import_gitleaks_rules.py /path/to/gitleaks-checkout
(a git checkout; the commit and ``git describe`` version are recorded in the output).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import re2

ROOT = Path(__file__).resolve().parents[1]
RULES_OUT = ROOT / "sinks" / "data" / "secret_rules.json"
SAMPLES_OUT = ROOT / "tests" / "data" / "gitleaks_samples.json"

# Rules left out, with why: they match shapes that are not credentials in agent text, or
# are so broad that they would mask ordinary ids (the hand-written rules in masking.py cover
# the generic key=value case with their own stop list).
# gitleaks ends most patterns with a terminator class written for source code (quote, space,
# semicolon, end); in prose a token is as often followed by ".", ",", or a closing bracket.
CODE_TERMINATOR = r"""(?:[\x60'"\s;]|\\[nr]|$)"""
PROSE_TERMINATOR = r"""(?:[\x60'"\s;.,)\]}>]|\\[nr]|$)"""
# gitleaks' "semi-generic" rules start with the words that name the vendor, then the value
# in group 1; other rules without a secretGroup are masked whole.
SEMI_GENERIC = (r"(?i)[\w.-]{0,50}?(?:", r"[\w.-]{0,50}?(?i:")

SKIPPED = {
    "generic-api-key": "matches any long value after words like 'key' or 'token'; "
    "masking.py's assignment rule covers key=value secrets",
}


def git(checkout: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True,
                          check=True).stdout.strip()


def main(checkout: Path) -> None:
    config = tomllib.loads((checkout / "config" / "gitleaks.toml").read_text())
    rules, rejected = [], {}
    for rule in config["rules"]:
        regex = rule.get("regex")
        if not regex or rule["id"] in SKIPPED:
            continue
        try:
            compiled = re2.compile(regex)
        except re2.error as exc:
            rejected[rule["id"]] = str(exc)
            continue
        group = rule.get("secretGroup")
        if group is None:
            group = 1 if compiled.groups and regex.startswith(SEMI_GENERIC) else 0
        rules.append({
            "id": rule["id"],
            "regex": regex.replace(CODE_TERMINATOR, PROSE_TERMINATOR),
            "keywords": sorted({k.lower() for k in rule.get("keywords", [])}),
            "secret_group": group,
            "entropy": rule.get("entropy", 0.0),
        })
    commit = git(checkout, "rev-parse", "HEAD")
    version = git(checkout, "describe", "--tags")
    header = {
        "source": "https://github.com/gitleaks/gitleaks config/gitleaks.toml",
        "version": version,
        "commit": commit,
        "license": "MIT, Copyright (c) 2019 Zachary Rice",
        "generated_by": "scripts/import_gitleaks_rules.py",
        "skipped": SKIPPED,
        "changes": "terminator " + CODE_TERMINATOR + " widened to " + PROSE_TERMINATOR
        + " (prose); secret_group 0 (whole match) unless gitleaks names one or the rule is"
        " semi-generic (vendor words, then the value in group 1)",
        "rejected_by_re2": rejected,
    }
    RULES_OUT.write_text(json.dumps({**header, "rules": rules}, indent=1) + "\n")

    samples: dict[str, list[str]] = {}
    for path in sorted((checkout / "cmd" / "generate" / "config" / "rules").glob("*.go")):
        for body in path.read_text().split("\nfunc ")[1:]:
            rule_id = re.search(r'RuleID:\s*"([^"]+)"', body)
            if rule_id is None:
                continue
            found = re.findall(r'GenerateSampleSecrets?\(\s*"[^"]*"\s*,\s*"([^"\\]{8,})"\)', body)
            if found:
                samples.setdefault(rule_id.group(1), []).extend(found)
    SAMPLES_OUT.write_text(json.dumps({**header, "samples": samples}, indent=1) + "\n")
    print(f"{len(rules)} rules ({len(rejected)} rejected by re2), samples for {len(samples)}"
          f" rules, gitleaks {version}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
