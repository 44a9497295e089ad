"""``env.set`` / ``env.done``: the stdlib agent and ``contracts.guest`` agree byte for byte."""

from __future__ import annotations

import pytest

from contracts import guest
from guest import framing


def test_env_done_encodes_identically() -> None:
    assert framing.encode(framing.env_done(7)) == guest.encode(guest.EnvDone(id=7))


def test_env_set_decodes_in_the_agent() -> None:
    frame = guest.encode(guest.EnvSet(id=3, env={"A": "1", "NAÏVE": "✓"}))
    assert framing.parse_request(frame[4:]) == framing.EnvSetRequest(3, {"A": "1", "NAÏVE": "✓"})


@pytest.mark.parametrize("payload", [b'{"t":"env.set","id":1}', b'{"t":"env.set","id":1,"env":{"A":1}}'])
def test_bad_env_set_is_refused(payload: bytes) -> None:
    with pytest.raises(framing.BadRequest, match="'env' must be an object of strings"):
        framing.parse_request(payload)
