"""safe_json: JSON from the network measured before it is parsed, so that nesting deep enough
to overflow json's C parser is refused with a typed error instead of crashing the process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import deep_json_server
from verinet.chain.jsonrpc import JsonRpcChain
from verinet.errors import JsonTooDeep
from verinet.safe_json import _STRING, MAX_DEPTH, loads, nesting

leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
documents = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@given(documents)
def test_nesting_is_the_documents_depth_and_loads_is_json_loads(doc: Any) -> None:
    text = json.dumps(doc)
    assert nesting(text) == nesting(text.encode()) == depth(doc)
    assert loads(text) == loads(text.encode()) == json.loads(text)


def test_brackets_inside_strings_do_not_count() -> None:
    doc = {"a": "[" * 1000 + '\\"{{{', "b\\": ["}}}" * 500]}
    assert loads(json.dumps(doc)) == doc
    assert nesting(json.dumps(doc)) == 2


def test_a_document_deeper_than_the_limit_is_refused_unparsed() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(JsonTooDeep, match=f"deeper than {MAX_DEPTH} levels"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(JsonTooDeep):
        loads(b"[" * 10, max_depth=9)


def test_closing_brackets_in_a_string_cannot_hide_depth() -> None:
    hidden = '["' + "]" * 5000 + '", ' + "[" * 5000 + "]" * 5001
    assert nesting(hidden) == 5001
    with pytest.raises(JsonTooDeep):
        loads(hidden)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_wide_encodings_are_measured_as_the_text_json_reads(encoding: str) -> None:
    # In UTF-16/32 a character such as U+0122 holds a quote byte (22 01): measured as bytes,
    # the string would seem to swallow the brackets after it.
    doc = '["\u0122",' + "[" * 5000 + "]" * 5000 + ', "y"]'
    assert nesting(doc.encode(encoding)) == 5001
    with pytest.raises(JsonTooDeep):
        loads(doc.encode(encoding))
    shallow = '["\u0122", [[1]], "y"]'
    assert loads(shallow.encode(encoding)) == json.loads(shallow)


def test_the_string_pattern_never_fails_from_a_quote() -> None:
    # With the closing quote required, a string the pattern could not close (here, an escaped
    # newline at the end) failed from every quote and was rescanned to the end each time:
    # 80 KB took 25 s. A match that cannot fail once at a quote keeps the scan to one pass.
    body = b"[" * 65 + b'"' + b'\\"' * 200 + b"\\\n"
    quotes = [i for i, byte in enumerate(body) if byte == ord('"')]
    assert len(quotes) == 201
    assert all(_STRING.match(body, i) is not None for i in quotes)
    assert nesting(body) == 65
    with pytest.raises(ValueError):
        loads(body)  # json stops at the unterminated string


def test_unterminated_or_invalid_documents_still_fail_as_json() -> None:
    for bad in ['{"a": "]]]]', "[1, 2", '"\\', "{"]:
        with pytest.raises(ValueError):
            loads(bad)


def test_the_nesting_that_would_crash_json_is_a_typed_error() -> None:
    # In a child process: with py-evm imported (recursion limit 100,000) json.loads of this
    # document overflows an 8 MiB C stack (SIGSEGV; with an unlimited stack it raises
    # RecursionError instead, which also ends the program); loads refuses it first.
    program = (
        "import json, eth\n"
        "from verinet.errors import JsonTooDeep\n"
        "from verinet.safe_json import loads\n"
        "doc = b'[' * 200_000\n"
        "try:\n"
        "    loads(doc)\n"
        "except JsonTooDeep:\n"
        "    print('refused')\n"
        "json.loads(doc)\n"
    )
    child = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert child.stdout.strip() == "refused"
    assert child.returncode != 0  # json itself did not survive it


def test_a_json_rpc_endpoint_answering_deep_json_is_a_typed_error() -> None:
    with deep_json_server("POST") as endpoint:  # a third party's RPC endpoint, say
        with pytest.raises(JsonTooDeep, match=f"{endpoint.url} answered eth_chainId with JSON"):
            JsonRpcChain(endpoint.url)
        assert endpoint.answered == 1
