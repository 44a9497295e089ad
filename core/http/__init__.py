"""The core's HTTP adapters: Litestar lives here and nowhere else in ``core/``."""
