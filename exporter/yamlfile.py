"""Reading a YAML file that anyone may have written, without a traceback for any content.

PyYAML builds documents recursively (deep nesting raises RecursionError), shares aliased
nodes (a few lines of anchors make a "billion laughs" document that any walk over it takes
forever on), raises ValueError for integers longer than 4,300 digits or dates such as
2024-13-45, and silently keeps the last of two equal keys. So before building anything the
file's size is capped, and its events are counted with the alias expansion they imply; then a
loader that refuses duplicate keys builds it.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1024 * 1024  # configuration files are a few KiB; a 1 MiB one is a mistake
MAX_DEPTH = 20  # the deepest valid configuration nests 4 collections (harbor.instances)
MAX_NODES = 100_000  # scalars and collections, aliases counted at their expanded size

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlFileError(ValueError):
    """The file cannot be used; the message says why (and where, when the parser knows)."""


class _UniqueKeyLoader(_Loader):  # type: ignore[misc, valid-type]
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != (
                    "tag:yaml.org,2002:merge"):
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key_node.value[:60]!r} given twice",
                        key_node.start_mark)
                seen.add(ident)
        return super().construct_mapping(node, deep)


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    text = f" at line {mark.line + 1}" if mark else ""
    return text + (f": {problem[:100]}" if isinstance(problem, str) and problem else "")


def _measure(text: str) -> None:
    """Refuse documents too deep, too large once aliases are expanded, or aliasing
    themselves, from the event stream (which PyYAML produces without recursion)."""
    sizes: dict[str, int] = {}
    stack: list[tuple[str | None, int]] = []
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            total += 1
            stack.append((event.anchor, total))
            if len(stack) > MAX_DEPTH:
                raise YamlFileError(f"nests more than {MAX_DEPTH} levels deep "
                                    f"(line {event.start_mark.line + 1})")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = stack.pop()
            if anchor is not None:
                sizes[anchor] = total - start + 1
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in stack):
                raise YamlFileError(f"alias *{event.anchor[:60]} refers to a node that holds it "
                                    f"(line {event.start_mark.line + 1})")
            total += sizes.get(event.anchor, 1)
        if total > MAX_NODES:
            raise YamlFileError(f"holds more than {MAX_NODES} values once aliases are "
                                "expanded")


def read_text(path: str, max_bytes: int, name: str) -> str:
    """A UTF-8 text file of at most ``max_bytes``, never reading more than that (a path to
    /dev/zero must not fill memory). Raises ValueError naming the file as ``name``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path
        raise ValueError(f"{name} is not a file path") from None
    if len(data) > max_bytes:
        raise ValueError(f"{name} is larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None


def load(path: str) -> Any:
    """The document in the file at ``path`` (None when empty); raises YamlFileError."""
    try:
        text = read_text(path, MAX_BYTES, path)
    except ValueError as exc:
        raise YamlFileError(str(exc)) from None
    try:
        _measure(text)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a safe loader
    except YamlFileError as exc:
        raise YamlFileError(f"{path} {exc}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{path} is not valid YAML{_where(exc)}") from None
    except (ValueError, OverflowError, TypeError) as exc:
        # PyYAML's constructors: int() past 4,300 digits, datetime(2024, 13, 45), ...
        reason = str(exc).split(";")[0].splitlines()[0][:100] if str(exc) else "bad value"
        raise YamlFileError(f"{path} is not valid YAML: {reason}") from None
