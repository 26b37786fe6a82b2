"""The ``secserver`` command."""
