"""A walk over a model file's protobuf wire format that bounds what parsing it will cost.

Parsing is where a small file becomes a large process: every repeated entry (an empty string is
2 bytes on the wire, a varint dim 1 byte) becomes an object of 16 to 64 bytes in the parser,
and again in the ONNX checker's C++ copy, and a Python int if anything iterates it. So
`scan_model` reads the bytes first, building nothing: it walks the message tree by the schema
(derived from onnx's own descriptors), counts entries, and refuses a file before it is parsed if

- it is not well-formed protobuf (a truncated field, a group, a varint past 10 bytes, messages
  nested deeper than `MAX_MESSAGE_DEPTH`);
- it holds more than `Limits.max_entries` entries: messages, strings and bytes fields, and
  varint-encoded numbers (packed or not) together; fixed-width numbers and raw bytes are not
  entries, they parse to as many bytes as they take;
- a tensor or shape has more than `Limits.max_rank` dims;
- a name (of a node, value, tensor, attribute, op, domain, dim parameter...) is longer than
  `Limits.max_name_bytes`.

The walk visits each field once and stops at the first limit: its time is linear in
min(file size, entries cap), and it holds a stack of at most `MAX_MESSAGE_DEPTH` frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped]
from onnx import ModelProto

from verinet.errors import MalformedModel, ModelTooLarge, TensorTooLarge

MAX_MESSAGE_DEPTH = 64
"""Messages nested in messages; a graph nested `Limits.max_graph_depth` (8) deep in If/Loop
bodies is 4 messages a level (graph > node > attribute > graph) plus a few for its tensors."""

_VARINT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_ENUM,
    }
)
_ENDS = bytes(range(0x80))  # a varint's last byte; the others are deleted to count varints
# Free text, not names: their length is only bytes (1:1 in memory), never echoed in errors.
_TEXT_FIELDS = frozenset({"doc_string", "value", "raw_data", "string_data", "s", "strings"})
_RANK_FIELDS = {"onnx.TensorProto": 1, "onnx.SparseTensorProto": 3, "onnx.TensorShapeProto": 1}


@dataclass(frozen=True, slots=True)
class _Message:
    """What the walk needs of one message type: per field number, its child message type, or
    whether it is a packed-varint candidate or a name."""

    name: str
    children: dict[int, _Message] = field(default_factory=dict)
    varints: frozenset[int] = frozenset()
    names: dict[int, str] = field(default_factory=dict)
    rank_field: int = 0


def _schema(root: Any) -> _Message:  # a protobuf Descriptor (untyped)
    built: dict[str, _Message] = {}

    def visit(descriptor: Any) -> _Message:
        found = built.get(descriptor.full_name)
        if found is not None:
            return found
        message = _Message(
            name=descriptor.full_name,
            varints=frozenset(f.number for f in descriptor.fields if f.type in _VARINT_TYPES),
            names={
                f.number: f.name
                for f in descriptor.fields
                if f.type == FieldDescriptor.TYPE_STRING and f.name not in _TEXT_FIELDS
            },
            rank_field=_RANK_FIELDS.get(descriptor.full_name, 0),
        )
        built[descriptor.full_name] = message  # before the children: the schema is recursive
        for f in descriptor.fields:
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                message.children[f.number] = visit(f.message_type)
        return message

    return visit(root)


_MODEL = _schema(ModelProto.DESCRIPTOR)
_NODE = _MODEL.children[7].children[1]  # ModelProto.graph -> GraphProto.node


@dataclass(frozen=True, slots=True)
class WireStats:
    """What a well-formed file holds, as counted on the wire."""

    entries: int
    messages: int


def _short_name(head: bytes, length: int) -> str:
    return f"{head[:80].decode('utf-8', 'replace')!r}…({length} bytes)"


def scan_model(
    data: bytes,
    *,
    max_entries: int,
    max_messages: int,
    max_nodes: int,
    max_rank: int,
    max_name_bytes: int,
) -> WireStats:
    """Walk `data` as a ModelProto; raise `MalformedModel` / `ModelTooLarge` /
    `TensorTooLarge` at the first field past a limit, before anything is parsed."""
    view = memoryview(data)
    entries = messages = nodes = 0
    # The open messages, innermost last: schema, end offset, dims counted so far.
    stack: list[tuple[_Message, int, int]] = []
    message, end, rank = _MODEL, len(data), 0
    pos = 0
    while True:
        if pos == end:
            if not stack:
                return WireStats(entries=entries, messages=messages)
            message, end, rank = stack.pop()
            continue
        # The tag: a varint (field number << 3 | wire type), nearly always one byte.
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise MalformedModel("not a parsable ONNX model (field number 0); re-export it")
        entries += 1
        is_rank = number == message.rank_field
        if wire == 0:
            pos = _skip_varint(data, pos, end)
            rank += is_rank
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise MalformedModel("not a parsable ONNX model (truncated number); re-export it")
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            start, pos = pos, pos + length
            if pos > end:
                raise MalformedModel("not a parsable ONNX model (truncated field); re-export it")
            child = message.children.get(number)
            if child is not None:
                messages += 1
                rank += is_rank
                if messages > max_messages:
                    raise ModelTooLarge(
                        f"the model file holds more than {max_messages} protobuf messages "
                        "(nodes, attributes, tensors, value infos, dims...); simplify the model "
                        "or raise Limits.max_messages"
                    )
                if child is _NODE:
                    nodes += 1
                    if nodes > max_nodes:
                        raise ModelTooLarge(
                            f"the model has more than {max_nodes} nodes (subgraphs and "
                            "functions included); simplify it (e.g. onnxsim) or raise "
                            "Limits.max_nodes"
                        )
                if len(stack) + 1 >= MAX_MESSAGE_DEPTH:
                    raise MalformedModel(
                        f"the model nests protobuf messages more than {MAX_MESSAGE_DEPTH} deep; "
                        "flatten nested If/Loop/Scan bodies"
                    )
                if is_rank and rank > max_rank:
                    break
                stack.append((message, end, rank))
                message, end, rank, pos = child, pos, 0, start
                continue
            if number in message.varints:  # a packed run: count its varints
                count = length - len(view[start:pos].tobytes().translate(None, _ENDS))
                entries += count
                rank += count if is_rank else 0
            elif length > max_name_bytes and number in message.names:
                raise ModelTooLarge(
                    f"a {message.names[number]} in the model is {length} bytes long "
                    f"({_short_name(data[start : start + 80], length)}), over the limit of "
                    f"{max_name_bytes}; use shorter names"
                )
        else:  # 3, 4: groups, which ONNX never uses; 6, 7: not protobuf
            raise MalformedModel(
                f"not a parsable ONNX model (wire type {wire} at byte {pos}); re-export it"
            )
        if is_rank and rank > max_rank:
            break
        if entries > max_entries:
            raise ModelTooLarge(
                f"the model file holds more than {max_entries} protobuf entries (messages, "
                "strings, varint numbers); store tensors as raw_data (onnx.numpy_helper."
                "from_array) or raise Limits.max_entries"
            )
    raise TensorTooLarge(
        f"a tensor or shape in the model ({message.name}) has more than {max_rank} dims; no "
        "runtime supports that rank, the file is forged"
    )


def _skip_varint(data: bytes, pos: int, end: int) -> int:
    if pos < end and data[pos] < 0x80:
        return pos + 1
    return _varint(data, pos, end)[1]


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    if pos < end and data[pos] < 0x80:  # the common case: one byte
        return data[pos], pos + 1
    value = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise MalformedModel("not a parsable ONNX model (truncated or overlong varint); re-export it")
