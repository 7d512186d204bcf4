"""Class legend: the shipped legend, label lookup, colour table and the checks on a legend file."""

from pathlib import Path

import pytest

from cropflow.legend import Legend

LEGEND = Path(__file__).parents[1] / "resources" / "legend.yaml"


def write(tmp_path, text: str) -> str:
    path = tmp_path / "legend.yaml"
    path.write_text(text)
    return str(path)


def test_shipped_legend_has_the_seven_study_classes():
    legend = Legend.load(str(LEGEND))
    assert legend.ids == [1, 2, 3, 4, 5, 6, 7]
    assert legend.names == ["maize", "soybean", "wheat", "other_crops", "forest", "water", "residential"]
    assert legend.cropland_ids == [1, 2, 3, 4]
    assert legend.nodata == 0
    assert legend.index_of(5) == 4


def test_lookup_maps_names_and_aliases_to_ids():
    table = Legend.load(str(LEGEND)).lookup()
    assert table["maize"] == 1 and table["corn"] == 1 and table["zea mays"] == 1
    assert table["soybeans"] == 2 and table["glycine max"] == 2
    assert table["spring wheat"] == 3
    assert table["rice"] == 4 and table["other_crops"] == 4
    assert table["woodland"] == 5 and table["lake"] == 6 and table["built-up"] == 7
    assert all(key == key.lower() for key in table)


def test_lookup_is_case_insensitive_for_names_and_aliases(tmp_path):
    legend = Legend.load(write(tmp_path, """
nodata: 0
classes:
  - {id: 1, name: Maize, color: "#f4c20d", cropland: true, aliases: [CORN, "Zea Mays"]}
  - {id: 2, name: Forest, color: "#0b5d1e", aliases: [WoodLand]}
"""))
    table = legend.lookup()
    for text, class_id in [("MAIZE", 1), ("Corn", 1), ("zea MAYS", 1), ("forest", 2), ("woodland", 2)]:
        assert table[text.lower()] == class_id
    assert legend.names == ["Maize", "Forest"]  # names keep their spelling
    assert legend.cropland_ids == [1]           # cropland defaults to false


def test_colormap_has_class_colours_and_transparent_nodata():
    legend = Legend.load(str(LEGEND))
    cmap = legend.colormap()
    assert sorted(cmap) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert cmap[0] == (0, 0, 0, 0)
    assert cmap[1] == (0xF4, 0xC2, 0x0D, 255)
    assert cmap[7] == (0x8C, 0x8C, 0x8C, 255)
    assert all(v[3] == 255 for k, v in cmap.items() if k != 0)


def test_colormap_uses_a_custom_nodata(tmp_path):
    legend = Legend.load(write(tmp_path, """
nodata: 255
classes:
  - {id: 1, name: maize, color: "#000001"}
"""))
    assert legend.colormap() == {1: (0, 0, 1, 255), 255: (0, 0, 0, 0)}


def test_duplicate_ids_raise_naming_the_file(tmp_path):
    path = write(tmp_path, """
classes:
  - {id: 1, name: maize, color: "#f4c20d"}
  - {id: 1, name: soybean, color: "#3cba54"}
""")
    with pytest.raises(ValueError, match=r"legend .*legend\.yaml: class ids must be unique"):
        Legend.load(path)


@pytest.mark.parametrize("bad_id", [0, 255, -3])
def test_ids_outside_1_254_raise(tmp_path, bad_id):
    path = write(tmp_path, f"nodata: 300\nclasses:\n  - {{id: {bad_id}, name: maize, color: '#f4c20d'}}\n")
    with pytest.raises(ValueError, match="1..254"):
        Legend.load(path)


def test_nodata_equal_to_a_class_id_raises(tmp_path):
    path = write(tmp_path, """
nodata: 2
classes:
  - {id: 1, name: maize, color: "#f4c20d"}
  - {id: 2, name: soybean, color: "#3cba54"}
""")
    with pytest.raises(ValueError, match=r"legend\.yaml: nodata value 2 is also a class id"):
        Legend.load(path)


@pytest.mark.parametrize("text", [
    "classes:\n  - {id: 1, name: maize}\n",            # no colour
    "classes:\n  - {name: maize, color: '#f4c20d'}\n",  # no id
    "classes:\n  - {id: 1, color: '#f4c20d'}\n",        # no name
    "nodata: 0\n",                                      # no classes
    "",                                                 # empty file
])
def test_missing_keys_raise_naming_the_file(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=r"legend .*legend\.yaml: every class needs id, name and color"):
        Legend.load(path)
