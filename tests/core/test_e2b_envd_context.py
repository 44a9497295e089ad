"""core/http/e2b/envd/context.py: the account E2B's SDK asks a call to run as (``user=``,
sent as ``Authorization: Basic`` of ``name:``)."""

from __future__ import annotations

import base64

import pytest

from core.http.e2b.envd.context import Envd


def _user(authorization: bytes | None) -> str | None:
    headers = {} if authorization is None else {b"authorization": authorization}
    return Envd(state=None, headers=headers).user


def _basic(credential: str) -> bytes:
    return b"Basic " + base64.b64encode(credential.encode())


def test_the_named_account_and_the_sandboxes_own() -> None:
    assert _user(_basic("root:")) == "root"
    assert _user(b"basic " + base64.b64encode(b"www-data:")) == "www-data"
    # E2B's name for the sandbox's own account, no header, or the gateway's own credential
    assert _user(_basic("user:")) is None
    assert _user(None) is None
    assert _user(b"Bearer dnah_edge_token") is None


@pytest.mark.parametrize(
    "authorization",
    [b"Basic not*base64", _basic("root"), _basic(":"), b"Basic " + base64.b64encode(b"\xff\xfe:")],
)
def test_a_malformed_basic_credential_is_refused(authorization: bytes) -> None:
    with pytest.raises(ValueError, match="base64 of 'user:'"):
        _user(authorization)
