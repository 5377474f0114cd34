r"""A small convolutional feature extractor followed by an FFNN head.

"Bilevel Learning of Deep Representations" embeds its three layer variants
in the final classification layers of a CNN, whose architecture is given in
a supplement that we do not have. :class:`ConvFFNN` uses a small, common
design instead; see its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmbilevel.legendre import Legendre
from mmbilevel.nn.models import FFNN
from mmbilevel.nn.preprocess import resolve_activation

__all__ = ["ConvFFNN"]


class ConvFFNN(nn.Module):
    r"""CNN feature extractor followed by an FFNN head of any variant.

    Architecture, for images of shape (C, H, W):

    1. two blocks Conv2d(3 × 3, padding 1) → ReLU → MaxPool2d(2), with
       ``channels`` = (32, 64) output channels by default;
    2. flatten to 64 · ⌊H/4⌋ · ⌊W/4⌋ values (3136 for 28 × 28, 4096 for
       32 × 32) and a linear map to ``features`` = d values;
    3. the activation ρ itself, which maps ℝ into the interior of dom φ, so
       that the Bregman layers of the head receive valid points;
    4. an :class:`~mmbilevel.nn.FFNN` head, d → ``hidden`` → out_features,
       of the chosen variant (one hidden layer of width d by default, the
       "CNN + FFNN 1 hidden layer" setting).

    Step 3 is fixed: it has no parameters beyond the linear map of step 2.
    ``init`` applies to the FFNN head; the convolutions and the linear map
    of step 2 always use PyTorch's default random initialisation.

    Args:
        in_channels: image channels, 1 for MNIST and Fashion-MNIST, 3 for CIFAR-10.
        image_size: image height and width, an int for square images.
        out_features: number of classes.
        activation: catalogue name or ``Legendre`` object of the head.
        variant: ``"standard"``, ``"euclidean"`` or ``"bregman"``.
        init: ``"random"`` or ``"deterministic"`` (head only).
        features: width d of the feature vector.
        hidden: hidden widths of the head; ``(features,)`` when None.
        channels: output channels of the two convolution blocks.
        skip, clamp: passed to the head (see :class:`~mmbilevel.nn.FFNN`).
        device: device of the parameters.
        dtype: floating dtype of the parameters.

    Shape:
        - Input: (N, in_channels, H, W) with (H, W) = ``image_size``, any
          real values (for example pixels mapped by
          :func:`mmbilevel.nn.to_domain`); another shape raises ValueError.
        - Output: (N, out_features).

    Example:
        >>> model = ConvFFNN(1, 28, 10, "arctan", "bregman", features=16)
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int | tuple[int, int],
        out_features: int,
        activation: str | Legendre = "arctan",
        variant: str = "bregman",
        init: str = "random",
        *,
        features: int = 128,
        hidden: Sequence[int] | None = None,
        channels: tuple[int, int] = (32, 64),
        skip: str = "fixed",
        clamp: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if height < 4 or width < 4:
            raise ValueError(f"image_size={image_size!r} must be at least 4 × 4 for two 2 × 2 poolings")
        factory = {"device": device, "dtype": dtype}
        self.phi = resolve_activation(activation)
        self.in_channels = in_channels
        self.image_size = (height, width)

        first, second = channels
        self.extractor = nn.Sequential(
            nn.Conv2d(in_channels, first, kernel_size=3, padding=1, **factory),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, kernel_size=3, padding=1, **factory),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = second * (height // 4) * (width // 4)
        self.projection = nn.Linear(flat, features, **factory)
        self.head = FFNN(
            features,
            list(hidden) if hidden is not None else [features],
            out_features,
            self.phi,
            variant,
            init,
            skip=skip,
            clamp=clamp,
            **factory,
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature vector ρ(P · flatten(CNN(x))) in dom φ, shape (N, features).

        Raises:
            ValueError: x is not shaped (N, in_channels, height, width) with the
                ``in_channels`` and ``image_size`` of the model.
        """
        self._check_input(x)
        return self.phi.grad_conjugate(self.projection(self.extractor(x)))

    def _check_input(self, x: torch.Tensor) -> None:
        # Sizes that pool to the same grid (29 × 29 and 28 × 28) would pass the
        # linear map silently, and others fail there with a bare shape error.
        expected = (self.in_channels, *self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape (N, {expected[0]}, {expected[1]}, {expected[2]}), that "
                f"is (channels, height, width) = {expected} from in_channels and image_size, got "
                f"shape {tuple(x.shape)}; resize the images, or build the model with "
                "image_size=(height, width) and in_channels of the data"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def hidden_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature vector followed by every hidden output of the head."""
        return self.head.hidden_outputs(self.features(x))
