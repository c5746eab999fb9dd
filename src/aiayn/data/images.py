"""Images for the Vision Transformer: the built-in digits, a folder of a user's images, augmentation.

Shapes: N images, C channels, S side (pixels). Pixel values are floats in [0, 1] (``0`` = dark).

* ``builtin:digits`` — scikit-learn's bundled handwritten digits: 1797 grey 8x8 images (light strokes on
  a dark ground, 17 levels), classes ``0``-``9``. Split once and for all: within each class, images are
  ordered by a SHA-256 of their index, and the first 20% are ``test``, the next 10% ``valid``, the rest
  ``train`` (1257 / 180 / 360 images). The order depends on nothing but the index, so every
  scikit-learn, numpy and aiayn version gives the same split.
* ``FOLDER`` — one sub-folder per class, named after it, holding image files (PNG, JPEG, BMP, GIF,
  TIFF, WebP). Every image is converted to grey or RGB and resized to ``S x S`` (stretched, not
  cropped: a classifier should see the whole picture). Hidden files and folders are skipped.

Images are read with Pillow, which matplotlib already depends on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import AiaynError, DataError
from .builtin.specs import BuiltinKind, is_builtin, resolve_builtin

__all__ = [
    "DIGITS_CLASSES",
    "IMAGE_SUFFIXES",
    "ImageSet",
    "detect_channels",
    "list_image_folder",
    "load_digits",
    "load_image",
    "load_image_folder",
    "load_images",
    "random_affine",
    "random_shift",
    "stratified_holdout",
]

DIGITS_CLASSES: tuple[str, ...] = tuple("0123456789")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_SPLITS = ("train", "valid", "test")
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass
class ImageSet:
    """Images with their labels.

    Attributes:
        images: ``(N, C, S, S)`` float32 in [0, 1].
        labels: ``(N,)`` long class indices.
        classes: class names; ``labels`` index into it.
        sources: where each image came from (a file path, or ``digits:INDEX``).
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | Tensor) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.classes,
            [self.sources[i] for i in index.tolist()],
        )


# ---- built-in digits --------------------------------------------------------------------------------
def _digits_split_of(index: int, rank: int, count: int) -> str:
    """Split of the ``rank``-th (hash order) of ``count`` images of one class."""
    n_test = round(0.2 * count)
    n_valid = round(0.1 * count)
    if rank < n_test:
        return "test"
    return "valid" if rank < n_test + n_valid else "train"


def load_digits(split: str) -> ImageSet:
    """One split of scikit-learn's 8x8 digits (see the module docstring), values scaled to [0, 1].

    Raises:
        AiaynError: unknown split, or scikit-learn is not installed.
    """
    if split not in _SPLITS:
        raise AiaynError(f"builtin:digits has splits {', '.join(_SPLITS)}, not {split!r}")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise AiaynError(
            "builtin:digits needs scikit-learn (it ships the images): pip install scikit-learn"
        ) from None
    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # 17 grey levels, 0..16
    target = np.asarray(bunch.target, dtype=np.int64)
    chosen: list[int] = []
    for digit in range(10):
        members = np.flatnonzero(target == digit).tolist()
        members.sort(key=lambda i: hashlib.sha256(f"digits:{i}".encode()).hexdigest())
        chosen.extend(
            i for rank, i in enumerate(members) if _digits_split_of(i, rank, len(members)) == split
        )
    chosen.sort()
    index = np.asarray(chosen, dtype=np.int64)
    return ImageSet(
        torch.from_numpy(images[index]).unsqueeze(1),  # (N, 1, 8, 8)
        torch.from_numpy(target[index]),
        DIGITS_CLASSES,
        [f"digits:{i}" for i in chosen],
    )


# ---- files ------------------------------------------------------------------------------------------
def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise DataError(path, "no such image file")
    if not path.is_file():
        raise DataError(path, "not a file")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(path, f"not a readable image ({e})") from None
    return image


def load_image(path: str | Path, size: int, channels: int) -> Tensor:
    """Read one image as ``(C, size, size)`` float32 in [0, 1] (grey for C=1, RGB for C=3).

    Transparent images are put on black first, so a transparent background reads as dark.

    Raises:
        DataError: missing, unreadable or not an image.
        ValueError: ``channels`` is not 1 or 3.
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    image = _open(path)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image.alpha_composite(rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0  # (S, S) or (S, S, 3)
    if channels == 1:
        return torch.from_numpy(array.copy()).unsqueeze(0)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def list_image_folder(folder: str | Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """The classes (sub-folder names, sorted) and ``(file, class index)`` of a class-per-folder tree.

    Raises:
        DataError: the folder is missing, has fewer than two class folders, or a class folder holds
            no image files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(folder, "no such folder")
    if not folder.is_dir():
        raise DataError(folder, "not a folder (expected one sub-folder of images per class)")
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(
            folder,
            f"found {len(class_dirs)} class folder(s); need at least 2 (one sub-folder per class)",
        )
    items: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            f
            for f in class_dir.rglob("*")
            if f.is_file()
            and f.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(class_dir).parts)
        )
        if not files:
            raise DataError(
                class_dir,
                f"class folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})",
            )
        items.extend((f, label) for f in files)
    return tuple(d.name for d in class_dirs), items


def detect_channels(paths: Sequence[str | Path]) -> int:
    """1 when every image is grey, else 3."""
    for path in paths:
        image = _open(Path(path))
        if image.mode not in _GREY_MODES and not (image.mode == "P" and _palette_is_grey(image)):
            return 3
    return 1


def _palette_is_grey(image) -> bool:
    palette = image.getpalette() or []
    rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def load_image_folder(
    folder: str | Path,
    size: int,
    channels: int | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSet:
    """Every image of a class-per-sub-folder tree.

    Args:
        folder: the tree.
        size: side the images are resized to.
        channels: 1 or 3; None = 1 if every image is grey, else 3.
        classes: the class names a trained model knows, in its order; the folder must use the same
            names (it may lack some). None = the folder's own sorted names.

    Raises:
        DataError: see :func:`list_image_folder`, :func:`load_image`; a class the model doesn't know.
    """
    found, items = list_image_folder(folder)
    if classes is not None:
        known = {name: i for i, name in enumerate(classes)}
        unknown = [name for name in found if name not in known]
        if unknown:
            raise DataError(
                folder, f"class folder(s) {unknown} are not classes of the model ({list(classes)})"
            )
        items = [(path, known[found[label]]) for path, label in items]
        found = tuple(classes)
    if channels is None:
        channels = detect_channels([p for p, _ in items])
    images = torch.stack([load_image(p, size, channels) for p, _ in items])  # (N, C, S, S)
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return ImageSet(images, labels, found, [str(p) for p, _ in items])


def load_images(
    spec: str,
    split: str,
    size: int | None = None,
    channels: int | None = None,
    classes: Sequence[str] | None = None,
) -> ImageSet:
    """``builtin:digits`` (the given split, native 8x8 unless ``size`` says otherwise) or a folder.

    A folder is read whole whatever ``split`` says (hold-out is the caller's choice).

    Raises:
        AiaynError: a built-in name that is unknown or not an image set, or a folder without ``size``.
    """
    if is_builtin(spec):
        resolve_builtin(spec, BuiltinKind.IMAGES)  # the digits are the only built-in image set
        data = load_digits(split)
        if channels not in (None, 1):
            data.images = data.images.expand(-1, channels, -1, -1).contiguous()
        if size is not None and size != data.images.shape[-1]:
            data.images = torch.nn.functional.interpolate(
                data.images, size=(size, size), mode="bilinear", align_corners=False
            )
        return data
    if size is None:
        raise AiaynError("an image folder needs an image size")
    return load_image_folder(spec, size, channels, classes)


# ---- splitting and augmentation ---------------------------------------------------------------------
def stratified_holdout(labels: Tensor, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices ``(train, held_out)``: about ``fraction`` of each class held out.

    A class with at least two images gives at least one to each side; a single image stays in train.
    """
    gen = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).squeeze(1)
        members = members[torch.randperm(len(members), generator=gen)]
        k = 0 if len(members) < 2 else min(len(members) - 1, max(1, round(fraction * len(members))))
        held.append(members[:k])
        train.append(members[k:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, filling with zeros (dark).

    The cheapest augmentation that keeps every class's meaning (digits, objects): it teaches the
    model that a stroke one pixel to the left is the same stroke.

    Args:
        images: ``(N, C, S, S)``.
        max_shift: largest shift per axis.
        generator: the random source.

    Returns:
        ``(N, C, S, S)``.
    """
    if max_shift <= 0:
        return images
    N, C, H, W = images.shape
    m = max_shift
    padded = torch.nn.functional.pad(images, (m, m, m, m))  # (N, C, H + 2m, W + 2m)
    dy = torch.randint(0, 2 * m + 1, (N,), generator=generator)
    dx = torch.randint(0, 2 * m + 1, (N,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None, :]).to(images.device)  # (N, H)
    cols = (dx[:, None] + torch.arange(W)[None, :]).to(images.device)  # (N, W)
    n = torch.arange(N, device=images.device)[:, None, None, None]
    c = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[n, c, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)


def random_affine(
    images: Tensor,
    generator: torch.Generator,
    degrees: float = 10.0,
    scale: float = 0.1,
    translate: float = 0.125,
) -> Tensor:
    """Rotate, scale and translate each image at random (bilinear, filling with zeros).

    Handwriting varies in slant, size and position more than in anything else; small random affine
    maps teach a model with no built-in invariance (a ViT) that such changes keep the class.

    Args:
        images: ``(N, C, S, S)``.
        generator: the random source.
        degrees: largest rotation either way.
        scale: zoom drawn from ``[1 - scale, 1 + scale]``.
        translate: largest shift per axis, as a fraction of the side.

    Returns:
        ``(N, C, S, S)``.
    """
    N = images.shape[0]

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(N, generator=generator)

    angle = uniform(-degrees, degrees) * (torch.pi / 180)
    zoom = uniform(1 - scale, 1 + scale)
    # affine_grid maps output coordinates to input ones in [-1, 1]: the inverse of the wanted map,
    # so the image grows when the sampling grid shrinks (divide by the zoom).
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift = 2 * translate * (2 * torch.rand(N, 2, generator=generator) - 1)  # (N, 2)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(images)  # (N, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
