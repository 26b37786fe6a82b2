"""Keys, certificates, CMS signatures, batch signing, RFC 3161 timestamps, development PKI.

Public modules: ``merkle`` (RFC 6962 hashing), ``keys``, ``pki``, ``trust``, ``cms``,
``document`` (the signed document), ``signer`` (``Signer``, ``verify_message``),
``timestamp`` (RFC 3161 client) and ``tsa`` (development TSA).
"""
