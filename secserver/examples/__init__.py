"""Two sample member services that ship with secserver, used by ``secserver demo``.

* :mod:`secserver.examples.tag_locations`: OTTA's REST service with the positions of
  the watch tags that elderly residents wear (personal data: needs the resident's consent).
* :mod:`secserver.examples.resident_registry`: TOYONO's SOAP 1.1 document/literal
  service answering who a resident is (name, district, care level), with a WSDL.

Both are plain aiohttp applications with small in-memory sample data. Run one with
``python -m secserver.examples.tag_locations --port 9001`` or
``python -m secserver.examples.resident_registry --port 9002``; each listens on
127.0.0.1 and prints ``listening on http://127.0.0.1:PORT/`` once it accepts connections.
"""
