"""The tamper-evident message log.

* ``records``: what is logged and the canonical bytes each record is hashed as (pure);
* ``chain``: the hash chain (pure); ``body``: AES-GCM for stored bodies (pure);
* ``store``: the tables and their reads; ``anchor``: the log head file outside the database;
* ``writer``: ``LogWriter`` (group commit, checkpoints, timestamps, admin events);
* ``verify``: the verifier core (pure); ``checks``: verifying a node's whole log;
* ``bundle``: evidence bundles (export, offline verification); ``archive``: archives.

``docs/audit.md`` describes the formats for auditors.
"""
