"""Built-in datasets: one module per dataset."""
import fp
from fp.discover import classes_in_package


@fp.hookimpl
def fp_register_datasets():
    return classes_in_package(__name__, lambda cls: issubclass(cls, fp.Dataset))
