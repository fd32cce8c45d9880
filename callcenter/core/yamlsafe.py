"""YAML for admins' files (config, IVR flows, KB front matter): PyYAML's SafeLoader, except that a
scalar that looks like a date but is none (``2024-13-01``, ``2024-02-30``) is a marked YAML error at
that scalar instead of the ValueError PyYAML's timestamp constructor raises (found by fuzzing the IVR
loader: it escaped as a crash, and ``callcenter config check`` printed a traceback)."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import ScalarNode

__all__ = ["SafeLoader", "safe_load"]


class SafeLoader(yaml.SafeLoader):
    pass


def _timestamp(loader: SafeLoader, node: ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError) as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a valid date or time: {exc}", node.start_mark
        ) from None


SafeLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the loader above; raises :class:`yaml.YAMLError` for bad input."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - SafeLoader subclass: no arbitrary objects
