"""The access-rights registry: models, path rules, decisions, snapshots, consent."""
