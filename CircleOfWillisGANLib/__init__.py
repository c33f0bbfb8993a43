"""CircleOfWillisGAN: generative modelling of Circle of Willis TOF-MRA volumes with a 3D StyleGAN2.

The package never imports 3D Slicer; the Slicer module, the training package and the `cowgan`
command line are thin layers over it.
"""

__version__ = "0.1.0"

try:
    import torch as _torch  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "CircleOfWillisGANLib needs PyTorch, which is not installed: run `pip install torch` "
        "(in 3D Slicer: install the PyTorch extension, then the module offers to install torch)"
    ) from _exc
