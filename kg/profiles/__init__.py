"""Extraction profiles: named sets of LLM settings, stored with an audit trail.

One module per job, imported by name (this package re-exports nothing: its modules sit on both
sides of kg.providers, and re-exporting the upper ones here would make every import of the
settings model run them, bringing the profiles <-> providers cycle back):

- settings:   the settings model, each setting declared once (below kg.providers and kg.db)
- fields:     the declaration read back per setting: CLI flag, kind, bounds, choices
- validation: one-line messages and the rules that need the provider registry
- views:      a stored profile as plain data, as a provider's settings, as a run's snapshot
- storage:    reading and changing stored profiles, with the audit trail and the lock
"""
