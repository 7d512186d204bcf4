"""The class legend: integer codes, names, colours, which classes are cropland, and label aliases."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml


@dataclass(frozen=True)
class LegendClass:
    id: int
    name: str
    color: str
    cropland: bool
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rgba(self) -> tuple[int, int, int, int]:
        h = self.color.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)


@dataclass(frozen=True)
class Legend:
    classes: tuple[LegendClass, ...]
    nodata: int = 0

    @classmethod
    def load(cls, path: str) -> "Legend":
        with open(path) as f:
            doc = yaml.safe_load(f)
        try:
            classes = tuple(
                LegendClass(int(c["id"]), str(c["name"]), str(c["color"]), bool(c.get("cropland", False)),
                            tuple(str(a).lower() for a in c.get("aliases", [])))
                for c in doc["classes"]
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"legend {path}: every class needs id, name and color ({err})") from err
        ids = [c.id for c in classes]
        if len(set(ids)) != len(ids) or any(not 1 <= i <= 254 for i in ids):
            raise ValueError(f"legend {path}: class ids must be unique integers in 1..254")
        nodata = int(doc.get("nodata", 0))
        if nodata in ids:
            raise ValueError(f"legend {path}: nodata value {nodata} is also a class id")
        return cls(classes, nodata)

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def cropland_ids(self) -> list[int]:
        return [c.id for c in self.classes if c.cropland]

    def index_of(self, class_id: int) -> int:
        """Position of a class id in the legend (the model's output index)."""
        return self.ids.index(class_id)

    def lookup(self) -> dict[str, int]:
        """Label text (name or alias, lower case) -> class id."""
        table: dict[str, int] = {}
        for c in self.classes:
            for key in (c.name.lower(), *c.aliases):
                table[key] = c.id
        return table

    def categories(self) -> dict[int, str]:
        """Class id -> class name (the class map's category metadata)."""
        return {c.id: c.name for c in self.classes}

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table: every class colour, nodata transparent."""
        cmap = {c.id: c.rgba for c in self.classes}
        cmap[self.nodata] = (0, 0, 0, 0)
        return cmap
