"""What the gallery refuses: bad input, another model's embeddings, people it does not hold."""

from __future__ import annotations


class GalleryError(ValueError):
    """Bad input to the gallery (identity name, images, embeddings, γ, rule)."""


class ModelVersionMismatch(GalleryError):
    """Embeddings from another model version than the one the gallery holds."""


class UnknownIdentityError(LookupError):
    """The named identity is not enrolled."""

    def __init__(self, identity: str) -> None:
        super().__init__(f"identity {identity!r} is not enrolled")
        self.identity = identity


class UnknownTemplateError(LookupError):
    """The identity holds no template at that position."""

    def __init__(self, identity: str, position: int) -> None:
        super().__init__(f"identity {identity!r} has no template {position}")
        self.identity = identity
        self.position = position
