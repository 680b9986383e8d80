"""Built-in architectures: the seed paper's CIFAR models, a small CNN, torchvision's models and
timm's (a family whose models are created when first named, since importing timm is slow)."""
import fp
from fp.discover import classes_in_package


@fp.hookimpl
def fp_register_architectures():
    from fp_builtins.architectures._timm import TimmFamily
    from fp_builtins.architectures._torchvision import torchvision_architectures

    own = classes_in_package(__name__, lambda cls: callable(cls))
    return own + torchvision_architectures() + [TimmFamily]
