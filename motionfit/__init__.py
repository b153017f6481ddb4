"""motionfit: motion knowledge for RGB video models without optical flow at inference."""

__version__ = "0.1.0"
