"""The tamper-evident message log: records and their canonical bytes (``records``), the hash
chain (``chain``), storage (``store``), the writer with group commit and checkpoints
(``writer``), the verifier (``verify``), evidence bundles (``bundle``) and archives
(``archive``). ``docs/audit.md`` describes the formats for auditors."""
