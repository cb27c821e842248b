"""Secrets in vendors' published formats and personal data of many countries, planted in
realistic sentences, for the masking tests (unit and end to end).

Every secret is synthetic: random characters in the vendor's documented shape (prefix,
alphabet, length), generated from a fixed seed; national ids and card numbers carry valid
check digits. Formats follow the vendors' documentation and gitleaks' rule generator samples
(tests/data/gitleaks_samples.json), which are used as they are where present.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

_RNG = random.Random(1313)
LOWER, UPPER, DIGITS = string.ascii_lowercase, string.ascii_uppercase, string.digits
ALNUM = LOWER + UPPER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"
SAMPLES = json.loads(
    (Path(__file__).parent / "data" / "gitleaks_samples.json").read_text())["samples"]


def r(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def uuid4() -> str:
    return f"{r(HEX, 8)}-{r(HEX, 4)}-4{r(HEX, 3)}-a{r(HEX, 3)}-{r(HEX, 12)}"


@dataclass(frozen=True)
class Planted:
    kind: str
    secret: str
    """The exact text that must not be stored."""
    sentence: str


def _p(kind: str, secret: str, template: str) -> Planted:
    return Planted(kind, secret, template.format(s=secret))


def vendor_secrets() -> list[Planted]:
    aws_secret = r(B64, 40)
    azure_key = r(B64, 86) + "=="
    pem_body = "\n".join(r(B64, 64) for _ in range(6))
    jwt = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9." + r(URLSAFE, 60) + "." + r(URLSAFE, 43))
    out = [
        _p("aws-access-key-id", "AKIA" + r(UPPER + "234567", 16),
           "The CI job failed because AWS access key {s} was revoked yesterday."),
        _p("aws-secret-access-key", aws_secret,
           "export AWS_SECRET_ACCESS_KEY={s} then rerun the terraform plan"),
        _p("gcp-api-key", "AIza" + r(URLSAFE, 35),
           "Maps calls use the browser key {s} restricted to our domain."),
        _p("gcp-service-account-key", f"-----BEGIN PRIVATE KEY-----\n{pem_body}\n"
           "-----END PRIVATE KEY-----",
           'The service account JSON has "private_key": "{s}" in it, do not share.'),
        _p("gcp-oauth-client-secret", "GOCSPX-" + r(URLSAFE, 28),
           "OAuth client for the calendar tool: secret {s}, redirect /callback"),
        _p("azure-storage-connection-string", azure_key,
           "Blob upload used DefaultEndpointsProtocol=https;AccountName=invoicesprod;"
           "AccountKey={s};EndpointSuffix=core.windows.net and timed out."),
        _p("azure-sas-token", r(B64, 43) + "%3D",
           "Download the export from https://invoicesprod.blob.core.windows.net/exports/q3.csv"
           "?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-31T00:00:00Z&sig={s}"),
        _p("azure-ad-client-secret", r(ALNUM, 3) + "8Q~" + r(ALNUM + "_~.-", 34),
           "Entra app registration secret: {s} (expires in 6 months)"),
        _p("azure-service-bus", r(B64, 43) + "=",
           "Endpoint=sb://orders-bus.servicebus.windows.net/;SharedAccessKeyName="
           "RootManageSharedAccessKey;SharedAccessKey={s}"),
        _p("github-pat", "ghp_" + r(ALNUM, 36),
           "I pushed with my token {s}, please rotate it after the release."),
        _p("github-fine-grained-pat", "github_pat_" + r(ALNUM + "_", 82),
           "Fine-grained PAT for the bot: {s}"),
        _p("github-oauth", "gho_" + r(ALNUM, 36), "OAuth token returned by GitHub: {s}"),
        _p("github-app-token", "ghs_" + r(ALNUM, 36), "installation token {s} expires in 1h"),
        _p("gitlab-pat", "glpat-" + r(URLSAFE, 20),
           "Clone with https://oauth2:{s}@gitlab.example.com/team/repo.git"),
        _p("gitlab-pipeline-trigger", "glptt-" + r(HEX, 40),
           "Trigger the pipeline with token {s} and ref main."),
        _p("gitlab-runner-token", "glrt-" + r(URLSAFE, 20),
           "Register the runner: gitlab-runner register --token {s}"),
        _p("bitbucket-app-password", "ATBB" + r(ALNUM, 32),
           "Bitbucket app password {s} was pasted into the ticket."),
        _p("bitbucket-client-secret", r(ALNUM, 64),
           "bitbucket_client_secret: {s}"),
        _p("npm-token", "npm_" + r(ALNUM, 36), "//registry.npmjs.org/:_authToken={s}"),
        _p("pypi-token", "pypi-AgEIcHlwaS5vcmc" + r(URLSAFE, 70),
           "twine upload -u __token__ -p {s} dist/*"),
        _p("docker-hub-pat", "dckr_pat_" + r(URLSAFE, 27),
           "docker login -u deploybot with access token {s}"),
        _p("huggingface-token", "hf_" + r(LOWER + UPPER, 34),
           "Download the model with HF token {s} from the hub."),
        _p("huggingface-org-token", "api_org_" + r(LOWER + UPPER, 34),
           "org token {s} lets CI push checkpoints"),
        _p("openai-project-key", "sk-proj-" + r(URLSAFE, 58) + "T3BlbkFJ" + r(URLSAFE, 58),
           "Set OPENAI_API_KEY to {s} in the notebook."),
        _p("openai-legacy-key", "sk-" + r(ALNUM, 20) + "T3BlbkFJ" + r(ALNUM, 20),
           "old key {s} still works for the batch job"),
        _p("anthropic-key", "sk-ant-api03-" + r(URLSAFE, 93) + "AA",
           "Claude calls are billed to key {s}."),
        _p("anthropic-admin-key", "sk-ant-admin01-" + r(URLSAFE, 93) + "AA",
           "admin key {s} can create workspaces"),
        _p("groq-key", "gsk_" + r(ALNUM, 52), "Groq inference key {s}"),
        _p("perplexity-key", "pplx-" + r(ALNUM, 48), "search is done with {s}"),
        _p("replicate-token", "r8_" + r(ALNUM, 37), "REPLICATE_API_TOKEN={s}"),
        _p("xai-key", "xai-" + r(ALNUM, 80), "Grok key {s} from the console"),
        _p("cohere-key", r(ALNUM, 40), "cohere api key: {s}"),
        _p("mistral-key", r(ALNUM, 32), "MISTRAL_API_KEY={s}"),
        _p("slack-bot-token", "xoxb-" + r(DIGITS, 12) + "-" + r(DIGITS, 13) + "-" + r(ALNUM, 24),
           "The Slack bot posts with {s} into #alerts."),
        _p("slack-user-token", "xoxp-" + "-".join(r(DIGITS, 12) for _ in range(3)) + "-"
           + r(HEX, 32), "user token {s} belongs to the admin"),
        _p("slack-app-token", "xapp-1-A" + r(UPPER + DIGITS, 10) + "-" + r(DIGITS, 13) + "-"
           + r(HEX, 64), "Socket mode needs the app-level token {s}."),
        _p("slack-webhook", "https://hooks.slack.com/services/T" + r(UPPER + DIGITS, 8) + "/B"
           + r(UPPER + DIGITS, 10) + "/" + r(ALNUM, 24),
           "Post the summary to {s} when the run ends."),
        _p("discord-webhook", "https://discord.com/api/webhooks/" + r(DIGITS, 19) + "/"
           + r(URLSAFE, 68), "Send build results to the Discord webhook {s} please."),
        _p("discord-bot-token", "MT" + r(ALNUM, 24) + "." + r(URLSAFE, 6) + "." + r(URLSAFE, 38),
           "Discord bot token {s} was committed to the repo."),
        _p("teams-webhook", "https://contoso.webhook.office.com/webhookb2/" + uuid4() + "@"
           + uuid4() + "/IncomingWebhook/" + r(HEX, 32) + "/" + uuid4(),
           "Teams channel connector: {s}"),
        _p("telegram-bot-token", r(DIGITS, 10) + ":AA" + r(URLSAFE, 33),
           "telegram bot token: {s}"),
        _p("stripe-secret-key", "sk_live_" + r(ALNUM, 99),
           "Stripe charges go through {s} in production."),
        _p("stripe-restricted-key", "rk_live_" + r(ALNUM, 99), "restricted key {s} for refunds"),
        _p("stripe-webhook-secret", "whsec_" + r(ALNUM, 32),
           "Verify Stripe signatures with the endpoint secret {s}."),
        _p("square-access-token", "EAAA" + r(URLSAFE, 60), "Square production token {s}"),
        _p("square-oauth-secret", "sq0csp-" + r(URLSAFE, 43), "Square app secret {s}"),
        _p("paypal-braintree-token", "access_token$production$" + r(LOWER + DIGITS, 16) + "$"
           + r(HEX, 32), "PayPal checkout uses {s} for the merchant."),
        _p("twilio-api-key", "SK" + r(HEX, 32), "Twilio API key {s} sends the SMS codes."),
        _p("twilio-auth-token", r(HEX, 32), "TWILIO_AUTH_TOKEN={s}"),
        _p("sendgrid-key", "SG." + r(URLSAFE, 22) + "." + r(URLSAFE, 43),
           "Transactional mail goes out through SendGrid key {s}."),
        _p("mailgun-key", "key-" + r(HEX, 32), "Mailgun private key is {s}"),
        _p("mailchimp-key", r(HEX, 32) + "-us14", "Mailchimp API key {s} for the newsletter"),
        _p("jwt", jwt, "The session cookie was {s} when the request failed."),
        _p("rsa-private-key", f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n"
           "-----END RSA PRIVATE KEY-----", "Here is the deploy key:\n{s}\nkeep it safe."),
        _p("openssh-private-key", f"-----BEGIN OPENSSH PRIVATE KEY-----\n{pem_body}\n"
           "-----END OPENSSH PRIVATE KEY-----", "id_ed25519 contents: {s}"),
        _p("postgres-url-password", r(ALNUM, 18),
           "DATABASE_URL is postgresql://billing:{s}@db-prod.internal:5432/billing"),
        _p("mongodb-srv-password", r(ALNUM, 16),
           "connect with mongodb+srv://app:{s}@cluster0.ab1cd.mongodb.net/orders"),
        _p("redis-url-password", r(ALNUM, 24), "cache at redis://:{s}@cache.internal:6379/0"),
        _p("sqlserver-connection-password", r(ALNUM, 14) + "!",
           "Server=tcp:sql-prod.database.windows.net,1433;Database=crm;User ID=crmapp;"
           "Password={s};Encrypt=true;"),
        _p("jdbc-password", r(ALNUM, 12),
           "jdbc:mysql://db.internal:3306/shop?user=shop&password={s}&useSSL=true"),
        _p("generic-password", r(ALNUM, 14), "login with admin / password: {s}"),
        _p("generic-api-key", r(ALNUM, 32), 'config = {{"api_key": "{s}", "timeout": 30}}'),
        _p("shopify-token", "shpat_" + r(HEX, 32), "Shopify admin token {s}"),
        _p("digitalocean-pat", "dop_v1_" + r(HEX, 64), "doctl auth init -t {s}"),
        _p("linear-key", "lin_api_" + r(ALNUM, 40), "Linear API key {s} files the issues."),
        _p("notion-token", "ntn_" + r(DIGITS, 11) + r(ALNUM, 35), "Notion integration {s}"),
        _p("atlassian-token", "ATATT3xFfGF0" + r(URLSAFE, 171) + "=" + r(UPPER + DIGITS, 8),
           "Jira API token {s} for the triage bot"),
        _p("postman-key", "PMAK-" + r(HEX, 24) + "-" + r(HEX, 34), "Postman key {s}"),
        _p("vault-token", "hvs." + r(URLSAFE, 95), "VAULT_TOKEN={s} vault kv get secret/app"),
        _p("databricks-token", "dapi" + r(HEX, 32), "Databricks PAT {s} runs the job."),
        _p("newrelic-key", "NRAK-" + r(UPPER + DIGITS, 27), "new_relic api key = {s}"),
        _p("sentry-dsn", r(HEX, 32),
           "SENTRY_DSN=https://{s}@o123456.ingest.sentry.io/4504"),
        _p("grafana-sa-token", "glsa_" + r(ALNUM, 32) + "_" + r(HEX, 8),
           "Grafana service account token {s}"),
        _p("age-secret-key", "AGE-SECRET-KEY-1" + r("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58),
           "sops uses {s} to decrypt"),
        _p("rubygems-key", "rubygems_" + r(HEX, 48), "gem push with key {s}"),
        _p("pulumi-token", "pul-" + r(HEX, 40), "PULUMI_ACCESS_TOKEN={s}"),
        _p("alibaba-key-id", "LTAI" + r(ALNUM, 20), "Aliyun AccessKey ID {s}"),
        _p("authorization-header", r(URLSAFE, 40),
           "curl -H 'Authorization: Bearer {s}' https://api.example.com/v1/orders"),
    ]
    for rule_id, examples in sorted(SAMPLES.items()):
        if rule_id in ("generic-api-key", "messagebird-client-id", "snyk-api-token",
                       "sonar-api-token"):
            continue  # placeholders ("12345678-ABCD-...") that are secrets only after a name
        out.append(_p(f"gitleaks-sample:{rule_id}", examples[0],
                      "Found in the old config: {s} (rotated?)"))
    return out


# --- personal data --------------------------------------------------------------------------


def _luhn_complete(partial: str) -> str:
    for check in DIGITS:
        digits = partial + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return digits
    raise AssertionError


def _iban(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    check = 98 - number % 97
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def _nl_bsn() -> str:
    while True:
        d = [_RNG.randint(0, 9) for _ in range(8)]
        total = sum(w * x for w, x in zip(range(9, 1, -1), d, strict=True))
        last = total % 11
        if last < 10:
            return "".join(map(str, d)) + str(last)


def _pl_pesel() -> str:
    base = f"{_RNG.randint(50, 99):02d}{_RNG.randint(1, 12):02d}{_RNG.randint(1, 28):02d}" \
        + r(DIGITS, 4)
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    check = (10 - sum(w * int(x) for w, x in zip(weights, base, strict=True)) % 10) % 10
    return base + str(check)


def _es_dni() -> str:
    n = _RNG.randint(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def _br_cpf() -> str:
    d = [_RNG.randint(0, 9) for _ in range(9)]
    for length in (9, 10):
        s = sum(x * w for x, w in zip(d, range(length + 1, 1, -1), strict=True))
        d.append((s * 10 % 11) % 10)
    x = "".join(map(str, d))
    return f"{x[:3]}.{x[3:6]}.{x[6:9]}-{x[9:]}"


def _se_personnummer() -> str:
    base = f"{_RNG.randint(50, 99):02d}{_RNG.randint(1, 12):02d}{_RNG.randint(1, 28):02d}" \
        + r(DIGITS, 3)
    full = _luhn_complete(base)
    return f"{full[:6]}-{full[6:]}"


def _fi_hetu() -> str:
    day, month, year = _RNG.randint(1, 28), _RNG.randint(1, 12), _RNG.randint(50, 99)
    serial = _RNG.randint(2, 899)
    n = int(f"{day:02d}{month:02d}{year:02d}{serial:03d}")
    return f"{day:02d}{month:02d}{year:02d}-{serial:03d}{'0123456789ABCDEFHJKLMNPRSTUVWXY'[n % 31]}"


def _it_codice_fiscale() -> str:
    odd = {**dict(zip(DIGITS, (1, 0, 5, 7, 9, 13, 15, 17, 19, 21), strict=True)),
           **dict(zip(UPPER, (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8,
                              12, 14, 16, 10, 22, 25, 24, 23), strict=True))}
    even = {**{d: int(d) for d in DIGITS}, **{c: i for i, c in enumerate(UPPER)}}
    body = r(UPPER, 6) + r(DIGITS, 2) + _RNG.choice("ABCDEHLMPRST") + r(DIGITS, 2) \
        + _RNG.choice(UPPER) + r(DIGITS, 3)
    total = sum(odd[c] if i % 2 == 0 else even[c] for i, c in enumerate(body))
    return body + UPPER[total % 26]


def _fr_nir() -> str:
    base = f"{_RNG.randint(1, 2)}{_RNG.randint(50, 99):02d}{_RNG.randint(1, 12):02d}" \
        f"{_RNG.randint(1, 95):02d}{_RNG.randint(1, 999):03d}{_RNG.randint(1, 999):03d}"
    key = 97 - int(base) % 97
    return f"{base[0]} {base[1:3]} {base[3:5]} {base[5:7]} {base[7:10]} {base[10:13]} {key:02d}"


def _uk_nino() -> str:
    return _RNG.choice("ABCEGHJKLMNPRSTWXY") + _RNG.choice("ABCEGHJKLMNPRSTWXY") + " " \
        + " ".join(r(DIGITS, 2) for _ in range(3)) + " " + _RNG.choice("ABCD")


def _in_pan() -> str:
    return r(UPPER, 3) + "P" + r(UPPER, 1) + r(DIGITS, 4) + r(UPPER, 1)


def _ca_sin() -> str:
    full = _luhn_complete(str(_RNG.randint(1, 7)) + r(DIGITS, 7))
    return f"{full[:3]}-{full[3:6]}-{full[6:]}"


def _de_steuer_id() -> str:
    while True:
        digits = [_RNG.randint(1, 9)] + [_RNG.randint(0, 9) for _ in range(9)]
        if len(set(digits)) != 9:  # one digit twice, as the format requires
            continue
        product = 10
        for d in digits:
            total = (d + product) % 10 or 10
            product = total * 2 % 11
        check = (11 - product) % 10
        x = "".join(map(str, digits)) + str(check)
        return f"{x[:2]} {x[2:5]} {x[5:8]} {x[8:]}"


def _cn_resident_id() -> str:
    body = "110105" + f"19{_RNG.randint(50, 99)}{_RNG.randint(1, 12):02d}" \
        f"{_RNG.randint(1, 28):02d}" + r(DIGITS, 3)
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


def personal_data() -> list[Planted]:
    card = _luhn_complete("4" + r(DIGITS, 14))
    amex = _luhn_complete("37" + r(DIGITS, 12))
    return [
        _p("email", "marie.dupont@example-mail.fr",
           "Forward the invoice to marie.dupont@example-mail.fr before noon."),
        _p("email-plus", "j.smith+billing@contoso.co.uk",
           "Reply went to j.smith+billing@contoso.co.uk by mistake."),
        _p("phone-us", "+1 (415) 555-0132", "Call the customer back at +1 (415) 555-0132."),
        _p("phone-uk", "+44 20 7946 0958", "Their London office is +44 20 7946 0958."),
        _p("phone-uk-national", "07700 900123", "Mobile: 07700 900123 (text first)."),
        _p("phone-de", "+49 30 901820-55", "Rückruf bitte unter +49 30 901820-55."),
        _p("phone-de-national", "030 90182055", "Telefon: 030 90182055, Frau Becker."),
        _p("phone-fr", "+33 6 12 34 56 78", "Son portable est le +33 6 12 34 56 78."),
        _p("phone-fr-national", "06 12 34 56 78", "Appelez le 06 12 34 56 78 demain."),
        _p("phone-es", "+34 612 34 56 78", "Teléfono de contacto: +34 612 34 56 78."),
        _p("phone-it", "+39 347 123 4567", "Il numero del cliente è +39 347 123 4567."),
        _p("phone-nl", "+31 6 12345678", "Bel mij op +31 6 12345678 na 17u."),
        _p("phone-intl-00", "0041 44 668 18 00", "Zürich desk: 0041 44 668 18 00"),
        _p("card-visa", " ".join(card[i:i + 4] for i in range(0, 16, 4)),
           "Customer paid with card {s} exp 09/27."),
        _p("card-amex", amex, "Amex on file: {s}"),
        _p("iban-de", _iban("DE", "37040044" + r(DIGITS, 10)), "Überweisung an IBAN {s} bitte."),
        _p("iban-fr", _iban("FR", r(DIGITS, 10) + r(UPPER + DIGITS, 11) + r(DIGITS, 2)),
           "RIB du fournisseur : {s}"),
        _p("iban-gb", _iban("GB", "NWBK" + r(DIGITS, 14)), "Pay the refund into {s}."),
        _p("us-ssn", f"{_RNG.randint(100, 665)}-{_RNG.randint(10, 99)}-{_RNG.randint(1000, 9999)}",
           "Applicant SSN {s} was in the PDF."),
        _p("uk-nino", _uk_nino(), "National Insurance number: {s}"),
        _p("de-steuer-id", _de_steuer_id(), "Steuer-ID des Mitarbeiters: {s}"),
        _p("fr-nir", _fr_nir(), "Numéro de sécurité sociale : {s}"),
        _p("es-dni", _es_dni(), "El DNI del titular es {s}."),
        _p("it-codice-fiscale", _it_codice_fiscale(), "Codice fiscale del cliente: {s}"),
        _p("nl-bsn", _nl_bsn(), "Het BSN van de aanvrager is {s}."),
        _p("pl-pesel", _pl_pesel(), "PESEL klienta: {s}"),
        _p("se-personnummer", _se_personnummer(), "Personnummer: {s}"),
        _p("fi-hetu", _fi_hetu(), "Henkilötunnus {s} löytyi liitteestä."),
        _p("br-cpf", _br_cpf(), "CPF do cliente: {s}"),
        _p("ca-sin", _ca_sin(), "SIN on the T4 slip: {s}"),
        _p("in-pan", _in_pan(), "PAN card number {s} for KYC."),
        _p("cn-resident-id", _cn_resident_id(), "身份证号码 {s} 已提交。"),
    ]


def all_planted() -> list[Planted]:
    return vendor_secrets() + personal_data()
