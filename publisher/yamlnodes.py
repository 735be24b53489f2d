"""A typed reader over PyYAML's node tree, for error messages that point at the source.

The matrix is read from nodes (``yaml.compose``) rather than from ``yaml.safe_load``'s
plain objects because a loaded float has lost what the user wrote: ``3.10`` becomes
``3.1``, and the error could not say "quote it as "3.10"". Nodes also carry line numbers
and let us refuse duplicate keys, which ``safe_load`` silently merges.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from pathlib import Path

import yaml

from .errors import MatrixError

_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_NUMBERS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def compose(path: Path) -> Node:
    """Read and parse ``path``; every failure is a one-line MatrixError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MatrixError(f"{path}: is a directory, not a matrix file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"{path}: cannot read: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MatrixError(f"{path}{where}: not valid YAML: {problem}") from None
    if root is None:
        raise MatrixError(f"{path}: is empty; expected a mapping with 'image', 'versions', ...")
    return Node(root, path=path, key="")


class Node:
    """One YAML node plus where it came from (file, line, dotted key)."""

    def __init__(self, node: yaml.Node, *, path: Path, key: str) -> None:
        self._node = node
        self.path = path
        self.key = key

    @property
    def line(self) -> int:
        return int(self._node.start_mark.line) + 1

    def error(self, problem: str) -> MatrixError:
        where = f"{self.key}: " if self.key else ""
        return MatrixError(f"{self.path}:{self.line}: {where}{problem}")

    def _child(self, node: yaml.Node, key: str) -> Node:
        return Node(node, path=self.path, key=key)

    def mapping(
        self, *, required: Collection[str], optional: Collection[str] = ()
    ) -> dict[str, Node]:
        if not isinstance(self._node, yaml.MappingNode):
            what = "the file" if not self.key else "this key"
            raise self.error(f"{what} must be a mapping, not {self._describe()}")
        allowed = set(required) | set(optional)
        out: dict[str, Node] = {}
        for key_node, value_node in self._node.value:
            name = str(key_node.value)
            key_path = f"{self.key}.{name}" if self.key else name
            child = self._child(value_node, key_path)
            if name not in allowed:
                hint = difflib.get_close_matches(name, sorted(allowed), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                known = ", ".join(sorted(allowed))
                raise self._child(key_node, key_path).error(
                    f"unknown key {name!r}{suggestion} (known keys: {known})"
                )
            if name in out:
                raise self._child(key_node, key_path).error("is given twice")
            out[name] = child
        missing = sorted(set(required) - out.keys())
        if missing:
            raise self.error(f"missing required key {missing[0]!r}")
        return out

    def items(self) -> Iterator[tuple[str, Node]]:
        """Entries of a mapping whose keys are free-form names (such as variant names)."""
        if not isinstance(self._node, yaml.MappingNode):
            raise self.error(f"must be a mapping, not {self._describe()}")
        seen: set[str] = set()
        for key_node, value_node in self._node.value:
            name = str(key_node.value)
            key_path = f"{self.key}.{name}"
            if name in seen:
                raise self._child(key_node, key_path).error("is given twice")
            seen.add(name)
            yield name, self._child(value_node, key_path)

    def sequence(self) -> list[Node]:
        if not isinstance(self._node, yaml.SequenceNode):
            raise self.error(f"must be a list, not {self._describe()}")
        return [self._child(n, f"{self.key}[{i}]") for i, n in enumerate(self._node.value)]

    def string(self) -> str:
        node = self._node
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"must be a string, not {self._describe()}")
        if node.tag in _NUMBERS:
            raise self.error(
                f'{node.value} is a number, not a string; quote it as "{node.value}" '
                f"(YAML reads {node.value} as {yaml.safe_load(node.value)!r})"
            )
        if node.tag != _STR:
            raise self.error(f"must be a string, not {self._describe()}")
        value = str(node.value)
        if not value.strip():
            raise self.error("must not be empty")
        return value

    def boolean(self) -> bool:
        node = self._node
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
            raise self.error(f"must be true or false, not {self._describe()}")
        return bool(yaml.safe_load(node.value))

    def strings(self) -> list[Node]:
        """A list of strings, also accepting one bare string as a list of one."""
        if isinstance(self._node, yaml.ScalarNode):
            self.string()
            return [self]
        items = self.sequence()
        for item in items:
            item.string()
        return items

    def _describe(self) -> str:
        node = self._node
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if node.tag == "tag:yaml.org,2002:null":
            return "empty"
        kind = {
            "tag:yaml.org,2002:int": "the number",
            "tag:yaml.org,2002:float": "the number",
            _BOOL: "the boolean",
        }.get(node.tag, "the value")
        return f"{kind} {node.value}"
