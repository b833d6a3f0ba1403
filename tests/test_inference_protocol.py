"""The inference protocol and client stay light: no torch in the HTTP server's process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from ftpipe.inference import protocol


def test_client_and_protocol_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import ftpipe.inference, ftpipe.inference.client, ftpipe.inference.protocol\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_request_defaults_and_stop_forms() -> None:
    request = protocol.decode_request('{"id": "a", "model_path": "/m", "messages": []}')
    assert (request.op, request.temperature, request.top_p, request.n) == ("chat", 1.0, 1.0, 1)
    assert request.stop == [] and request.max_tokens is None and not request.stream
    assert protocol.Request(id="b", stop="END").stop == ["END"]
    assert protocol.Request(id="c", stop=["x", "", "y"]).stop == ["x", "y"]
    with pytest.raises(ValidationError):
        protocol.Request(id="d", stop=["1", "2", "3", "4", "5"])
    with pytest.raises(ValidationError):
        protocol.Request(id="e", temperature=3)
    with pytest.raises(ValidationError):
        protocol.Request(id="f", op="chat", surprise=1)


def test_responses_round_trip() -> None:
    done = protocol.Done(
        id="a",
        model="/m",
        choices=[protocol.Choice(index=0, text="hi", finish_reason="stop", completion_tokens=2)],
        usage=protocol.Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7),
    )
    error = protocol.Error(
        id="b",
        code="context_length_exceeded",
        message="too long",
        prompt_tokens=600,
        context_length=512,
    )
    delta = protocol.Delta(id="c", index=1, text="x")
    for message in (done, error, delta):
        line = protocol.encode(message)
        assert line.endswith("\n") and line.count("\n") == 1
        assert protocol.decode_response(line) == message
    with pytest.raises(ValidationError):
        protocol.decode_response('{"id": "z", "type": "error", "code": "nope", "message": ""}')
