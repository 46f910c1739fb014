"""The few messages of containerd's native API the exporter uses, built at import time.

PyPI has no stubs for containerd's own API (``container-runtime-interface-api`` covers CRI
only, which has no event stream), and generated code for a handful of fields would be a
vendored copy to keep in step. So the messages are described here, field for field as in
containerd's protos (``api/services/events/v1/events.proto``, ``api/events/image.proto``,
``api/services/version/v1/version.proto``), in a private descriptor pool, and protobuf makes
the classes: the wire format stays protobuf's business.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pool, empty_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto, FileDescriptorProto
from google.protobuf.message import Message

SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
VERSION = "/containerd.services.version.v1.Version/Version"

_STRING = FieldDescriptorProto.TYPE_STRING
_MESSAGE = FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = FieldDescriptorProto.LABEL_REPEATED


def _message(file: FileDescriptorProto, name: str,
             fields: list[tuple[str, int, int, str]], labels: bool = False) -> None:
    """Add message ``name`` with (name, number, type, type name) string/message fields, and
    ``map<string, string> labels = 2`` when ``labels``."""
    msg = file.message_type.add(name=name)
    for field, number, kind, type_name in fields:
        msg.field.add(name=field, number=number, type=kind, label=_OPTIONAL,
                      type_name=type_name or None)
    if labels:
        entry = msg.nested_type.add(name="LabelsEntry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=_STRING, label=_OPTIONAL)
        entry.field.add(name="value", number=2, type=_STRING, label=_OPTIONAL)
        msg.field.add(name="labels", number=2, type=_MESSAGE, label=_REPEATED,
                      type_name=f".{file.package}.{name}.LabelsEntry")


def _classes() -> tuple[type[Message], ...]:
    """SubscribeRequest, Envelope, ImageEvent and VersionResponse, in that order."""
    pool = descriptor_pool.DescriptorPool()
    for known in (timestamp_pb2, any_pb2, empty_pb2):
        pool.AddSerializedFile(known.DESCRIPTOR.serialized_pb)

    events = FileDescriptorProto(
        name="containerd/services/events/v1/events.proto",
        package="containerd.services.events.v1", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/any.proto"])
    events.message_type.add(name="SubscribeRequest").field.add(
        name="filters", number=1, type=_STRING, label=_REPEATED)
    _message(events, "Envelope", [("timestamp", 1, _MESSAGE, ".google.protobuf.Timestamp"),
                                  ("namespace", 2, _STRING, ""), ("topic", 3, _STRING, ""),
                                  ("event", 4, _MESSAGE, ".google.protobuf.Any")])
    # containerd 1.6 calls this package containerd.services.images.v1, 2.x containerd.events;
    # the fields are the same, and events are told apart by topic, not by type name.
    image = FileDescriptorProto(name="containerd/events/image.proto",
                                package="containerd.events", syntax="proto3")
    _message(image, "ImageEvent", [("name", 1, _STRING, "")], labels=True)
    version = FileDescriptorProto(name="containerd/services/version/v1/version.proto",
                                  package="containerd.services.version.v1", syntax="proto3")
    _message(version, "VersionResponse", [("version", 1, _STRING, ""),
                                          ("revision", 2, _STRING, "")])
    for file in (events, image, version):
        pool.Add(file)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
                 for full in ("containerd.services.events.v1.SubscribeRequest",
                              "containerd.services.events.v1.Envelope",
                              "containerd.events.ImageEvent",
                              "containerd.services.version.v1.VersionResponse"))


# ImageEvent reads both ImageCreate and ImageUpdate (name = 1, labels = 2).
SubscribeRequest, Envelope, ImageEvent, VersionResponse = _classes()
