"""Text prompts of a text-prompted masklet source (SAM 3): which phrases, and which class each names.

SAM 3 segments every instance of a short noun phrase, so a semantic-segmentation dataset is
prompted with one or more phrases per class; the class of the phrase that found a masklet is
its ``label`` in the score table (:class:`vssam2.masklets.base.MaskletTable`). A
:class:`PromptSet` holds those phrases, built from the dataset's class names::

    prompts = PromptSet.from_names(vspw_classes().names, synonyms={"sky": ["clouds"]})
    processor.add_text_prompt(session, list(prompts.prompts))  # prompt i gets session prompt id i
    label = prompts.class_of(prompt_text)                      # from prompt_to_obj_ids

or from a YAML file (:func:`load_prompts`, ``configs/prompts/vspw.yaml``) with the optional keys
``template``, ``synonyms``, ``classes`` and ``split_alternatives``.

A class name becomes phrases by replacing underscores with spaces and lowercasing; VSPW's
"A_or_B" names ("handrail_or_fence", "cupboard_or_showcase_or_storage_rack") become one phrase
per alternative ("handrail", "fence"), since SAM 3 is trained on single noun phrases, not
disjunctions. Every phrase — name-derived and synonym alike — goes through the template.

Prompts are stored lowercased with whitespace collapsed: the SAM 3 tokenizer (CLIP's) does the
same, so two spellings that differ only there are one prompt to the model. The processor merges
prompts of identical text, so the prompts are unique: a phrase given for two different classes
is an error, a phrase given twice for the same class is kept once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vssam2.labels import ClassTable, vspw_classes

#: The default template: the bare phrase.
DEFAULT_TEMPLATE: str = "{}"
#: Keys a prompts YAML file may hold.
PROMPT_FILE_KEYS: tuple[str, ...] = ("template", "synonyms", "classes", "split_alternatives")
_ALTERNATIVE_SEPARATOR = "_or_"


def normalize_prompt(text: str) -> str:
    """A prompt as the SAM 3 tokenizer sees it: lowercased, whitespace collapsed and stripped."""
    return " ".join(text.split()).lower()


def name_phrases(name: str, split_alternatives: bool = True) -> tuple[str, ...]:
    """The noun phrases of a class name.

    Args:
        name: a class name as the class table spells it ("flower_pot_or_vase").
        split_alternatives: one phrase per "_or_" alternative ("flower pot", "vase");
            False keeps the whole name ("flower pot or vase").

    Returns:
        The normalized phrases, in the name's order.
    """
    parts = name.split(_ALTERNATIVE_SEPARATOR) if split_alternatives else [name]
    phrases = [normalize_prompt(part.replace("_", " ")) for part in parts]
    return tuple(dict.fromkeys(phrase for phrase in phrases if phrase))


def check_template(template: Any, source: str, key: str = "template") -> str:
    """Returns ``template`` if it is a string with exactly one ``{}`` (where the phrase goes).

    Raises:
        ValueError: naming ``source``, ``key`` and the template.
    """
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(
            f"{source}: {key} must be a string with exactly one '{{}}' (where the class phrase goes), got {template!r}"
        )
    return template


def _apply(template: str, phrase: str) -> str:
    # str.replace, not str.format: other braces in a template are literal text.
    return normalize_prompt(template.replace("{}", phrase))


def _unknown_names(names: Iterable[str], known: Sequence[str]) -> str:
    """'a' (did you mean 'b'?), … for error messages."""
    lowered = {k.lower(): k for k in known}
    described = []
    for name in names:
        # One alternative of an "A_or_B" name is the likeliest slip ("fence", "flower_pot").
        wanted = normalize_prompt(str(name).replace("_", " "))
        close = [k for k in known if wanted in name_phrases(k)]
        # Then spelling, ignoring case ("microwave_oven" for "Microwave_oven").
        close += [lowered[m] for m in difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.6)]
        close = list(dict.fromkeys(close))[:3]
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        described.append(f"{name!r}{hint}")
    return ", ".join(described)


@dataclass(frozen=True)
class PromptSet:
    """The text prompts of every class of a dataset.

    Attributes:
        class_prompts: per class id 0…C−1, the prompts SAM 3 is given for it (empty for
            classes that are not prompted).
        template: the template the prompts were made with (part of the cache key).
        prompts: every prompt, in the order they are given to SAM 3: by class id, within a
            class in the order given (derived from ``class_prompts``).
        prompt_class: class id of each of ``prompts`` (derived).
    """

    class_prompts: tuple[tuple[str, ...], ...]
    template: str = DEFAULT_TEMPLATE
    prompts: tuple[str, ...] = field(init=False)
    prompt_class: tuple[int, ...] = field(init=False)
    _class_of: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        class_prompts = tuple(tuple(prompts) for prompts in self.class_prompts)
        check_template(self.template, "PromptSet")
        prompts = tuple(prompt for group in class_prompts for prompt in group)
        prompt_class = tuple(c for c, group in enumerate(class_prompts) for _ in group)
        if not prompts:
            raise ValueError(f"PromptSet: no prompts for any of the {len(class_prompts)} classes")
        seen: dict[str, int] = {}
        for prompt, c in zip(prompts, prompt_class):
            if prompt != normalize_prompt(prompt) or not prompt:
                raise ValueError(f"PromptSet: prompt {prompt!r} of class {c} is not normalized (normalize_prompt)")
            if prompt in seen:
                raise ValueError(f"PromptSet: prompt {prompt!r} is given for classes {seen[prompt]} and {c}")
            seen[prompt] = c
        object.__setattr__(self, "class_prompts", class_prompts)
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "prompt_class", prompt_class)
        object.__setattr__(self, "_class_of", seen)

    @property
    def num_classes(self) -> int:
        """C: the dataset's number of classes (prompted or not)."""
        return len(self.class_prompts)

    @property
    def classes(self) -> tuple[int, ...]:
        """Ids of the classes that have prompts, ascending."""
        return tuple(c for c, group in enumerate(self.class_prompts) if group)

    def __len__(self) -> int:
        return len(self.prompts)

    def class_of(self, prompt: str) -> int:
        """Class id of a prompt (as given to or returned by SAM 3; compared normalized).

        Raises:
            KeyError: naming the prompt when it is not one of :attr:`prompts`.
        """
        try:
            return self._class_of[normalize_prompt(prompt)]
        except KeyError:
            raise KeyError(f"{prompt!r} is not one of the {len(self.prompts)} prompts") from None

    def to_dict(self) -> dict[str, Any]:
        """What the masklets depend on, JSON-able (for cache keys): template, prompts, their classes."""
        return {
            "template": self.template,
            "num_classes": self.num_classes,
            "prompts": list(self.prompts),
            "prompt_class": list(self.prompt_class),
        }

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        template: str = DEFAULT_TEMPLATE,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        classes: Sequence[str] | None = None,
        split_alternatives: bool = True,
        source: str = "prompts",
    ) -> PromptSet:
        """Prompts made from a dataset's class names.

        Args:
            names: class name per class id (``vspw_classes().names``).
            template: where the phrase goes, exactly one ``{}`` ("{}", "a {} in a video").
            synonyms: extra phrases per class name ({"sky": ["clouds"]}); they go through the
                template too and come after the name's own phrases. Synonyms of classes
                outside ``classes`` are not used.
            classes: prompt only these class names (None: every class).
            split_alternatives: one phrase per alternative of "A_or_B" names (:func:`name_phrases`).
            source: what the arguments came from, for errors (a file path).

        Raises:
            ValueError: naming ``source`` and the offending value, on an unknown class name (with
                close matches), an empty selection, a bad template or synonym, or a phrase
                given for two classes.
        """
        names = tuple(names)
        check_template(template, source)
        synonyms = dict(synonyms or {})
        index = {name: c for c, name in enumerate(names)}
        if len(index) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"{source}: the class table repeats names {repeated}")
        for key, chosen in (("synonyms", list(synonyms)), ("classes", list(classes or []))):
            unknown = [name for name in chosen if name not in index]
            if unknown:
                raise ValueError(
                    f"{source}: {key}: unknown class names {_unknown_names(unknown, names)}; class names are "
                    f"spelled as in the class table of {len(names)} classes (e.g. {names[0]!r}, {names[-1]!r})"
                )
        if classes is not None and not list(classes):
            raise ValueError(f"{source}: classes is empty: no class would be prompted (leave it out for all classes)")
        wanted = set(range(len(names))) if classes is None else {index[name] for name in classes}
        groups: list[list[str]] = [[] for _ in names]
        origin: dict[str, tuple[int, str]] = {}  # prompt → (class, where it was given)

        def add(c: int, phrase: str, where: str) -> None:
            prompt = _apply(template, phrase)
            if not prompt:
                raise ValueError(f"{source}: {where}: empty prompt")
            if prompt in origin:
                other, other_where = origin[prompt]
                if other == c:
                    return  # the same phrase twice for one class: one prompt
                raise ValueError(
                    f"{source}: {where}: prompt {prompt!r} is already a prompt of class {names[other]!r} "
                    f"({other_where}); a prompt can name only one class"
                )
            origin[prompt] = (c, where)
            groups[c].append(prompt)

        for c in sorted(wanted):
            for phrase in name_phrases(names[c], split_alternatives):
                add(c, phrase, f"the name of class {names[c]!r}")
        # By class id, not in the mapping's order: the prompt order (and the cache key) does not
        # depend on how a file happens to order its keys.
        for name, phrases in sorted(synonyms.items(), key=lambda item: index[item[0]]):
            where = f"synonyms.{name}"
            if isinstance(phrases, str):
                phrases = [phrases]
            if not isinstance(phrases, (list, tuple)) or not all(isinstance(p, str) for p in phrases):
                raise ValueError(f"{source}: {where} must be a list of phrases, got {phrases!r}")
            if index[name] not in wanted:
                continue
            for phrase in phrases:
                if not normalize_prompt(phrase):
                    raise ValueError(f"{source}: {where}: empty phrase {phrase!r}")
                add(index[name], normalize_prompt(phrase), where)
        return cls(tuple(tuple(group) for group in groups), template)

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[str, int]] | Mapping[str, int],
        num_classes: int,
        template: str = DEFAULT_TEMPLATE,
        source: str = "prompts",
    ) -> PromptSet:
        """Prompts given one by one as (phrase, class id) pairs.

        Args:
            pairs: (phrase, class id) pairs, or a mapping phrase → class id, in prompt order
                (within a class, the order of :attr:`prompts` is the order given).
            num_classes: C, the dataset's number of classes.
            template: applied to every phrase, as in :meth:`from_names`.
            source: what the pairs came from, for errors.

        Raises:
            ValueError: naming ``source`` on an empty list, a class id outside 0…C−1, an empty
                phrase or a phrase given for two classes.
        """
        check_template(template, source)
        items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
        if not items:
            raise ValueError(f"{source}: no (phrase, class) pairs")
        groups: list[list[str]] = [[] for _ in range(int(num_classes))]
        owner: dict[str, int] = {}
        for phrase, c in items:
            if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < num_classes:
                raise ValueError(f"{source}: class of {phrase!r} must be an id in 0..{num_classes - 1}, got {c!r}")
            prompt = _apply(template, normalize_prompt(str(phrase)))
            if not normalize_prompt(str(phrase)) or not prompt:
                raise ValueError(f"{source}: empty phrase {phrase!r} for class {c}")
            if prompt in owner and owner[prompt] != c:
                raise ValueError(
                    f"{source}: prompt {prompt!r} is given for classes {owner[prompt]} and {c}; "
                    "a prompt can name only one class"
                )
            if prompt not in owner:
                owner[prompt] = c
                groups[c].append(prompt)
        return cls(tuple(tuple(group) for group in groups), template)


def load_prompts(path: str | Path, num_classes: int, class_table: ClassTable | None = None) -> PromptSet:
    """Reads a prompts YAML file (every key optional; an empty file prompts every class by name).

    Keys: ``template`` (str with one ``{}``, default "{}"), ``synonyms`` (class name → list of
    extra phrases), ``classes`` (list of class names to prompt; default all) and
    ``split_alternatives`` (bool, default true), as in :meth:`PromptSet.from_names`.

    Args:
        path: the YAML file.
        num_classes: the dataset's number of classes; must be the class table's.
        class_table: the class names the file refers to (default: VSPW's 124, which VIPSeg
            shares in this project).

    Raises:
        ValueError: naming the file and the offending key or value.
        FileNotFoundError: when the file does not exist.
    """
    path = Path(path)
    table = class_table if class_table is not None else vspw_classes()
    source = str(path)
    if int(num_classes) != table.num_classes:
        which = "the given class table" if class_table is not None else "VSPW's (vssam2/data/vspw_classes.tsv)"
        raise ValueError(
            f"{source}: the dataset has {num_classes} classes but the prompts' class names are the "
            f"{table.num_classes} of {which}; give load_prompts the dataset's class table"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}: no such prompt file (a YAML file with template / synonyms / classes, e.g. "
            "configs/prompts/vspw.yaml; a list of prompts goes in as a list)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not valid YAML ({error})") from error
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with keys {list(PROMPT_FILE_KEYS)}, got {type(data).__name__}")
    unknown = [key for key in data if key not in PROMPT_FILE_KEYS]
    if unknown:
        raise ValueError(f"{source}: unknown keys {_unknown_names(unknown, PROMPT_FILE_KEYS)}")
    template = data.get("template", DEFAULT_TEMPLATE)
    check_template(template, source)
    synonyms = data.get("synonyms") or {}
    if not isinstance(synonyms, dict):
        raise ValueError(f"{source}: synonyms must map class names to lists of phrases, got {synonyms!r}")
    classes = data.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{source}: classes must be a list of class names, got {classes!r}")
    split_alternatives = data.get("split_alternatives", True)
    if not isinstance(split_alternatives, bool):
        raise ValueError(f"{source}: split_alternatives must be true or false, got {split_alternatives!r}")
    return PromptSet.from_names(table.names, template, synonyms, classes, split_alternatives, source)


def resolve_prompts(prompts: str | Path | PromptSet | None, num_classes: int) -> PromptSet:
    """A source's ``prompts`` argument as a :class:`PromptSet`.

    Args:
        prompts: a prompt set, a YAML file (:func:`load_prompts`), or None for every class of
            the VSPW class table by name.
        num_classes: the dataset's number of classes.

    Raises:
        ValueError: as :func:`load_prompts`, or when a prompt set's class count is not ``num_classes``.
    """
    if prompts is None:
        table = vspw_classes()
        if int(num_classes) != table.num_classes:
            raise ValueError(
                f"default prompts: the dataset has {num_classes} classes but the VSPW class table "
                f"{table.num_classes}; give prompts= (a YAML file or a PromptSet)"
            )
        return PromptSet.from_names(table.names, source="default prompts")
    if isinstance(prompts, PromptSet):
        if prompts.num_classes != int(num_classes):
            raise ValueError(f"prompts: a PromptSet of {prompts.num_classes} classes for a dataset of {num_classes}")
        return prompts
    return load_prompts(prompts, num_classes)
