"""The code-interpreter server: E2B's ``/execute`` and ``/contexts`` API on port 49999, over
Jupyter kernels (one per context), for the ``code-interpreter-v1`` template.

It is NOT part of the agent: the agent never imports it, and it is the one place under
``guest/`` that imports something outside the standard library (``jupyter_client``, which the
template installs from Debian). The agent starts it as a template service
(``/etc/dnah/services.json``, see ``guest/services.py``), running the template's python3 on
the code the agent itself runs from (``/opt/dnah/guest``, read-only), so the server always
matches the host's version.

Modules: ``events`` (kernel messages to E2B's NDJSON lines, pure), ``kernels`` (contexts:
a kernel and its client each, execution), ``server`` (HTTP), ``__main__`` (arguments).
"""
