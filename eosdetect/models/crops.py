"""What the helper classifier sees: its picture of an image, and the crops cut from it.

The one place where crops for the helper are made, at inference (the
model's pipeline) and for training (helper crops from labels, the bundled
recipes): the image is resized to ``helper_pixel_size_um``, white-balanced
on its background when the config says so, and cut around points given in
pixels of the input image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eosdetect.core.colour import apply_gains, background_gains
from eosdetect.core.geometry import axis_factors, extract_crops, resize, to_resized
from eosdetect.models.config import ModelConfig


@dataclass(frozen=True)
class HelperView:
    """An image as the helper sees it.

    Attributes
    ----------
    image : (m, n, 3) ndarray of uint8
        The input image at ``helper_pixel_size_um``, white-balanced when the
        config asks for it.
    factors : (float, float)
        Input pixels per view pixel, ``(fx, fy)``.
    """

    image: np.ndarray
    factors: tuple[float, float]

    def crops(self, xy, size: int) -> np.ndarray:
        """Crops of ``size`` view pixels around points ``xy`` (x, y; input pixels).

        Returns
        -------
        (n, size, size, 3) ndarray of uint8
        """
        return extract_crops(self.image, to_resized(xy, self.factors), size)


def helper_view(image: np.ndarray, config: ModelConfig, pixel_size_um: float | None = None, *,
                model_view: np.ndarray | None = None, gains=None) -> HelperView:
    """The picture the helper takes its crops from.

    Parameters
    ----------
    image : (M, N, 3) ndarray of uint8
        Input image.
    config : ModelConfig
    pixel_size_um : float, optional
        Input pixel size (default: the model's ``input_pixel_size_um``).
    model_view : (m, n, 3) ndarray of uint8, optional
        ``image`` already resized for the U-Net; reused (not modified) when
        the helper's pixel size is the U-Net's.
    gains : (3,) array_like, optional
        White-balance gains (``helper_white_balance``); default the
        :func:`~eosdetect.core.colour.background_gains` of this picture. A
        slide passes its own, so that every block is balanced alike.

    Returns
    -------
    HelperView
    """
    unet_scale = config.scale_for(pixel_size_um)
    scale = unet_scale * config.pixel_size_um / config.helper_pixel_size_um
    if model_view is not None and abs(scale - unet_scale) < 1e-9:
        view = model_view
    else:
        view = resize(image, scale)
    if config.helper_white_balance:
        view = apply_gains(view, background_gains(view) if gains is None else gains)
    return HelperView(view, axis_factors(image.shape, view.shape))


def helper_crops(image: np.ndarray, config: ModelConfig, xy, pixel_size_um: float | None = None, *,
                 extra: int = 0, gains=None) -> np.ndarray:
    """Crops around points ``xy`` (x, y; input pixels) exactly as the model's
    helper sees them, ``extra`` pixels larger (room for training augmentation).

    Returns
    -------
    (n, S + extra, S + extra, 3) ndarray of uint8
        ``S`` is ``config.helper_crop_size``.
    """
    view = helper_view(image, config, pixel_size_um, gains=gains)
    return view.crops(xy, config.helper_crop_size + extra)
