"""Generate seeds/tickets.csv: ~500 support tickets for "Tallyworks", a fictional
project-and-time-tracking SaaS.

Deterministic (seeded random, no third-party imports): re-running it rewrites the
same bytes. Run from anywhere:

    python integration_project/seeds/generate_tickets.py

Each ticket is written around one intended category, and its subject + body mention
at least one of that category's trigger words as a whole word, so a keyword-based fake
classifier can label it:

    billing          billing, invoice, charge, refund
    bug              bug, error, crash, broken
    feature_request  feature, request, would love, suggestion
    account          account, login, password, access
    other            none of the above

About 5% of tickets deliberately mix in one sentence from a second category. The script
asserts these properties for every row before writing the file, and prints the counts.

Row text is meant to be sent to the model verbatim, so a few bodies contain unicode,
quotes, commas, line breaks, and literal Jinja (``{{ customer_name }}``, ``{% if %}``)
as if pasted from a broken email template.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import re
from collections import Counter
from pathlib import Path

SEED = 20260115
N_TICKETS = 500
FIRST_ID = 10231
OUT = Path(__file__).with_name("tickets.csv")

TRIGGERS = {
    "billing": ["billing", "invoice", "charge", "refund"],
    "bug": ["bug", "error", "crash", "broken"],
    "feature_request": ["feature", "request", "would love", "suggestion"],
    "account": ["account", "login", "password", "access"],
}
CATEGORY_WEIGHTS = {"billing": 22, "bug": 25, "feature_request": 18, "account": 20, "other": 15}
MIX_RATE = 0.06

# ---------------------------------------------------------------- vocabulary
FIRST_NAMES = [
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Mateo", "Sofia", "Lucas", "Mia", "Ethan",
    "Chloé", "José", "Zoë", "Jürgen", "Søren", "Łukasz", "Anaïs", "Björn", "Priya", "Arjun",
    "Wei", "Mei", "Kenji", "Yuki", "Fatima", "Omar", "Amara", "Kwame", "Ingrid", "Hannah",
    "Daniel", "Grace", "Tomás", "Renée", "Nikolai", "Leila", "Diego", "Isabela", "Sean", "Aoife",
]
LAST_NAMES = [
    "Smith", "Johnson", "García", "Müller", "Nguyen", "Okafor", "Rossi", "Dubois", "Kowalski",
    "Andersson", "Patel", "Kim", "Tanaka", "O'Brien", "Silva", "Novak", "Schäfer", "Hernández",
    "Chen", "Larsen", "Haddad", "Mensah", "Brennan", "Fischer", "Costa", "Ivanova", "Park",
    "Lefèvre", "Yilmaz", "Svensson",
]
COMPANIES = [
    ("acme-logistics", "com"), ("brightpath", "io"), ("northwind", "co"), ("harbor-studio", "design"),
    ("kettle", "dev"), ("lumen-health", "org"), ("pinecrest", "edu"), ("redfern-legal", "co.uk"),
    ("solace", "ai"), ("terrafirma", "de"), ("bluebird-media", "fr"), ("quarry", "com"),
    ("gmail", "com"), ("outlook", "com"), ("fastmail", "com"), ("proton", "me"),
]
BUSINESS_NAMES = ["Acme Logistics", "Brightpath Labs", "Northwind Traders", "Harbor Studio", "Kettle & Co",
                  "Lumen Health", "Redfern Legal", "Terrafirma Bau", "Bluebird Média", "Quarry Analytics"]
ASCII = str.maketrans({
    "é": "e", "ë": "e", "è": "e", "ü": "u", "ö": "o", "ø": "o", "ä": "a", "á": "a", "ï": "i",
    "Ł": "L", "ł": "l", "í": "i", "ó": "o", "'": "",
})

PLAN = ["Starter", "Team", "Business", "Enterprise"]
SEATS = [3, 5, 8, 12, 15, 20, 25, 40, 60, 120]
MONTHS = ["January", "February", "March", "April", "May", "June"]
AMOUNTS = ["$49.00", "$96.00", "$180.00", "$240.00", "$312.50", "$588.00", "€120.00", "€450.00", "£75.00"]
AREAS = [
    "timesheet view", "Gantt chart", "project dashboard", "CSV export", "PDF report export",
    "Slack integration", "Jira sync", "mobile app", "calendar view", "kanban board",
    "time entry form", "weekly digest email", "REST API", "Google Calendar sync", "budget tracker",
]
BROWSERS = ["Chrome 131", "Firefox 134", "Safari 18", "Edge 131", "the iOS app", "the Android app"]
ACTIONS = [
    "click Save", "drag a task to another column", "open a project with more than 200 tasks",
    "export last month's hours", "switch workspaces", "filter by assignee",
    "upload a file larger than 10 MB", "rename a project", "archive a client",
]
EMOJI = ["🙏", "😅", "🙂", "👍", "😬", "🚀", "🤞", "❤️"]

# --------------------------------------------------------------- templates
# Lead sentences: each contains at least one trigger word of its category.
LEADS = {  # category -> [(subjects, sentence)]
    "billing": [
        (["Double charge", "Charged twice"], "We were charged twice this month and I'd like a refund for the duplicate charge."),
        (["Wrong seat count on invoice", "Invoice seats"], "Our invoice for {month} shows {seats} seats, but we only have {seats2} people on the {plan} plan."),
        (["VAT number on invoice", "Resend invoice"], "Could you send the {month} invoice again with our VAT number on it?"),
        (["Unexpected charge", "Unknown charge on card"], "There's a charge of {amount} on our card that I don't recognise."),
        (["Downgrade not reflected", "Still paying old rate"], "I downgraded to {plan} last week, so why does the latest invoice still bill us at the old rate?"),
        (["Billing address change", "New address"], "Please update the billing address on our workspace, we moved offices."),
        (["Charged after trial", "Cancelled but charged"], "I cancelled during the trial, yet there is a {amount} charge on my statement. Can I get a refund?"),
        (["Annual vs monthly", "Switch to yearly"], "Who do I talk to about switching our billing from monthly to annual?"),
        (["Invoices for audit", "Need PDFs"], "Our finance team needs every invoice from {month} onward as PDFs for the audit."),
        (["Card declined?", "Payment failed"], "The billing page says the card was declined, but the bank says no attempt was made."),
        (["Removed seats", "Refund for unused seats"], "Can you refund the unused seats? We removed {seats2} people mid-cycle."),
        (["Tax on invoice", "Invoice total"], "Is the {amount} invoice total before or after tax? The PDF doesn't say."),
        (["New billing contact", "Change finance email"], "Our billing contact has changed; invoices should now go to finance@{domain}."),
        (["Payment not showing", "Wire transfer"], "We paid the invoice by wire transfer on {day} {month}, but it still shows as unpaid."),
        (["Auto-renewal", "Renewal refund"], "I'd like a refund for the annual renewal, it auto-renewed the day after we decided to leave."),
        (["Price per seat", "Pricing mismatch"], "Your pricing page says {amount} per seat but every charge on our card is higher than that."),
    ],
    "bug": [
        (["Error when saving", "{area} error"], "The {area} throws an error every time I {action}."),
        (["Blank page in {browser}", "{area} broken"], "The {area} is broken in {browser}, it just shows a blank white page."),
        (["{area} keeps crashing", "Crash"], "The {area} keeps crashing in {browser}. Is this a known bug?"),
        (["Hours doubled", "Wrong totals"], "Found a bug: when I {action}, the hours double in the {area}."),
        (["500 error", "Something went wrong"], "Getting \"Error 500: something went wrong\" when I {action}."),
        (["Broken since update", "{area} not working"], "The {area} has been broken since yesterday's update."),
        (["Nothing loads", "unexpected token"], "The {area} shows an error saying \"unexpected token\" and nothing loads."),
        (["Off-by-one day", "Midnight entries wrong"], "Looks like a bug in the {area}: totals are off by exactly one day for entries after midnight."),
        (["App crash on launch", "App won't open"], "The app crashes on launch for everyone on our team using {browser}, same crash every time."),
        (["Timezone issue", "Times shifted"], "Timezones seem broken, entries logged at 9:00 show up as 3:00 in the {area}."),
        (["Lost my changes", "Red banner"], "When I {action} I get a red error banner and my changes are lost."),
        (["Date filter ignored", "Filter not working"], "There's a bug where the {area} ignores the date filter completely."),
        (["Drag and drop", "Cards snap back"], "Drag and drop on the kanban board is broken; cards snap back to where they were."),
        (["{area} crash", "Crash report"], "The {area} crashes as soon as I {action}; the crash report just says \"code 11\"."),
    ],
    "feature_request": [
        (["Dark mode?", "Dark theme"], "We would love a dark mode, the {area} is very bright at night."),
        (["Feature request", "Default project"], "Feature request: let us set a default project for new time entries."),
        (["Suggestion for {area}", "Budget visibility"], "Suggestion: show the remaining budget right on the {area}."),
        (["Idea: bulk edit", "Bulk actions"], "Would love to be able to move or archive tasks in bulk instead of one at a time."),
        (["Teams integration", "Microsoft Teams?"], "Is there any plan to add a Microsoft Teams integration? That feature would help us a lot."),
        (["Remember filters", "Small idea"], "Small suggestion, could the {area} remember my last used filters?"),
        (["Custom fields", "Cost centre field"], "I'd like to request custom fields on tasks, e.g. a cost centre."),
        (["Lock timesheets", "Timesheet approval"], "A feature to lock timesheets after approval would save our managers hours."),
        (["Recurring tasks", "Custom schedules"], "We would love recurring tasks with a custom schedule (every 2nd Tuesday, etc.)."),
        (["Keyboard shortcuts", "Power user idea"], "Could you add keyboard shortcuts to the {area}? Just a suggestion from a power user."),
        (["Rounding time entries", "Round to 15 min"], "Request: an option to round time entries to the nearest 15 minutes."),
        (["Public holidays", "Holidays per country"], "It would be a great feature if the calendar view could show holidays per country."),
        (["Colour coding", "Client colours"], "My team would love per-client colour coding in the {area}."),
    ],
    "account": [
        (["Can't log in", "Login loop"], "I can't get into my account, the login page just reloads."),
        (["Password reset", "Reset link missing"], "Please reset the password for {email}, the reset link never arrives."),
        (["Access for contractor", "Guest permissions"], "I need to give our new contractor access to two projects only."),
        (["Transfer ownership", "New workspace owner"], "How do I transfer ownership of the workspace account to my colleague?"),
        (["2FA trouble", "Two-factor problem"], "Since turning on two-factor I can't login from {browser}."),
        (["Delete my account", "GDPR deletion"], "Please delete my account and all associated personal data."),
        (["Remove former employee", "Offboarding"], "A former employee still has access to our workspace, please remove them ASAP."),
        (["SSO problem", "SAML certificate"], "Our SSO login stopped working after we rotated the certificate."),
        (["Changed email", "Reset not working"], "I changed my email address and now I can't reset my password."),
        (["Duplicate signup", "Merge accounts"], "Can you merge my two accounts? I signed up twice by mistake and the old account has all our projects."),
        (["Account locked", "Locked out"], "My account is locked after too many attempts, can you unlock it?"),
        (["IP allowlist", "Restrict by IP"], "Is it possible to restrict access by IP range on the {plan} plan?"),
        (["Password rules", "Apostrophe rejected"], "The password rules reject anything with an apostrophe, e.g. O'Brien2026!"),
        (["Admins lost rights", "Admin role gone"], "Two of our admins lost admin access overnight, nobody changed anything."),
    ],
    "other": [
        (["SOC 2 report", "Security review"], "Do you have a SOC 2 Type II report we can review under NDA?"),
        (["Thank you!", "Kudos"], "Just wanted to say the new {area} is fantastic, thank you! {emoji}"),
        (["Data residency", "GDPR question"], "Where is our data hosted? We need to know for GDPR purposes."),
        (["Conference", "Meet in {month}?"], "Are you attending the ProjectOps conference in {month}? We'd like to meet."),
        (["Onboarding call", "Training session"], "Can we book an onboarding call for our {seats}-person team next week?"),
        (["Holiday hours", "Support hours"], "What are your support hours over the holidays?"),
        (["Partner programme", "Reseller question"], "Is there a partner programme for agencies that resell your product?"),
        (["Webhooks docs", "Docs link"], "Could you point me to the docs for webhooks? I couldn't find them."),
        (["Sales call", "Evaluating Tallyworks"], "We're evaluating Tallyworks against two other tools, can someone from sales call me?"),
        (["Quick question", "API rate limit"], "Quick question: what's the rate limit on the REST API?"),
        (["Non-profit discount", "Charity pricing"], "Do you offer a discount for registered non-profits?"),
        (["Thanks to Marta", "Great support"], "Your team was really helpful last week, please pass on my thanks to Marta."),
        (["Translations", "German / Portuguese UI"], "Is the {area} available in German and Portuguese yet?"),
        (["Case study", "Marketing collaboration"], "We'd be happy to do a case study about how we use Tallyworks, who should I contact?"),
        (["EU AI Act", "Compliance question"], "Can you confirm you're compliant with the EU AI Act for the time-estimate predictions?"),
    ],
}

# Neutral follow-up sentences (no trigger words of any category), per category.
FOLLOWUPS = {
    "billing": [
        "We're on the {plan} plan with {seats} seats.",
        "Our PO number is PO-{po}.",
        "This needs sorting before our month-end close on the {day}th.",
        "I've attached a screenshot of the card statement.",
        "Happy to jump on a call if that's easier.",
        "Our company name on the paperwork should read \"{company_name}, Inc.\"",
        "We've been customers since 2021, so this is a bit frustrating.",
    ],
    "bug": [
        "Steps: open the {area}, {action}, wait a second.",
        "It happens in {browser} and in the desktop app.",
        "Clearing the cache didn't help.",
        "This is blocking payroll for {seats} people, so it's fairly urgent.",
        "Console shows: TypeError: cannot read properties of undefined (reading 'id').",
        "It worked fine last Friday.",
        "I can reproduce it on two different laptops.",
        "Screenshot attached, the spinner never stops.",
    ],
    "feature_request": [
        "Right now we keep a spreadsheet on the side for this.",
        "Three other teams here asked for the same thing.",
        "Competitors already have something similar, fwiw.",
        "Happy to beta test it if that helps.",
        "Even a simple version would be great.",
        "Thanks for considering it {emoji}",
    ],
    "account": [
        "My username is {email}.",
        "I've tried {browser} and an incognito window.",
        "We're on the {plan} plan if that matters.",
        "I'm the workspace owner, so I should have full rights.",
        "Please do this quickly, we have a client deadline on {day} {month}.",
        "I checked spam, nothing there.",
    ],
    "other": [
        "No rush on this one.",
        "We're a team of {seats} based in {city}.",
        "Thanks in advance!",
        "A short reply by email is fine.",
        "Our legal team is asking, so a written answer would be ideal.",
        "Cheers {emoji}",
    ],
}
# Bodies pasted from a broken email template: row text must reach the model verbatim.
TEMPLATE_BODIES = [
    ("billing", "Fwd: your invoice",
     "Hi {{ customer_name }}, your invoice for {{ month }} is attached.\n"
     "I got this email this morning with the placeholders still in it, and there's no attachment. "
     "Can you resend the {month} invoice?"),
    ("account", "Weird email about my password",
     "Your email said: \"{% if user.is_admin %}Admin access granted{% endif %}\". "
     "Did my access actually change? I didn't ask for anything."),
    ("bug", "Template showing in notification",
     "Every reminder email now starts with \"Dear {{ customer_name }},\" literally. "
     "Looks like a bug in your templates, our clients are confused."),
]
CITIES = ["Lisbon", "Berlin", "Austin", "Toronto", "Nairobi", "Melbourne", "Zürich", "Kraków", "São Paulo", "Osaka"]
PRIORITY_WEIGHTS = {
    "billing": {"low": 15, "normal": 55, "high": 25, "urgent": 5},
    "bug": {"low": 10, "normal": 35, "high": 35, "urgent": 20},
    "feature_request": {"low": 55, "normal": 40, "high": 5, "urgent": 0},
    "account": {"low": 10, "normal": 45, "high": 30, "urgent": 15},
    "other": {"low": 50, "normal": 45, "high": 5, "urgent": 0},
}
CHANNEL_WEIGHTS = {"email": 45, "web": 30, "chat": 18, "phone": 7}

# ---------------------------------------------------------------- checking
_WORD = {c: re.compile(r"\b(" + "|".join(re.escape(w) for w in ws) + r")\b", re.I) for c, ws in TRIGGERS.items()}
# Stricter, prefix-based check for *other* categories' words (catches "charged", "accessible", "crashes").
_STEM = {c: re.compile(r"\b(" + "|".join(re.escape(w) for w in ws) + r")", re.I) for c, ws in TRIGGERS.items()}


def categories_present(text: str, strict: bool) -> set[str]:
    pats = _STEM if strict else _WORD
    return {c for c, p in pats.items() if p.search(text)}


def check(intended: str, secondary: str | None, text: str) -> None:
    exact = categories_present(text, strict=False)
    loose = categories_present(text, strict=True)
    wanted = {c for c in (intended, secondary) if c and c != "other"}
    assert wanted <= exact, (intended, secondary, text)
    assert loose <= wanted, (intended, secondary, loose, text)


# ---------------------------------------------------------------- generation
def pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def draw(rng: random.Random, ctx: dict[str, str]) -> dict[str, str]:
    """One ticket's slot values, shared by its subject and all of its sentences."""
    seats = rng.choice(SEATS)
    return {
        "month": rng.choice(MONTHS), "seats": str(seats), "seats2": str(rng.randint(1, max(1, seats - 1))),
        "plan": rng.choice(PLAN), "amount": rng.choice(AMOUNTS), "area": rng.choice(AREAS),
        "browser": rng.choice(BROWSERS), "action": rng.choice(ACTIONS), "emoji": rng.choice(EMOJI),
        "day": str(rng.randint(2, 28)), "po": str(rng.randint(40000, 49999)), "city": rng.choice(CITIES),
        **ctx,
    }


def fill(template: str, values: dict[str, str]) -> str:
    out = template.format(**values)
    return out[0].upper() + out[1:]


def make_body(rng: random.Random, cat: str, secondary: str | None, ctx: dict[str, str]) -> tuple[str, str]:
    """(subject, body) for one ticket."""
    values = draw(rng, ctx)
    subjects, lead = rng.choice(LEADS[cat])
    sentences = [fill(lead, values)]
    n_follow = rng.choices([0, 1, 2, 3], weights=[25, 40, 25, 10])[0]
    sentences += [fill(s, values) for s in rng.sample(FOLLOWUPS[cat], n_follow)]
    if secondary:
        sentences = sentences[:3]
        sentences.insert(rng.randint(1, len(sentences)), "Also: " + fill(rng.choice(LEADS[secondary])[1], values))
    sentences = sentences[:4]
    if rng.random() < 0.06 and len(sentences) > 1:  # multi-line body, as typed into an email client
        body = f"Hi,\n{' '.join(sentences[:-1])}\n{sentences[-1]}\nThanks, {ctx['first']}"
    else:
        body = " ".join(sentences)
        if rng.random() < 0.15:
            body += f" Thanks, {ctx['first']}"
    return fill(rng.choice(subjects), values), body


def main() -> None:
    rng = random.Random(SEED)
    start = dt.datetime(2026, 1, 5, 0, 0, 0)
    span = int((dt.datetime(2026, 6, 29) - start).total_seconds())
    times = sorted(start + dt.timedelta(seconds=rng.randrange(span)) for _ in range(N_TICKETS))

    template_slots = set(rng.sample(range(20, N_TICKETS - 20), len(TEMPLATE_BODIES)))
    template_iter = iter(TEMPLATE_BODIES)

    rows, counts, mixed = [], Counter(), 0
    ticket_id = FIRST_ID
    for i, created_at in enumerate(times):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        company, tld = rng.choice(COMPANIES)
        local = f"{first}.{last}".translate(ASCII)
        if rng.random() > 0.2:
            local = local.lower()  # ~20% keep mixed case, which staging lower-cases
        email = f"{local}@{company}.{tld}"
        ctx = {"first": first, "email": email.lower(), "domain": f"{company}.{tld}",
               "company_name": rng.choice(BUSINESS_NAMES)}

        if i in template_slots:
            cat, subject, body = next(template_iter)
            body = body.replace("{month}", rng.choice(MONTHS))
            secondary = None
        else:
            cat = pick(rng, CATEGORY_WEIGHTS)
            secondary = None
            if rng.random() < MIX_RATE:
                secondary = rng.choice([c for c in TRIGGERS if c != cat])
            subject, body = make_body(rng, cat, secondary, ctx)
        check(cat, secondary, f"{subject}\n{body}")
        counts[cat] += 1
        mixed += secondary is not None

        rows.append({
            "ticket_id": ticket_id,
            "created_at": created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "customer_email": email,
            "channel": pick(rng, CHANNEL_WEIGHTS),
            "subject": subject,
            "body": body,
            "priority": pick(rng, PRIORITY_WEIGHTS[cat]),
        })
        ticket_id += rng.choice([1, 1, 1, 2, 3, 5, 8])

    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} tickets to {OUT} ({OUT.stat().st_size} bytes)")
    print("intended categories:", dict(sorted(counts.items())), f"mixed: {mixed}")


if __name__ == "__main__":
    main()
