"""The "Mail notifications" section of docs/bank-properties.md, kept beside the code it describes
(``biomaj.config.settings.render_markdown`` puts it after the table of the ``mail.*`` keys;
tests/notify checks that it names every key and template variable)."""

from __future__ import annotations

DOC_SECTION = """\
## Mail notifications

After an update, the removal of a release, a remove-all and a repair, biomaj mails the bank's \
admins, as BioMAJ 3 does, when `mail.smtp.host` and `mail.admin` are set (`biomaj ctl check` \
also requires `mail.from` then). The banks that a computed bank depends on, updated with it, \
send no mail of their own.

- One mail per recipient of `mail.admin` (comma-separated), `From: BioMAJ <mail.from>`, sent \
through `mail.smtp.host` on port `mail.smtp.port` (25); STARTTLS only when `mail.tls` is \
`true`; SMTP login when `mail.user` is not empty, with `mail.password` (never logged).
- Default subject, BioMAJ 3's: `BANK[<bank>] - STATUS[<status>] - UPDATE[<update>] - \
REMOVE[<remove>] - RELEASE[<release>]`, e.g. \
`BANK[alu] - STATUS[True] - UPDATE[True] - REMOVE[False] - RELEASE[2003]`; remove-all gives \
`RELEASE[all]`.
- Default body: the last `mail.body.tail` bytes of the run's log (nothing when it is unset or \
0), after the extra message of a remove-all or a repair and, for an update, its change report \
(`Changes: 1 added (10 B), 0 removed (0 B), 1 changed (12 B), 9 unchanged (100 B) against \
release 1`, then the names of the files added, removed and changed: docs/changes.md).
- The log is attached (`application/octet-stream`, base64, named `<bank>.log`) when it is \
smaller than `mail.body.attach` bytes. A remove-all deletes the bank's logs and sends none.
- `mail.template.subject` and `mail.template.body` are paths (a relative one is read from \
`conf.dir`) to Jinja2 templates, rendered in Jinja2's sandbox. A template that is missing or \
broken is a warning in the log, and the default is used. BioMAJ 3 templates (such as its \
`tools/examples/subject.jinja2` and `body.jinja2`) work unchanged. Their variables:

| variable | value |
|---|---|
| `bank` | the bank's name |
| `release` | the release, as text (`None` when unknown, `all` for a remove-all) |
| `status` | True when the run is over and succeeded |
| `update` | True when the run made a new release |
| `remove` | True when a release (or the whole bank) was removed |
| `modified` | `update or remove` |
| `log_file` | the path of the run's log |
| `log_tail` | the last `mail.body.tail` bytes of the log |
| `message` | an extra message (remove-all, repair), else empty |
| `action` | `update`, `remove`, `remove-all` or `repair` (biomaj only) |
| `changes` | the update's change report (a dict: `added`, `removed`, `changed`, `unchanged` each with `count` and `bytes`, `against`, `files`), or none (biomaj only) |
| `changes_text` | the change report in a few lines, as the default body shows it, or empty (biomaj only) |

- A mail that cannot be sent (server down or refusing, login refused, no answer within 30 s) \
is a warning in the run's log and the application log: the update or removal still succeeds, \
and the job is never held longer than that.

BioMAJ 3 bugs fixed on purpose (reference 8.3):

1. BioMAJ 3 read `mail.template.body` with a wrong call and found it only through the \
environment variable `BIOMAJ_MAIL_TEMPLATE_BODY`; biomaj reads it from the properties files \
(the environment variable still overrides it, as for every key).
2. BioMAJ 3 put the *first* `mail.body.tail` bytes of the log in the body; biomaj puts the \
*last* ones, as the key's name and BioMAJ 3's own global.properties comment say.

Also, each recipient's mail has only that recipient in `To` (BioMAJ 3 added one more `To` \
header per recipient to the same message).

Signed webhooks (config.yml `notify.webhooks`, chosen per bank by `notify.webhooks`) tell \
programs the same events: see [notifications.md](notifications.md).
"""
