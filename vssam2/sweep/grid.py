"""The points of a sweep: one parameter, a grid of several, masklet sources, refinement rules.

A sweep is a mapping ``{parameter: [values]}`` in the order the table shows it (the first
parameter varies slowest)::

    {"window": [1, 4, 8, 16]}                                         # Table 4
    {"window": [8, 32], "proposal.points_per_side": [16, 32]}         # a grid: 4 points
    {"source": [{"class_path": ..., "init_args": ..., "label": ...}, ...]}   # source comparison
    {"refinement.min_share": [0.0, 0.5, 0.8]}                         # the vote's threshold
    {"refinement.rule": [{"class_path": "vssam2.fusion.MajorityVote"},
                         {"class_path": "vssam2.fusion.QualityGate", "init_args": ..., "label": ...}]}  # rules

Parameters are dotted attribute paths of the masklet source (``window``,
``proposal.pred_iou_thresh``, ...), ``source`` (values are source configs, optionally with a
``label``), ``refinement.min_area`` / ``refinement.min_share`` (the majority vote's
thresholds), or ``refinement.rule`` (values are refinement rule configs,
:mod:`vssam2.fusion.rules`, optionally with a ``label``; not combined with the vote's
thresholds). Every point is a distinct (masklet configuration, refinement rule); points with
the same masklet configuration share one masklet cache folder.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vssam2.fusion.rules import MajorityVote, RefinementRule
from vssam2.masklets.base import MaskletSource
from vssam2.masklets.cache import cache_key

#: Parameter whose values are masklet source configs.
SOURCE_PARAMETER = "source"
#: Prefix of the parameters of the refinement rule.
REFINEMENT_PREFIX = "refinement."
#: Fields of the majority vote a sweep may vary, with their types.
REFINEMENT_FIELDS: dict[str, type] = {"min_area": int, "min_share": float}
#: Parameter whose values are refinement rule configs.
RULE_PARAMETER = "refinement.rule"


@dataclass
class SweepPoint:
    """One point of a sweep: a row (per model) of the table and a run of the W&B group.

    Attributes:
        values: ``{parameter: value}`` of this point (JSON values; a source as its label).
        label: the point's name in tables, plots and W&B (``"4"``, ``"window=8, proposal.points_per_side=16"``).
        source: the masklet source of this point.
        min_area: refinement: masklets with fewer pixels keep the base prediction.
        min_share: refinement: masklets whose winning class has a smaller share keep the base.
        clip_len: frames per vote (the source's window when tied, else the data's clip_len).
        masklet_key: cache key of the point's masklet configuration (shared by points that
            differ only in the refinement).
        rule: the point's refinement rule when the grid sweeps ``refinement.rule`` (else the
            majority vote with ``min_area`` / ``min_share``).
    """

    values: dict[str, Any]
    label: str
    source: MaskletSource
    min_area: int = 0
    min_share: float = 0.0
    clip_len: int = 0
    masklet_key: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    rule: RefinementRule | None = None

    def refinement_rule(self) -> RefinementRule:
        """The rule this point refines with."""
        return self.rule if self.rule is not None else MajorityVote(self.min_area, self.min_share)


def _coerce(value: Any, current: Any, path: str) -> Any:
    """``value`` converted to the type of the attribute's current value (bool / int / float)."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise TypeError(f"sweep parameter {path!r} is a bool, got {value!r}")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise TypeError(f"sweep parameter {path!r} is an int, got {value!r}")
        return int(value)
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"sweep parameter {path!r} is a float, got {value!r}")
        return float(value)
    return value


def _resolve(source: Any, path: str) -> tuple[Any, str]:
    """The object holding the last attribute of the dotted ``path`` and that attribute's name.

    Raises:
        AttributeError: naming the missing part, the source and the attributes that exist there.
    """
    if not path or any(not part or part.startswith("_") for part in path.split(".")):
        raise AttributeError(f"sweep parameter {path!r} is not a dotted path of public attributes (e.g. 'window')")
    parts = path.split(".")
    holder = source
    for depth, part in enumerate(parts):
        if not hasattr(holder, part):
            where = ".".join(parts[:depth]) or type(source).__name__
            names = sorted(k for k in vars(holder) if not k.startswith("_")) if hasattr(holder, "__dict__") else []
            raise AttributeError(
                f"sweep parameter {path!r} does not apply to the source {type(source).__name__} "
                f"({getattr(source, 'name', '?')}): {where} ({type(holder).__name__}) has no attribute {part!r}; "
                f"its attributes: {', '.join(names) or 'none'}"
            )
        if depth < len(parts) - 1:
            holder = getattr(holder, part)
    return holder, parts[-1]


def with_parameter(source: MaskletSource, path: str, value: Any) -> MaskletSource:
    """A copy of ``source`` with the attribute at dotted ``path`` set to ``value``.

    Models already built are shared with the copy, not copied (swept parameters do not change
    a model's weights).

    Args:
        source: the masklet source (not modified).
        path: attribute path, e.g. ``"window"`` or ``"proposal.points_per_side"``.
        value: the new value; converted to the current value's type (bool / int / float).

    Raises:
        AttributeError: when the path does not exist on the source.
        TypeError: when the value does not fit the attribute's type.
        ValueError: ``window`` < 1.
    """
    _resolve(source, path)  # fail on the original, before copying a model
    memo = {id(v): v for v in vars(source).values() if isinstance(v, torch.nn.Module)}
    predictor = getattr(source, "_predictor", None)
    if predictor is not None:
        memo[id(predictor)] = predictor
    clone = copy.deepcopy(source, memo)
    if getattr(clone, "_proposer", None) is not None:
        clone._proposer = None  # rebuilt on first use from the new proposal parameters
    holder, name = _resolve(clone, path)
    value = _coerce(value, getattr(holder, name), path)
    if name == "window" and (not isinstance(value, int) or value < 1):
        raise ValueError(f"sweep parameter {path!r}: window must be an int >= 1, got {value!r}")
    if dataclasses.is_dataclass(holder) and type(holder).__dataclass_params__.frozen:
        object.__setattr__(holder, name, value)
    else:
        setattr(holder, name, value)
    return clone


def _build(base: type, config: Any) -> Any:
    """An instance of a subclass of ``base`` from ``{class_path, init_args}`` (parsed by
    jsonargparse: nested dataclasses work); an instance is returned as it is."""
    if isinstance(config, base):
        return config
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "value", required=True)
    namespace = parser.parse_object({"value": dict(config)})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(namespace).value


def build_source(config: MaskletSource | Mapping[str, Any]) -> MaskletSource:
    """A masklet source from ``{class_path, init_args}``."""
    return _build(MaskletSource, config)


def build_rule(config: RefinementRule | Mapping[str, Any]) -> RefinementRule:
    """A refinement rule from ``{class_path, init_args}``."""
    return _build(RefinementRule, config)


def _labelled(values: Sequence[Any], base: type, parameter: str) -> list[tuple[str, Any]]:
    """(label, instance) per config of a ``base`` subclass; the label defaults to the
    instance's ``name``, and a repeated label gets ``#2``, ``#3``."""
    items: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for value in values:
        label = None
        if isinstance(value, Mapping):
            value = dict(value)
            label = value.pop("label", None)
        elif not isinstance(value, base):
            raise ValueError(
                f"sweep parameter {parameter!r}: each value is a config {{class_path: ..., init_args: ..., "
                f"label: ...}} of a {base.__name__}, got {value!r}"
            )
        built = _build(base, value)
        label = str(label or built.name)
        seen[label] = seen.get(label, 0) + 1
        items.append((label if seen[label] == 1 else f"{label}#{seen[label]}", built))
    return items


def value_label(value: Any) -> str:
    """A value as the table shows it (``4``, ``0.5``, ``True``)."""
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def clip_len_for(source: MaskletSource, data_clip_len: int, tie_clip_len: bool = True) -> int:
    """Frames per chunk (= per vote): the source's ``window`` when tied, else the data's ``clip_len``."""
    window = getattr(source, "window", None)
    if tie_clip_len and isinstance(window, int) and not isinstance(window, bool):
        return window
    return int(data_clip_len)


def check_grid(grid: Mapping[str, Sequence[Any]], source: MaskletSource | None) -> None:
    """Fails on an empty grid, an empty value list, an unknown refinement field or a missing source."""
    if not grid:
        raise ValueError("the sweep grid is empty: give at least one {parameter: [values]}")
    for parameter, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"sweep parameter {parameter!r} needs a non-empty list of values, got {values!r}")
        if parameter.startswith(REFINEMENT_PREFIX) and parameter != RULE_PARAMETER:
            name = parameter[len(REFINEMENT_PREFIX) :]
            if name not in REFINEMENT_FIELDS:
                raise ValueError(
                    f"sweep parameter {parameter!r}: the refinement has no field {name!r}; "
                    f"it has {', '.join(REFINEMENT_PREFIX + k for k in REFINEMENT_FIELDS)} and {RULE_PARAMETER}"
                )
            if RULE_PARAMETER in grid:
                raise ValueError(
                    f"sweep parameters {parameter!r} and {RULE_PARAMETER!r} together: the vote's thresholds apply "
                    "to the majority vote only; give each rule its own init_args instead"
                )
    if SOURCE_PARAMETER not in grid and source is None:
        raise ValueError(
            f"a sweep of {list(grid)} needs a masklet source (model.source), or 'source' as a parameter of the grid"
        )


def expand_grid(
    grid: Mapping[str, Sequence[Any]],
    source: MaskletSource | None,
    data_clip_len: int,
    layout: str,
    num_classes: int,
    min_area: int = 0,
    min_share: float = 0.0,
    tie_clip_len: bool = True,
) -> list[SweepPoint]:
    """Every point of the grid (the first parameter varies slowest), checked.

    Args:
        grid: ``{parameter: [values]}`` (see the module docstring).
        source: the source the source parameters are set on (None when ``source`` is swept).
        data_clip_len: the data's ``clip_len`` (votes of sources without a window).
        layout: dataset layout name (part of the masklet cache key).
        num_classes: number of evaluation classes (part of the masklet cache key).
        min_area, min_share: the refinement rule where the grid does not set it.
        tie_clip_len: vote per window for windowed sources.

    Raises:
        AttributeError: a source parameter that does not apply to a source (names both).
        TypeError: a value of the wrong type.
        ValueError: an empty grid, an unknown refinement field, two points that are the same.
    """
    from vssam2.masklets.cache import cache_config

    check_grid(grid, source)
    dims: list[list[tuple[str, Any, Any]]] = []  # per parameter: (label, JSON value, value)
    for parameter, values in grid.items():
        if parameter == SOURCE_PARAMETER:
            dims.append([(label, label, built) for label, built in _labelled(values, MaskletSource, parameter)])
        elif parameter == RULE_PARAMETER:
            dims.append([(label, label, rule) for label, rule in _labelled(values, RefinementRule, parameter)])
        else:
            dims.append([(value_label(v), v, v) for v in values])
    names = list(grid)
    points: list[SweepPoint] = []
    seen: dict[tuple[str, str], str] = {}
    for combo in itertools.product(*dims):
        point_source = source
        rule: RefinementRule | None = None
        refinement = {"min_area": int(min_area), "min_share": float(min_share)}
        if SOURCE_PARAMETER in names:
            point_source = combo[names.index(SOURCE_PARAMETER)][2]
        for parameter, (_, _, value) in zip(names, combo):
            if parameter == SOURCE_PARAMETER:
                continue
            if parameter == RULE_PARAMETER:
                rule = value
            elif parameter.startswith(REFINEMENT_PREFIX):
                name = parameter[len(REFINEMENT_PREFIX) :]
                refinement[name] = _coerce(value, REFINEMENT_FIELDS[name](0), parameter)
            else:
                point_source = with_parameter(point_source, parameter, value)
        if refinement["min_area"] < 0 or not 0.0 <= refinement["min_share"] <= 1.0:
            raise ValueError(f"sweep point {combo}: need min_area >= 0 and 0 <= min_share <= 1, got {refinement}")
        label = combo[0][0] if len(names) == 1 else ", ".join(f"{p}={lab}" for p, (lab, _, _) in zip(names, combo))
        clip_len = clip_len_for(point_source, data_clip_len, tie_clip_len)
        config = cache_config(point_source, layout, clip_len, num_classes)
        key = cache_key(config)
        decided_by = rule if rule is not None else MajorityVote(refinement["min_area"], refinement["min_share"])
        identity = (key, json.dumps(decided_by.config(), sort_keys=True, default=str))
        if identity in seen:
            raise ValueError(
                f"sweep points {seen[identity]!r} and {label!r} are the same masklet configuration and refinement "
                "(a duplicate value, or a parameter that is not part of the source's config())"
            )
        seen[identity] = label
        points.append(
            SweepPoint(
                values={p: v for p, (_, v, _) in zip(names, combo)},
                label=label,
                source=point_source,
                min_area=refinement["min_area"],
                min_share=refinement["min_share"],
                clip_len=clip_len,
                masklet_key=key,
                config=config,
                rule=rule,
            )
        )
    return points
