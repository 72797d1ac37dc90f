"""ganpaint: GAN dissection and semantic painting."""
__version__ = "0.1.0"
