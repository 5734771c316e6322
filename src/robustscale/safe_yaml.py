"""YAML from users, read within bounds: every way a text can be bad ends in one :class:`ConfigError` line.

PyYAML's safe loader executes no code, but it is not safe against every text. Aliases make an expansion bomb (375
bytes of nested aliases under ``model.kwargs`` grew to gigabytes once validated); nesting a few thousand levels deep
raises ``RecursionError``; a bad explicit tag (``!!int A``, an empty ``!!int``) raises ``ValueError`` or
``IndexError`` instead of ``yaml.YAMLError``. So a text is first scanned as a stream of events (iterative: no
recursion) for its depth, then loaded, then, if it uses aliases, its expanded size is counted without expanding it.
Configs and sweep specs are a few levels deep and a few hundred values large; the limits below are far above that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from robustscale.errors import ConfigError, shown

__all__ = ["MAX_YAML_BYTES", "MAX_DEPTH", "MAX_VALUES", "YamlSyntaxError", "load_yaml_text", "read_yaml_file"]

MAX_YAML_BYTES = 4 << 20  # 4 MiB: the paper's 320-run sweep spec is under 2 KiB
MAX_DEPTH = 64  # nesting levels (configs are 3 deep); deeper texts hit Python's recursion limit in the loader
MAX_VALUES = 100_000  # scalars and collections after aliases are expanded (each alias counts its whole value)


class YamlSyntaxError(ConfigError):
    """The text is not YAML the safe loader can build (as opposed to YAML that is too deep or too large)."""


def _depth(text: str) -> tuple[int, bool]:
    """Deepest nesting of collections and whether any alias is used, from the event stream (no recursion)."""
    depth = deepest = 0
    aliases = False
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases = True
    return deepest, aliases


def expanded_size(obj: Any, limit: int = MAX_VALUES) -> int | None:
    """How many values ``obj`` holds once every shared reference (a YAML alias) is counted at each place it is used;
    None when that exceeds ``limit`` or the structure refers to itself. Linear in the number of distinct objects."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(obj, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        if children_done:
            on_path.discard(key)
            size = 1 + sum(sizes.get(id(c), 1) for c in children)
            if size > limit:
                return None
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:  # an alias to a collection it is inside of: infinite once expanded
            return None
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)))
    return sizes.get(id(obj), 1)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse ``text`` (named ``source`` in messages) with PyYAML's safe loader, within the limits above.

    Raises:
        YamlSyntaxError: the text is not valid YAML (syntax, a bad tag or value under an explicit tag).
        ConfigError: the text is too large, too deep, or its aliases expand too far.
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_YAML_BYTES} characters: a config or sweep spec is a few KiB")
    try:
        deepest, aliases = _depth(text)
        if deepest > MAX_DEPTH:
            raise ConfigError(f"{source} nests more than {MAX_DEPTH} levels deep: a config is a few levels of "
                              "sections and keys; flatten it")
        data = yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - the safe loader
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}" if mark else ""
        raise YamlSyntaxError(f"{source} is not valid YAML{where} ({shown(err.problem or 'syntax error')}): "
                              "fix the syntax") from None
    except (yaml.YAMLError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
            RecursionError, UnicodeError) as err:  # the constructors' own errors for bad tagged values
        raise YamlSyntaxError(f"{source} is not valid YAML ({type(err).__name__}: {shown(err)}): fix the value "
                              "or drop its explicit tag (e.g. !!int)") from None
    if aliases and expanded_size(data) is None:
        raise ConfigError(f"{source} uses YAML aliases (*name) that expand to more than {MAX_VALUES} values or "
                          "refer to themselves: write the values out")
    return data


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """Read and parse a YAML file, with one-line errors for a path that is missing, a folder, not a regular file,
    unreadable or not UTF-8 (each said as such, not as "not found")."""
    path = Path(path)
    name = f"{what} '{shown(path)}'"
    if not path.exists():
        raise ConfigError(f"{name} not found: pass a YAML file such as configs/digits.yaml")
    if path.is_dir():
        raise ConfigError(f"{name} is a folder: pass a YAML file inside it")
    if not path.is_file():
        raise ConfigError(f"{name} is not a regular file (a device or pipe): pass a YAML file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{name} cannot be read ({err.strerror or type(err).__name__}): check its permissions") \
            from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{name} is larger than {MAX_YAML_BYTES} bytes: a config or sweep spec is a few KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not UTF-8 text: save it as UTF-8 YAML") from None
    return load_yaml_text(text, name)
