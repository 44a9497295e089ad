"""gateway ↔ core: what the edge adds to a request it forwards.

In bearer mode the gateway forwards the client's request unchanged (the core authenticates
the API key itself); it adds a request id, which every hop logs and passes on, and the usual
forwarding headers so the core can build public URLs such as Daytona's ``toolboxProxyUrl``.
"""

REQUEST_ID_HEADER = "x-request-id"
FORWARDED_HOST_HEADER = "x-forwarded-host"
FORWARDED_PROTO_HEADER = "x-forwarded-proto"
FORWARDED_PREFIX_HEADER = "x-forwarded-prefix"

HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
"""Headers a proxy must not copy from one hop to the next (RFC 9110 §7.6.1), plus ``host``
and ``content-length``, which the HTTP client sets for the new hop."""
