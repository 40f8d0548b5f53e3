"""Text prompts of the SAM 3 source: built from class names, templates, synonyms, subsets and
(phrase, class) pairs; read from YAML with errors that name the file and the bad value; the
shipped configs/prompts/vspw.yaml prompts every VSPW class."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import yaml

from vssam2.labels import NUM_CLASSES, ClassTable, vspw_classes
from vssam2.masklets.prompts import (
    PromptSet,
    load_prompts,
    name_phrases,
    normalize_prompt,
    resolve_prompts,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "configs" / "prompts" / "vspw.yaml"
NAMES = vspw_classes().names


def write(tmp_path: Path, data: object, name: str = "prompts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_name_phrases():
    assert name_phrases("wall") == ("wall",)
    assert name_phrases("other_machine") == ("other machine",)
    assert name_phrases("Microwave_oven") == ("microwave oven",)
    assert name_phrases("handrail_or_fence") == ("handrail", "fence")
    assert name_phrases("billboard_or_Bulletin_Board") == ("billboard", "bulletin board")
    assert name_phrases("cupboard_or_showcase_or_storage_rack") == ("cupboard", "showcase", "storage rack")
    assert name_phrases("flower_pot_or_vase", split_alternatives=False) == ("flower pot or vase",)
    assert normalize_prompt("  Traffic \t Light ") == "traffic light"


def test_names_and_ids_round_trip():
    prompts = PromptSet.from_names(NAMES)
    assert prompts.num_classes == NUM_CLASSES == len(NAMES)
    assert prompts.classes == tuple(range(NUM_CLASSES))
    assert len(prompts.prompts) == len(prompts.prompt_class) == len(set(prompts.prompts)) == len(prompts)
    assert list(prompts.prompt_class) == sorted(prompts.prompt_class)  # by class id
    for c, name in enumerate(NAMES):
        assert prompts.class_prompts[c] == name_phrases(name)
        for prompt in prompts.class_prompts[c]:
            assert prompts.class_of(prompt) == c
            assert prompts.prompt_class[prompts.prompts.index(prompt)] == c
    assert prompts.class_of("Sky") == NAMES.index("sky")  # compared as the tokenizer sees it
    assert prompts.class_of("fence") == prompts.class_of("handrail") == NAMES.index("handrail_or_fence")
    with pytest.raises(KeyError, match="'unicorn' is not one of the"):
        prompts.class_of("unicorn")
    assert PromptSet.from_names(NAMES) == prompts and hash(PromptSet.from_names(NAMES)) == hash(prompts)
    copy = pickle.loads(pickle.dumps(prompts))  # sources travel to other processes
    assert copy == prompts and copy.class_of("fence") == prompts.class_of("fence")


def test_template_is_applied_to_names_and_synonyms():
    prompts = PromptSet.from_names(NAMES, template="a {} in a video", synonyms={"sky": ["Clouds"]})
    sky = NAMES.index("sky")
    assert prompts.class_prompts[sky] == ("a sky in a video", "a clouds in a video")
    assert prompts.class_prompts[0] == ("a wall in a video",)
    assert all(p.startswith("a ") and p.endswith(" in a video") for p in prompts.prompts)
    assert prompts.to_dict()["template"] == "a {} in a video"
    assert PromptSet.from_names(NAMES, template="{x} {}").class_prompts[0] == ("{x} wall",)  # other braces: text


def test_synonyms_add_prompts_of_their_class():
    base = PromptSet.from_names(NAMES)
    prompts = PromptSet.from_names(NAMES, synonyms={"road": ["street", "Asphalt  Road"], "sky": "clouds"})
    road, sky = NAMES.index("road"), NAMES.index("sky")
    assert prompts.class_prompts[road] == ("road", "street", "asphalt road")
    assert prompts.class_prompts[sky] == ("sky", "clouds")
    assert prompts.class_of("street") == road and prompts.class_of("asphalt road") == road
    assert len(prompts) == len(base) + 3
    # The same phrase twice for one class is one prompt (SAM 3 merges identical prompts anyway).
    again = PromptSet.from_names(NAMES, synonyms={"road": ["road", "street", "STREET"]})
    assert again.class_prompts[road] == ("road", "street")


def test_subset_prompts_only_those_classes():
    prompts = PromptSet.from_names(NAMES, classes=["sky", "road", "handrail_or_fence"], synonyms={"wall": ["brick"]})
    assert prompts.num_classes == NUM_CLASSES  # class ids stay the dataset's
    assert prompts.classes == tuple(sorted(NAMES.index(n) for n in ("sky", "road", "handrail_or_fence")))
    assert prompts.prompts == ("handrail", "fence", "road", "sky")  # by class id; wall's synonym unused
    assert prompts.prompt_class == (7, 7, 18, 28)
    assert all(not prompts.class_prompts[c] for c in range(NUM_CLASSES) if c not in prompts.classes)


def test_pairs():
    prompts = PromptSet.from_pairs([("Person", 60), ("people", 60), ("car", 48)], NUM_CLASSES)
    assert prompts.prompts == ("car", "person", "people") and prompts.prompt_class == (48, 60, 60)
    assert PromptSet.from_pairs({"cat": 1, "dog": 2}, 3, template="photo of a {}").prompts == (
        "photo of a cat",
        "photo of a dog",
    )
    with pytest.raises(ValueError, match=r"my pairs: class of 'dog' must be an id in 0\.\.2, got 3"):
        PromptSet.from_pairs([("dog", 3)], 3, source="my pairs")
    with pytest.raises(ValueError, match=r"my pairs: prompt 'dog' is given for classes 1 and 2"):
        PromptSet.from_pairs([("dog", 1), ("Dog", 2)], 3, source="my pairs")
    with pytest.raises(ValueError, match="my pairs: no"):
        PromptSet.from_pairs([], 3, source="my pairs")


def test_to_dict_is_json_and_changes_with_every_prompt():
    prompts = load_prompts(SHIPPED, NUM_CLASSES)
    data = prompts.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["prompts"] == list(prompts.prompts) and data["prompt_class"] == list(prompts.prompt_class)
    assert data["template"] == prompts.template and data["num_classes"] == NUM_CLASSES
    other = PromptSet.from_names(NAMES, synonyms={"sky": ["clouds", "blue sky"]})
    assert other.to_dict() != PromptSet.from_names(NAMES, synonyms={"sky": ["clouds"]}).to_dict()


def test_prompt_set_checks_its_invariants():
    with pytest.raises(ValueError, match="no prompts for any of the 2 classes"):
        PromptSet(((), ()))
    with pytest.raises(ValueError, match="'wall' is given for classes 0 and 1"):
        PromptSet((("wall",), ("wall",)))
    with pytest.raises(ValueError, match="'Wall' of class 0 is not normalized"):
        PromptSet((("Wall",),))


# --------------------------------------------------------------------------------- YAML files


def test_shipped_config_loads_and_covers_every_class():
    prompts = load_prompts(SHIPPED, NUM_CLASSES)
    assert prompts.classes == tuple(range(NUM_CLASSES)) and prompts.template == "{}"
    data = yaml.safe_load(SHIPPED.read_text())
    assert set(data["synonyms"]) <= set(NAMES)
    for name, phrases in data["synonyms"].items():
        c = NAMES.index(name)
        assert set(name_phrases(name)) | {normalize_prompt(p) for p in phrases} == set(prompts.class_prompts[c])
    assert len(prompts) > len(PromptSet.from_names(NAMES))


def test_resolve_prompts():
    assert resolve_prompts(None, NUM_CLASSES) == PromptSet.from_names(NAMES)
    assert resolve_prompts(str(SHIPPED), NUM_CLASSES) == load_prompts(SHIPPED, NUM_CLASSES)
    given = PromptSet.from_pairs([("cat", 1)], 3)
    assert resolve_prompts(given, 3) is given
    with pytest.raises(ValueError, match="PromptSet of 3 classes for a dataset of 124"):
        resolve_prompts(given, NUM_CLASSES)
    with pytest.raises(ValueError, match="default prompts: the dataset has 19 classes"):
        resolve_prompts(None, 19)


def test_empty_file_prompts_every_class_by_name(tmp_path):
    assert load_prompts(write(tmp_path, ""), NUM_CLASSES) == PromptSet.from_names(NAMES)
    loaded = load_prompts(write(tmp_path, {"split_alternatives": False}), NUM_CLASSES)
    assert loaded.class_prompts[7] == ("handrail or fence",)


def test_file_with_every_key(tmp_path):
    path = write(tmp_path, {"template": "{} in the scene", "synonyms": {"sky": ["clouds"]}, "classes": ["sky", "wall"]})
    prompts = load_prompts(path, NUM_CLASSES)
    assert prompts.prompts == ("wall in the scene", "sky in the scene", "clouds in the scene")
    assert prompts.prompt_class == (0, 28, 28)


def test_unknown_class_names_are_listed_with_close_matches(tmp_path):
    path = write(tmp_path, {"synonyms": {"flower_pot": ["vase"], "walls": ["brick"], "zzz": ["x"]}})
    with pytest.raises(ValueError) as error:
        load_prompts(path, NUM_CLASSES)
    message = str(error.value)
    assert message.startswith(f"{path}: synonyms: unknown class names")
    assert "'flower_pot' (did you mean 'flower_pot_or_vase'" in message
    assert "'walls' (did you mean 'wall'" in message and "'zzz'," not in message and message.count("'zzz'") == 1
    path = write(tmp_path, {"classes": ["sky", "microwave_oven"]})
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(path))}: classes: unknown class names 'microwave_oven' "
        r"\(did you mean 'Microwave_oven'",
    ):
        load_prompts(path, NUM_CLASSES)


def test_empty_class_list(tmp_path):
    path = write(tmp_path, {"classes": []})
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: classes is empty"):
        load_prompts(path, NUM_CLASSES)


@pytest.mark.parametrize("template", ["a photo", "{} and {}", "{0}", 3])
def test_template_needs_exactly_one_placeholder(tmp_path, template):
    path = write(tmp_path, {"template": template})
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: template must be .*got {re.escape(repr(template))}"
    ):
        load_prompts(path, NUM_CLASSES)


def test_class_count_must_match_the_dataset(tmp_path):
    path = write(tmp_path, {})
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: the dataset has 19 classes but .* the 124 of VSPW's"
    ):
        load_prompts(path, 19)
    table = ClassTable(names=("cat", "dog", "bird_or_fish"), raw_ids=(1, 2, 3))
    assert load_prompts(path, 3, table).prompts == ("cat", "dog", "bird", "fish")


def test_a_prompt_can_name_only_one_class(tmp_path):
    path = write(tmp_path, {"synonyms": {"wall": ["Floor"]}})
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(path))}: synonyms.wall: prompt 'floor' is already a prompt of class 'floor'",
    ):
        load_prompts(path, NUM_CLASSES)
    path = write(tmp_path, {"synonyms": {"sky": ["clouds"], "sea": ["clouds"]}})
    with pytest.raises(
        ValueError, match=r"synonyms.sea: prompt 'clouds' is already a prompt of class 'sky' \(synonyms.sky\)"
    ):
        load_prompts(path, NUM_CLASSES)


def test_bad_keys_and_values_name_the_file(tmp_path):
    cases = [
        ({"tempalte": "{}"}, r"unknown keys 'tempalte' \(did you mean 'template'"),
        ({"synonyms": ["sky"]}, r"synonyms must map class names to lists of phrases, got \['sky'\]"),
        ({"synonyms": {"sky": [1]}}, r"synonyms.sky must be a list of phrases, got \[1\]"),
        ({"synonyms": {"sky": [" "]}}, r"synonyms.sky: empty phrase ' '"),
        ({"classes": "sky"}, r"classes must be a list of class names, got 'sky'"),
        ({"split_alternatives": "yes"}, r"split_alternatives must be true or false, got 'yes'"),
        (["sky"], r"expected a mapping with keys"),
    ]
    for data, pattern in cases:
        path = write(tmp_path, data)
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: {pattern}"):
            load_prompts(path, NUM_CLASSES)
    path = write(tmp_path, "template: [unclosed")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not valid YAML"):
        load_prompts(path, NUM_CLASSES)
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.yaml", NUM_CLASSES)
