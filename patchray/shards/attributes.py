"""Attribute metadata: which labels a dataset has, their classes, and how they mirror.

A labeled crop stores one integer per attribute in a column ``attr_<name>``:
0 means N/A (the cue is hidden or unknown), 1..K index ``classes``.
The mirror rules live here, with the data, so that a trainer that flips crops
horizontally never needs to know what "left" means for a given dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NA = 0
COLUMN_PREFIX = "attr_"


@dataclass(frozen=True)
class Attribute:
    name: str
    classes: tuple[str, ...]
    # Attribute whose values trade places with this one under a horizontal flip
    # (HasBagInHandLeft <-> HasBagInHandRight). Must name a partner with the same classes.
    mirror_partner: str | None = None
    # Class pairs that trade places under a horizontal flip (Orientation left <-> right).
    mirror_classes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"attribute name {self.name!r} must be alphanumeric (underscores allowed)")
        if len(self.classes) < 2:
            raise ValueError(f"attribute {self.name!r} needs at least two classes, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"attribute {self.name!r} has repeated class names: {list(self.classes)}")
        for a, b in self.mirror_classes:
            if a not in self.classes or b not in self.classes:
                raise ValueError(f"attribute {self.name!r}: mirror pair ({a!r}, {b!r}) names an unknown class")

    @property
    def column(self) -> str:
        return COLUMN_PREFIX + self.name

    @property
    def num_classes(self) -> int:
        """Number of real classes, N/A not counted."""
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    def value(self, class_name: str | None) -> int:
        """Stored integer for a class name; None means N/A."""
        if class_name is None:
            return NA
        try:
            return self.classes.index(class_name) + 1
        except ValueError:
            raise ValueError(
                f"attribute {self.name!r} has no class {class_name!r}; classes: {list(self.classes)}") from None

    def class_permutation(self) -> np.ndarray:
        """perm[v] = stored value after a horizontal flip, for v in 0..K (0 = N/A stays N/A)."""
        perm = np.arange(self.num_classes + 1, dtype=np.int64)
        for a, b in self.mirror_classes:
            ia, ib = self.value(a), self.value(b)
            perm[ia], perm[ib] = ib, ia
        return perm

    def to_dict(self) -> dict:
        d = {"name": self.name, "classes": list(self.classes)}
        if self.mirror_partner:
            d["mirror_partner"] = self.mirror_partner
        if self.mirror_classes:
            d["mirror_classes"] = [list(p) for p in self.mirror_classes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Attribute:
        unknown = set(d) - {"name", "classes", "mirror_partner", "mirror_classes"}
        if unknown:
            raise ValueError(f"attribute entry {d.get('name')!r} has unknown keys {sorted(unknown)}")
        return cls(
            name=d["name"],
            classes=tuple(d["classes"]),
            mirror_partner=d.get("mirror_partner"),
            mirror_classes=tuple(tuple(p) for p in d.get("mirror_classes", ())),
        )


@dataclass(frozen=True)
class AttributeSet:
    attributes: tuple[Attribute, ...] = field(default_factory=tuple)

    def __post_init__(self):
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"attribute names repeat: {names}")
        by_name = {a.name: a for a in self.attributes}
        for a in self.attributes:
            if a.mirror_partner is None:
                continue
            p = by_name.get(a.mirror_partner)
            if p is None:
                raise ValueError(f"attribute {a.name!r}: mirror partner {a.mirror_partner!r} is not in the set")
            if p.mirror_partner != a.name:
                raise ValueError(f"attribute {a.name!r}: partner {p.name!r} does not name it back")
            if p.classes != a.classes:
                raise ValueError(f"attributes {a.name!r} and {p.name!r} swap under mirroring but differ in classes")

    def __len__(self) -> int:
        return len(self.attributes)

    def __iter__(self):
        return iter(self.attributes)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def columns(self) -> list[str]:
        return [a.column for a in self.attributes]

    def __getitem__(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(f"no attribute {name!r}; have {self.names}")

    def mirror(self, labels: np.ndarray) -> np.ndarray:
        """Labels of horizontally flipped crops.

        ``labels`` is [N, A] (or [A]) in this set's order. Partner columns swap,
        then each attribute's classes are permuted.
        """
        labels = np.asarray(labels)
        index = {a.name: i for i, a in enumerate(self.attributes)}
        src = [index[a.mirror_partner] if a.mirror_partner else i for i, a in enumerate(self.attributes)]
        out = labels[..., src].copy()
        for i, a in enumerate(self.attributes):
            if a.mirror_classes:
                out[..., i] = a.class_permutation()[out[..., i]]
        return out

    def to_list(self) -> list[dict]:
        return [a.to_dict() for a in self.attributes]

    @classmethod
    def from_list(cls, items: list[dict]) -> AttributeSet:
        return cls(tuple(Attribute.from_dict(d) for d in items))


def _yes_no(name: str, partner: str | None = None) -> Attribute:
    return Attribute(name, ("no", "yes"), mirror_partner=partner)


# PARSE-27k's attributes (Sudowe et al. 2015), 4-way orientation.
# Left/right are the person's own sides; Orientation "left" means the person
# faces the left edge of the image.
PARSE27K = AttributeSet((
    Attribute("Orientation", ("front", "back", "left", "right"), mirror_classes=(("left", "right"),)),
    Attribute("Gender", ("male", "female")),
    Attribute("Posture", ("standing", "walking")),
    _yes_no("HasBagOnShoulderLeft", "HasBagOnShoulderRight"),
    _yes_no("HasBagOnShoulderRight", "HasBagOnShoulderLeft"),
    _yes_no("HasBagInHandLeft", "HasBagInHandRight"),
    _yes_no("HasBagInHandRight", "HasBagInHandLeft"),
    _yes_no("HasTrolley"),
    _yes_no("HasBackpack"),
    _yes_no("isPushing"),
    _yes_no("isTalkingOnPhone"),
))

# PARSE-27k's 8-way orientation (the dataset's ``Orientation8``), in the dataset's own order (its tools,
# psudowe/parse27k_tools attribute_datasets.py). A horizontal flip swaps the left and right halves of the
# circle; front and back stay.
ORIENTATION8 = Attribute(
    "Orientation8",
    ("front", "front-right", "right", "back-right", "back", "back-left", "left", "front-left"),
    mirror_classes=(("front-right", "front-left"), ("right", "left"), ("back-right", "back-left")),
)

# PARSE-27k with both orientations, as the dataset's own preprocessing writes them: 4-way ``Orientation``
# (whose accuracy the metrics report), then ``Orientation8``, then the other ten attributes.
PARSE27K_BOTH_ORIENTATIONS = AttributeSet((PARSE27K["Orientation"], ORIENTATION8, *PARSE27K.attributes[1:]))
