"""``make bench``: fan-out benchmark of RayanPBX's live events against a bare relay (issue 5).

Modules: ``__main__`` (command line and outputs), ``runner`` (the measurements for one
server and one N), ``stack`` (starting the servers, pinning, ``/proc`` readings), ``pool``
and ``clients`` (the load-client processes), ``publish`` (burst publisher), ``queries``
(database queries per REST write), ``baseline_relay`` (the bare relay), ``report``
(JSON, Markdown, plot) and ``stats``.
"""
