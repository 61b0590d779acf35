"""The ImageNet-1k class index, read from installed packages, and class maps from data to model.

ImageNet-1k's 1000 classes are WordNet synsets in a fixed order (index 0 is ``n01440764``,
*tench*). The order and each synset's lemmas come from the files timm ships
(``timm/data/_info/imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt``, what
``timm.data.ImageNetInfo`` reads); the short names from torchvision's weight metadata
(``ResNet18_Weights.IMAGENET1K_V1.meta["categories"]``, the list every torchvision classifier
carries). Nothing is downloaded.

:func:`map_to_imagenet` turns the class names of a data set (its folder names) into ImageNet
indices; :func:`read_class_map` reads a user's mapping file when names alone do not say.

Example:
    >>> map_to_imagenet(["n01440764", "goldfish", "Great_White_Shark", "Carassius auratus"])
    [0, 1, 2, 1]
    >>> imagenet_wnids()[281], imagenet_names()[281]
    ('n02123045', 'tabby')
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from robustlens.errors import DataFileError, DataNotFoundError, LabelError

__all__ = ["imagenet_names", "imagenet_wnids", "map_to_imagenet", "read_class_map"]

_WNID = re.compile(r"n\d{8}")
_NUM_CLASSES = 1000
_FIX = (
    "rename each such folder to its WordNet id (e.g. 'n01440764' for tench), or give a class-map "
    "file (robustlens.data.read_class_map) with one line per data class: "
    "'<data class><TAB><model index or name>'"
)


def _timm_info_file(name: str) -> Path:
    """Path of ``timm/data/_info/<name>``, found without importing timm."""
    spec = importlib.util.find_spec("timm")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "data" / "_info" / name
        if path.is_file():
            return path
    raise DataNotFoundError(
        f"ImageNet class index: timm's {name} is not installed (looked in "
        f"{', '.join(locations) or 'no timm package'}); install timm (pip install timm)"
    )


@cache
def _wnids() -> tuple[str, ...]:
    path = _timm_info_file("imagenet_synsets.txt")
    wnids = tuple(path.read_text(encoding="utf-8").split())
    if len(wnids) != _NUM_CLASSES or not all(_WNID.fullmatch(w) for w in wnids):
        raise DataFileError(
            f"ImageNet class index: {path} should hold {_NUM_CLASSES} WordNet ids, got "
            f"{len(wnids)}; reinstall timm"
        )
    return wnids


@cache
def _lemmas() -> tuple[tuple[str, ...], ...]:
    """Per class, its lemmas (``("tench", "Tinca tinca")``), in index order."""
    path = _timm_info_file("imagenet_synset_to_lemma.txt")
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, _, lemmas = line.partition("\t")
        table[wnid.strip()] = lemmas
    missing = [w for w in _wnids() if w not in table]
    if missing:
        raise DataFileError(
            f"ImageNet class index: {path} has no lemmas for {missing[:3]}; reinstall timm"
        )
    return tuple(tuple(t.strip() for t in table[w].split(",") if t.strip()) for w in _wnids())


@cache
def _names() -> tuple[str, ...]:
    try:
        from torchvision.models import ResNet18_Weights
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return tuple(lemmas[0] for lemmas in _lemmas())
    names = tuple(str(c) for c in ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != _NUM_CLASSES:  # pragma: no cover - a torchvision that changed its metadata
        return tuple(lemmas[0] for lemmas in _lemmas())
    return names


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids of ImageNet-1k in index order (``n01440764`` is class 0).

    Example:
        >>> wnids = imagenet_wnids()
        >>> len(wnids), wnids[0], wnids[-1]
        (1000, 'n01440764', 'n15075141')
    """
    return list(_wnids())


def imagenet_names() -> list[str]:
    """Short names of the 1000 ImageNet-1k classes in index order (torchvision's ``categories``).

    Example:
        >>> imagenet_names()[:3]
        ['tench', 'goldfish', 'great white shark']
    """
    return list(_names())


def _normalise(name: str) -> str:
    """Case-insensitive, underscores and runs of spaces equivalent: ``'Great_White  Shark'`` ->
    ``'great white shark'``."""
    return " ".join(name.replace("_", " ").lower().split())


@cache
def _lookup() -> dict[str, frozenset[int]]:
    """Normalised key -> the ImageNet indices it names (wnid, short name, lemma, lemma line)."""
    table: dict[str, set[int]] = {}
    for i, (wnid, name, lemmas) in enumerate(zip(_wnids(), _names(), _lemmas(), strict=True)):
        for key in (wnid, name, ", ".join(lemmas), *lemmas):
            table.setdefault(_normalise(key), set()).add(i)
    return {k: frozenset(v) for k, v in table.items()}


def _describe(i: int) -> str:
    return f"{i} ({_wnids()[i]}, {_names()[i]})"


def _resolve_imagenet(name: str) -> tuple[int | None, str]:
    """``(index, "")`` for a name naming one class, else ``(None, why)``."""
    hits = _lookup().get(_normalise(name), frozenset())
    if len(hits) == 1:
        return next(iter(hits)), ""
    if hits:
        options = " or ".join(_describe(i) for i in sorted(hits))
        return None, f"{name!r} is ambiguous: it names {options}"
    close = difflib.get_close_matches(_normalise(name), list(_lookup()), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return None, f"{name!r} names no ImageNet-1k class{hint}"


def map_to_imagenet(names: Sequence[str]) -> list[int]:
    """ImageNet-1k index of each class name, for a data set whose classes are ImageNet's.

    A name may be a WordNet id (``"n01440764"``), a short name as in torchvision's ``categories``
    (``"tench"``, ``"great white shark"``), or any lemma of the synset (``"Carassius auratus"``,
    ``"tabby cat"``). Matching ignores case and treats underscores and spaces alike. A name must
    name exactly one class: ``"crane"`` (the bird, 134, and the machine, 517) does not.

    Args:
        names: class names, typically ``load_folder(...).classes``.

    Returns:
        ``index[k]`` in ``0..999`` for ``names[k]``.

    Raises:
        LabelError: listing every name that matches no class or several, with how to fix it.

    Example:
        >>> map_to_imagenet(["n02123045", "espresso", "projectile"])
        [281, 967, 744]
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise LabelError(
            f"map_to_imagenet: 'names' must be a sequence of class names (str), got {names!r}"
        )
    out: list[int] = []
    problems: list[str] = []
    for name in names:
        index, why = _resolve_imagenet(name)
        if index is None:
            problems.append(why)
        else:
            out.append(index)
    if problems:
        raise LabelError(
            f"map_to_imagenet: {len(problems)} of {len(names)} class name(s) do not name exactly "
            f"one ImageNet-1k class: {'; '.join(problems)}. To fix, {_FIX}"
        )
    return out


# --------------------------------------------------------------------------- class-map files


def _parse_text(path: Path, text: str, data_classes: Sequence[str]) -> dict[str, object]:
    """``data class -> raw value`` from a text file: ``<data class><sep><value>`` per line.

    The separator is a tab, a comma or whitespace. The data class is matched against the known
    names (the longest that the line starts with), so both halves may contain spaces.
    """
    entries: dict[str, object] = {}
    by_length = sorted(data_classes, key=len, reverse=True)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        known = [
            c for c in by_length if line == c or (line.startswith(c) and line[len(c)] in "\t ,")
        ]
        valued = [c for c in known if line[len(c) :].strip(" \t,")]
        value: object
        if valued:
            key, value = valued[0], line[len(valued[0]) :].strip(" \t,")
        elif known:
            raise DataFileError(
                f"read_class_map: line {number} of {path} names data class {known[0]!r} but no "
                "model index or class name after it"
            )
        else:
            sep = "\t" if "\t" in line else "," if "," in line else None
            parts = line.split(sep, 1)
            if len(parts) != 2 or not parts[1].strip(" \t,"):
                raise DataFileError(
                    f"read_class_map: line {number} of {path} is {raw!r}; each line must be "
                    "'<data class><TAB, comma or space><model index or class name>'"
                )
            key, value = parts[0].strip(), parts[1].strip(" \t,")
        if key in entries:
            raise DataFileError(
                f"read_class_map: {path} maps data class {key!r} twice (line {number}); keep one"
            )
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
            value = int(value)
        entries[key] = value
    return entries


def _parse_json(path: Path, text: str) -> dict[str, object]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(
            f"read_class_map: {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f'{exc.colno}); it must be an object such as {{"tabby": 281, "espresso": '
            '"espresso"}'
        ) from exc
    if not isinstance(data, dict):
        raise DataFileError(
            f"read_class_map: {path} holds a JSON {type(data).__name__}, but it must be an object "
            '{"<data class>": <model index or class name>, ...}'
        )
    return {str(k): v for k, v in data.items()}


def _resolve_model_class(value: str, model_classes: Sequence[str]) -> tuple[int | None, str]:
    """Index of ``value`` in ``model_classes``: exact first, then normalised and unique."""
    exact = [i for i, c in enumerate(model_classes) if c == value]
    if len(exact) == 1:
        return exact[0], ""
    loose = [i for i, c in enumerate(model_classes) if _normalise(c) == _normalise(value)]
    if len(loose) == 1:
        return loose[0], ""
    if len(exact) + len(loose) > 1:
        return None, f"{value!r} names several model classes ({sorted(set(exact + loose))})"
    close = difflib.get_close_matches(value, list(model_classes), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return None, f"{value!r} is not one of the model's {len(model_classes)} classes{hint}"


def read_class_map(
    path: str | Path,
    data_classes: Sequence[str],
    model_classes: Sequence[str] | None = None,
) -> list[int]:
    """Model class index of each data class, from a user's mapping file.

    Two formats, chosen by content (a file starting with ``{`` is JSON):

    - JSON, an object ``{"<data class>": <model index or model class name>, ...}``: a number is
      an index, a string a name;
    - text, one line per data class, ``<data class><TAB, comma or space><index or name>``
      (blank lines and lines starting with ``#`` are skipped); a value of digits only is an
      index. Data-class names may contain spaces: the longest known data class a line starts
      with is taken.

    Names are looked up in ``model_classes`` (exactly, then ignoring case and ``_``/space), or,
    when ``model_classes`` is ``None``, as ImageNet-1k classes the way :func:`map_to_imagenet`
    does (WordNet id, short name or lemma). Entries for names that are not data classes are
    allowed (one file may serve several subsets of a data set).

    Args:
        path: the mapping file.
        data_classes: the data set's class names (``ds.classes``); every one must be mapped.
        model_classes: the model's class names, or ``None`` for an ImageNet-1k model.

    Returns:
        ``index[k]`` (``>= 0``, and ``< len(model_classes)`` when given) for ``data_classes[k]``.

    Raises:
        DataNotFoundError: no file at ``path``.
        DataFileError: malformed JSON or lines.
        LabelError: unmapped data classes, unknown or ambiguous names, indices out of range.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "map.txt"
        >>> _ = f.write_text("kitty\\ttabby\\ncup 967\\n")
        >>> read_class_map(f, ["cup", "kitty"])
        [967, 281]
    """
    where = "read_class_map"
    file = Path(path)
    if not file.is_file():
        raise DataNotFoundError(
            f"{where}: no class-map file at {file}; give the path of a JSON or text file mapping "
            "each data class to a model index or class name"
        )
    data_classes = [str(c) for c in data_classes]
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{where}: cannot read {file} as UTF-8 text ({exc})") from exc
    if text.lstrip().startswith(("{", "[")) or file.suffix.lower() == ".json":
        entries = _parse_json(file, text)
    else:
        entries = _parse_text(file, text, data_classes)

    missing = [c for c in data_classes if c not in entries]
    if missing:
        extra = sorted(set(entries) - set(data_classes))
        unused = f"; the file maps {extra[:5]}, which are not data classes" if extra else ""
        raise LabelError(
            f"{where}: {file} maps {len(data_classes) - len(missing)} of {len(data_classes)} "
            f"data classes; no entry for {missing}{unused}. Add a line or key for each"
        )
    k = None if model_classes is None else len(model_classes)
    out: list[int] = []
    problems: list[str] = []
    for cls in data_classes:
        value = entries[cls]
        index: int | None
        if isinstance(value, int) and not isinstance(value, bool):
            index, why = value, ""
            if value < 0 or (k is not None and value >= k):
                bound = f"an int in 0..{k - 1}" if k is not None else "an int >= 0"
                index, why = None, f"{cls!r} -> {value}: a model index must be {bound}"
        elif isinstance(value, str) and value.strip():
            if model_classes is None:
                index, why = _resolve_imagenet(value)
            else:
                index, why = _resolve_model_class(value, [str(c) for c in model_classes])
            if index is None:
                why = f"{cls!r} -> {why}"
        else:
            index = None
            why = f"{cls!r} -> {value!r}: a value must be a model index (int >= 0) or a class name"
        if index is None:
            problems.append(why)
        else:
            out.append(index)
    if problems:
        raise LabelError(f"{where}: {file}: {'; '.join(problems)}")
    return out
