"""YAML and text read with limits: what a config file, an override or a synset-override file may hold.

PyYAML's ``safe_load`` builds no Python objects, but it still expands aliases (a few hundred bytes
of ``&a [*b, *b, ...]`` grow to gigabytes), recurses once per nesting level, turns a 5,000-digit
number into a ``ValueError`` and ``!!binary`` into ``bytes``. Here every such input is refused with
one line (:class:`UserError`) before anything is built:

- aliases (``*name``) are refused (anchors alone are harmless); nothing in a config needs them;
- at most :data:`MAX_DEPTH` nested collections and :data:`MAX_BYTES` of text;
- integers of at most :data:`MAX_INT_DIGITS` digits;
- only the JSON-like tags (null, bool, int, float, str, seq, map); timestamps stay strings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from relaxkd.errors import UserError

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_INT_DIGITS = 30


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any = None):
        super().__init__(message)
        self.message, self.mark = message, mark


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader without aliases, deeper nesting than :data:`MAX_DEPTH`, huge ints or exotic tags."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"uses the YAML alias *{event.anchor}; aliases are not allowed (write the value out)",
                           event.start_mark)
        if self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nests deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node):  # noqa: ANN001
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(f"holds an integer of {digits} digits (at most {MAX_INT_DIGITS})", node.start_mark)
        return super().construct_yaml_int(node)

    def construct_as_text(self, node):  # noqa: ANN001 - dates and times stay as written
        return self.construct_scalar(node)

    def refuse_tag(self, node):  # noqa: ANN001
        raise _Refused(f"uses the tag {node.tag.replace('tag:yaml.org,2002:', '!!')}, which is not allowed "
                       f"(plain strings, numbers, booleans, lists and mappings only)", node.start_mark)


_LimitedLoader.add_constructor("tag:yaml.org,2002:int", _LimitedLoader.construct_yaml_int)
_LimitedLoader.add_constructor("tag:yaml.org,2002:timestamp", _LimitedLoader.construct_as_text)
for _tag in ("binary", "set", "omap", "pairs"):
    _LimitedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _LimitedLoader.refuse_tag)
_LimitedLoader.add_constructor(None, _LimitedLoader.refuse_tag)  # any other tag (!foo, !!python/...)


def load(text: str, source: str) -> Any:
    """Parse ``text`` with the limits above; ``source`` names it in errors ("config file 'x.yaml'")."""
    if len(text) > MAX_BYTES:
        raise UserError(f"{source} is larger than {MAX_BYTES // 1024} KiB; a config is a few KiB")
    try:
        return yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - _LimitedLoader is a SafeLoader
    except _Refused as exc:
        where = _where(exc.mark) if "\n" in text.strip() else ""
        raise UserError(f"{source} {exc.message}{where}") from None
    except RecursionError:  # belt and braces: the depth limit comes first
        raise UserError(f"{source} nests too deeply") from None


def _where(mark: Any) -> str:
    return f" (line {mark.line + 1})" if mark is not None and getattr(mark, "line", None) is not None else ""


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path``; another encoding is one line naming the file and the first bad byte."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
