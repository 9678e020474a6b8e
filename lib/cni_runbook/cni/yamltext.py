"""Surgical edits of YAML text: change a few lines, keep every other byte.

Renderers never re-serialise a manifest (that would drop comments and reformat everything);
they edit lines of the original text and then check, by parsing both versions, that the parsed
result is exactly the original with the intended change and nothing else. If that check fails
the edit is refused with :class:`~cni_runbook.cni.errors.CniError` rather than producing a
manifest that differs in unexpected ways.

Three edits are provided:

- :func:`set_config_keys` sets dotted keys (``antreaProxy.proxyAll``) in a YAML config text such
  as Antrea's ``antrea-agent.conf``, uncommenting a commented-out default (``#  Egress: true``)
  in place when there is one, inserting a line after the parent key otherwise;
- :func:`block_scalar` / :func:`replace_block_scalar` find and replace the literal block
  (``key: |``) holding such a config inside a ConfigMap document;
- :func:`replace_images` rewrites ``image:`` lines.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import CniError

_KEY = r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*"
_ACTIVE_KEY = re.compile(rf"^(?P<indent> *)(?P<q>[\"']?)(?P<key>{_KEY})(?P=q)[ \t]*:(?:[ \t]+(?P<value>.*?))?[ \t]*$")
_COMMENTED_KEY = re.compile(rf"^(?P<before> *)#(?P<after> *)(?P<key>{_KEY})[ \t]*:(?:[ \t]+(?P<value>.*?))?[ \t]*$")
_IMAGE_LINE = re.compile(r"^(?P<prefix>[ \t]*(?:-[ \t]+)?image:[ \t]*)(?P<q>[\"']?)(?P<image>[^\"'\s#]+)(?P=q)(?P<suffix>[ \t]*(?:#.*)?)$")


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's C loader when PyYAML has it (same results, much faster)."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


def yaml_scalar(value: Any) -> str:
    """Render a value as a one-line YAML (flow) value: true/false, numbers, "strings", [lists]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {yaml_scalar(v)}" for k, v in value.items()) + "}"
    raise CniError(f"cannot write a value of type {type(value).__name__} into YAML: {value!r}")


# --------------------------------------------------------------------------- config keys


@dataclass
class _Line:
    content: str
    original: str | None  # the untouched raw line (with indent and line ending), None once edited


def _indent(content: str) -> int:
    return len(content) - len(content.lstrip(" "))


def _is_active(content: str) -> bool:
    stripped = content.strip()
    return bool(stripped) and not stripped.startswith("#")


def _is_seq_item(content: str) -> bool:
    stripped = content.lstrip(" ")
    return stripped == "-" or stripped.startswith("- ")


class _ConfigText:
    """Lines of a YAML mapping text, edited in place (see :func:`set_config_keys`)."""

    def __init__(self, lines: list[_Line], where: str):
        self.lines = lines
        self.where = where

    def _block(self, index: int) -> tuple[int, int]:
        """For the key line at ``index``: (end of its nested value, end of its scope).

        The value ends after its last nested active line; the scope also takes the comments and
        blank lines up to the next line at the key's level (commented-out children live there).
        """
        own = _indent(self.lines[index].content)
        value_end = index + 1
        for j in range(index + 1, len(self.lines)):
            content = self.lines[j].content
            if not _is_active(content):
                continue
            ind = _indent(content)
            if ind < own or (ind == own and not _is_seq_item(content)):
                return value_end, j
            value_end = j + 1
        return value_end, len(self.lines)

    def _children(self, start: int, end: int, parent_indent: int) -> tuple[int | None, dict[str, int]]:
        """(child indent, key -> line index) of the active keys directly inside [start, end)."""
        child_indent, keys = None, {}
        for j in range(start, end):
            content = self.lines[j].content
            if not _is_active(content) or _indent(content) <= parent_indent:
                continue
            if child_indent is None:
                child_indent = _indent(content)
            if _indent(content) == child_indent:
                m = _ACTIVE_KEY.match(content)
                if m and m.group("key") not in keys:
                    keys[m.group("key")] = j
        return child_indent, keys

    def _commented(self, start: int, end: int, key: str, indent: int | None, parent_indent: int) -> int | None:
        """A commented-out ``#key: value`` line in [start, end) that can be uncommented in place."""
        for j in range(start, end):
            m = _COMMENTED_KEY.match(self.lines[j].content)
            if not m or m.group("key") != key:
                continue
            ind = len(m.group("before")) + len(m.group("after"))
            if (indent is not None and ind != indent) or ind <= parent_indent:
                continue
            following = next((self.lines[k].content for k in range(j + 1, len(self.lines)) if _is_active(self.lines[k].content)), None)
            if following is not None and (_indent(following) > ind or (_indent(following) == ind and _is_seq_item(following))):
                continue  # uncommenting it would swallow the next lines
            return j
        return None

    def _replace(self, index: int, content: str) -> None:
        self.lines[index] = _Line(content, None)

    def set(self, path: tuple[str, ...], value: Any) -> None:
        start, end, parent_indent = 0, len(self.lines), -1
        for depth, key in enumerate(path):
            last = depth == len(path) - 1
            child_indent, keys = self._children(start, end, parent_indent)
            if key in keys:
                j = keys[key]
                m = _ACTIVE_KEY.match(self.lines[j].content)
                value_end, scope_end = self._block(j)
                if last:
                    head = self.lines[j].content[: m.start("value")] if m.group("value") is not None else self.lines[j].content.rstrip() + " "
                    suffix = _trailing_comment(m.group("value") or "")
                    self._replace(j, head + yaml_scalar(value) + suffix)
                    # drop a block value (nested lines) the new one-line value replaces
                    del self.lines[j + 1 : value_end]
                    return
                current = (m.group("value") or "").strip()
                if current not in ("", "{}"):
                    raise CniError(f"{self.where}: cannot set {'.'.join(path)}: {'.'.join(path[: depth + 1])} holds {current!r}, not a mapping")
                if current == "{}":
                    self._replace(j, self.lines[j].content[: m.start("value")].rstrip())
                start, end, parent_indent = j + 1, scope_end, _indent(self.lines[j].content)
                continue
            if last:
                j = self._commented(start, end, key, child_indent, parent_indent)
                if j is not None:
                    m = _COMMENTED_KEY.match(self.lines[j].content)
                    suffix = _trailing_comment(m.group("value") or "")
                    self._replace(j, f"{m.group('before')}{m.group('after')}{key}: {yaml_scalar(value)}{suffix}")
                    return
            # insert the missing key (and whatever is left of its path) after the parent line
            indent = child_indent if child_indent is not None else parent_indent + 2
            if parent_indent < 0:
                indent, at = 0, len(self.lines)
                while at > 0 and not self.lines[at - 1].content.strip():
                    at -= 1
            else:
                at = start
            new = []
            for k, name in enumerate(path[depth:]):
                if k == len(path) - depth - 1:
                    new.append(f"{' ' * (indent + 2 * k)}{name}: {yaml_scalar(value)}")
                else:
                    new.append(f"{' ' * (indent + 2 * k)}{name}:")
            self.lines[at:at] = [_Line(c, None) for c in new]
            return


def _trailing_comment(value: str) -> str:
    """The `` # comment`` that follows a one-line value, if any."""
    value = value.rstrip()
    if value[:1] in ("'", '"'):
        close = value.find(value[0], 1)
        rest = value[close + 1 :] if close > 0 else ""
    else:
        cut = re.search(r"[ \t]#", value)
        rest = value[cut.start() :] if cut else ""
    return rest if re.match(r"^[ \t]+#", rest) else ""


def _set_path(data: Any, path: tuple[str, ...], value: Any) -> Any:
    data = {} if data is None else data
    node = data
    for key in path[:-1]:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return data


def set_config_keys(text: str, settings: dict[tuple[str, ...], Any], *, where: str, indent: int = 0) -> str:
    """Set ``settings`` (key path -> value) in the YAML mapping ``text``, editing only those lines.

    ``indent`` is the number of leading spaces every line of ``text`` carries (a block scalar's
    indentation inside its document): edits keep it. For each key path, in order of preference:
    the active ``key: value`` line is rewritten; a commented-out ``#key: value`` line at the right
    place is uncommented (only the ``#`` goes away, the indentation after it stays); a new line is
    inserted after the parent key (or at the end for a top-level key). Comments and every other
    line stay byte for byte. Raises CniError (naming ``where`` and the key) if the result would
    not parse to the original plus the new values.
    """
    raw = text.splitlines(keepends=True)
    newline = "\r\n" if raw and raw[0].endswith("\r\n") else "\n"
    lines = []
    for line in raw:
        body = line.rstrip("\r\n")
        lines.append(_Line(body[indent:] if body[:indent].strip() == "" else body, line))
    editor = _ConfigText(lines, where)
    for path, value in settings.items():
        editor.set(tuple(path), value)
    out = []
    for line in editor.lines:
        if line.original is not None:
            out.append(line.original)
        else:
            out.append((" " * indent + line.content if line.content else "") + newline)
    if raw and not raw[-1].endswith("\n") and out and out[-1].endswith("\n") and editor.lines[-1].original is None:
        out[-1] = out[-1].rstrip("\r\n")
    result = "".join(out)

    expected = copy.deepcopy(_load(text, where))
    for path, value in settings.items():
        expected = _set_path(expected, tuple(path), copy.deepcopy(value))
    got = _load(result, where)
    if got != expected:
        wrong = [".".join(p) for p, v in settings.items() if _get_path(got, p) != v] or ["(other keys changed)"]
        raise CniError(f"{where}: could not set {', '.join(wrong)} without changing anything else; edit the config by hand")
    return result


def _get_path(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _load(text: str, where: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise CniError(f"{where}: not valid YAML: {exc}") from exc


# --------------------------------------------------------------------------- block scalars


@dataclass(frozen=True)
class BlockScalar:
    """The literal block value of ``key: |`` in a document: lines [start, end) with ``indent``."""

    start: int
    end: int
    indent: int


def block_scalar(doc_text: str, parent: str, key: str, *, where: str) -> BlockScalar:
    """Find the literal block scalar ``<parent>: / <key>: |`` (e.g. ``data`` / ``antrea-agent.conf``).

    Line numbers are 0-based indexes into ``doc_text.splitlines()``; trailing blank lines are not
    part of the block. Raises CniError if the key is missing or not a literal block (``|``).
    """
    lines = doc_text.splitlines()
    in_parent = False
    for i, line in enumerate(lines):
        if not _is_active(line):
            continue
        m = _ACTIVE_KEY.match(line)
        if _indent(line) == 0:
            in_parent = bool(m and m.group("key") == parent)
            continue
        if not (in_parent and m and m.group("key") == key):
            continue
        value = (m.group("value") or "").strip()
        if not re.fullmatch(r"\|[-+]?[0-9]?", value):
            raise CniError(f"{where}: {parent}.{key} must be a literal block scalar ('{key}: |'), found {value!r}")
        own = _indent(line)
        end, block_indent = i + 1, None
        for j in range(i + 1, len(lines)):
            if not lines[j].strip():
                continue
            if _indent(lines[j]) <= own:
                break
            block_indent = _indent(lines[j]) if block_indent is None else block_indent
            end = j + 1
        return BlockScalar(i + 1, end, block_indent or own + 2)
    raise CniError(f"{where}: no {parent}.{key} found (expected '{key}: |' under '{parent}:')")


def block_text(doc_text: str, block: BlockScalar) -> str:
    """The raw lines of ``block`` (still indented), with their line endings."""
    return "".join(doc_text.splitlines(keepends=True)[block.start : block.end])


def replace_block_scalar(doc_text: str, block: BlockScalar, new_block_text: str) -> str:
    """``doc_text`` with the raw lines of ``block`` replaced by ``new_block_text``."""
    lines = doc_text.splitlines(keepends=True)
    return "".join(lines[: block.start]) + new_block_text + "".join(lines[block.end :])


# --------------------------------------------------------------------------- images


def replace_images(doc_text: str, mapping: dict[str, str]) -> tuple[str, int]:
    """Rewrite ``image:`` lines whose value is a key of ``mapping``; returns (text, lines changed).

    The quoting style and any trailing comment of each line are kept.
    """
    out, changed = [], 0
    for line in doc_text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        m = _IMAGE_LINE.match(body)
        if m and m.group("image") in mapping and mapping[m.group("image")] != m.group("image"):
            q = m.group("q")
            line = f"{m.group('prefix')}{q}{mapping[m.group('image')]}{q}{m.group('suffix')}" + line[len(body) :]
            changed += 1
        out.append(line)
    return "".join(out), changed
