"""Notifications of bank actions: a mail to the bank's admins after an update, a remove, a
remove-all or a repair (BioMAJ 3's ``Notify``, :mod:`biomaj.notify.mail`), and signed webhooks
(:mod:`biomaj.notify.webhooks`)."""

from .mail import MAIL_TIMEOUT, BankAction, notify_bank_action

__all__ = ["MAIL_TIMEOUT", "BankAction", "notify_bank_action"]
