"""Built-in architectures: the seed paper's CIFAR models, a small CNN and torchvision's models."""
import fp
from fp.discover import classes_in_package


@fp.hookimpl
def fp_register_architectures():
    from fp_builtins.architectures._torchvision import torchvision_architectures

    own = classes_in_package(__name__, lambda cls: callable(cls))
    return own + torchvision_architectures()
